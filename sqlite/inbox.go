package sqlite

import (
	"context"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/inbox/driver"
)

// inboxEntries is the inbox's driver: a row per consumer and message in
// recado_inbox.
type inboxEntries struct{ db *DB }

var _ driver.Driver = (*inboxEntries)(nil)

// Inbox returns an inbox kept in the DB's file, with cfg's clock and
// retention. Its Claim joins a unit of work given a [*Tx] of this DB: the
// claim commits with the unit's effect or not at all, and a concurrent claim
// of the same message waits for the unit to end (the Tx holds the file's only
// writer). A Claim without a unit of work goes through group commit.
func (db *DB) Inbox(cfg inbox.Config) *inbox.Store { return inbox.New(&inboxEntries{db: db}, cfg) }

// Claim implements [driver.Driver.Claim]: one insert, which stores nothing
// if the entry is there.
func (b *inboxEntries) Claim(ctx context.Context, tx recado.Tx, e driver.Entry) (claimed bool, err error) {
	err = b.db.storeWrite(ctx, tx, func(w *writeStmts) error {
		err := w.cache.exec("INSERT INTO recado_inbox (consumer, message_id, time) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
			e.Consumer, e.MessageID, micros(e.Time))
		claimed = err == nil && w.conn.Changes() == 1 // set on every run: the group may run again
		return err
	})
	if err != nil {
		return false, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return claimed, nil
}

// Get implements [driver.Driver.Get], on a read connection.
func (b *inboxEntries) Get(ctx context.Context, consumer, messageID string) (e driver.Entry, found bool, err error) {
	err = b.db.readStore(ctx, func(rc *readConn) (err error) {
		found, err = rc.cache.queryRow("SELECT time FROM recado_inbox WHERE consumer = ? AND message_id = ?",
			func(st *sqlite3.Stmt) error {
				e = driver.Entry{Consumer: consumer, MessageID: messageID, Time: columnTime(st, 0)}
				return nil
			}, consumer, messageID)
		return err
	})
	return e, found, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// Cleanup implements [driver.Driver.Cleanup], in a transaction of its own.
func (b *inboxEntries) Cleanup(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = b.db.writeAlone(ctx, func(w *writeStmts) error {
		err := w.cache.exec(`DELETE FROM recado_inbox WHERE (consumer, message_id) IN
	(SELECT consumer, message_id FROM recado_inbox WHERE time < ? LIMIT ?)`, micros(before), limit)
		n = int(w.conn.Changes())
		return err
	})
	if err != nil {
		return 0, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return n, nil
}
