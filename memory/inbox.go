package memory

import (
	"context"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/inbox/driver"
)

// inboxEntries is the inbox's driver: an entry per consumer and message.
type inboxEntries struct {
	db      *DB
	entries *table[[2]string, driver.Entry]
}

var _ driver.Driver = (*inboxEntries)(nil)

// Inbox returns an inbox of the DB, with cfg's clock and retention. Its
// Claim joins a unit of work given a [*Tx] of this DB.
func (db *DB) Inbox(cfg inbox.Config) *inbox.Store { return inbox.New(db.inbox, cfg) }

// Claim implements [driver.Driver.Claim].
func (b *inboxEntries) Claim(ctx context.Context, rtx recado.Tx, e driver.Entry) (claimed bool, err error) {
	err = b.db.writeTo(ctx, rtx, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		k := [2]string{e.Consumer, e.MessageID}
		if _, ok := b.entries.get(tx, k); ok {
			return nil
		}
		b.entries.put(tx, k, e)
		claimed = true
		return nil
	})
	return claimed && err == nil, err
}

// Get implements [driver.Driver.Get].
func (b *inboxEntries) Get(ctx context.Context, consumer, messageID string) (e driver.Entry, found bool, err error) {
	err = b.db.read(ctx, driver.ErrClosed, func() { e, found = b.entries.get(nil, [2]string{consumer, messageID}) })
	return e, found, err
}

// Cleanup implements [driver.Driver.Cleanup].
func (b *inboxEntries) Cleanup(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = b.db.writeTo(ctx, nil, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		for k, e := range b.entries.now {
			if n == limit {
				break
			}
			if e.Time.Before(before) {
				b.entries.del(tx, k)
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
