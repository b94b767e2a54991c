package postgres

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/inbox/driver"
)

// inboxV1 creates the inbox: a row per consumer and message handled, and the
// claim times' index that cleanup deletes the oldest rows by.
const inboxV1 = `
CREATE TABLE %[1]s.inbox (
	consumer   text COLLATE "C" NOT NULL,
	message_id text COLLATE "C" NOT NULL,
	time       timestamptz NOT NULL,
	PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_time ON %[1]s.inbox (time);
`

// inboxEntries is the inbox's driver.
type inboxEntries struct {
	db                  *DB
	claim, get, cleanup string
}

var _ driver.Driver = (*inboxEntries)(nil)

// Inbox returns an inbox of the DB, with cfg's clock and retention. Its
// Claim joins a unit of work given a [*Tx] of this DB: the claim's row is
// inserted in the unit's transaction, so it commits with the unit's effect
// or not at all, and a concurrent claim of the same message waits for the
// unit to end.
func (db *DB) Inbox(cfg inbox.Config) *inbox.Store { return inbox.New(newInbox(db), cfg) }

func newInbox(db *DB) *inboxEntries {
	r := strings.NewReplacer("$S", db.schema)
	return &inboxEntries{db: db,
		// PostgreSQL's unique index decides: of concurrent inserts of one
		// row, the others wait for the first transaction to end, and then do
		// nothing (it committed) or insert (it rolled back).
		claim: r.Replace(`INSERT INTO $S.inbox (consumer, message_id, time) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`),
		get:   r.Replace(`SELECT time FROM $S.inbox WHERE consumer = $1 AND message_id = $2`),
		// The oldest entries first, by the index, skipping rows another
		// transaction holds.
		cleanup: r.Replace(`DELETE FROM $S.inbox WHERE (consumer, message_id) IN (
	SELECT consumer, message_id FROM $S.inbox WHERE time < $1 ORDER BY time LIMIT $2 FOR UPDATE SKIP LOCKED)`),
	}
}

// Claim implements [driver.Driver.Claim]: one insert, in tx or in a
// transaction of its own (one round trip).
func (b *inboxEntries) Claim(ctx context.Context, tx recado.Tx, e driver.Entry) (claimed bool, err error) {
	s, err := b.db.session(tx, driver.ErrClosed, driver.ErrForeignTx)
	if err != nil {
		return false, err
	}
	defer s.close()
	batch := s.batch()
	batch.Queue(b.claim, e.Consumer, e.MessageID, e.Time).Exec(func(tag pgconn.CommandTag) error {
		claimed = tag.RowsAffected() == 1
		return nil
	})
	if err := s.commit(ctx, batch); err != nil {
		return false, s.fail(err, driver.ErrClosed)
	}
	return claimed, nil
}

// Get implements [driver.Driver.Get].
func (b *inboxEntries) Get(ctx context.Context, consumer, messageID string) (e driver.Entry, found bool, err error) {
	err = b.db.read(ctx, driver.ErrClosed, func(q querier) error {
		var t time.Time
		err := q.QueryRow(ctx, b.get, consumer, messageID).Scan(&t)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err == nil {
			e, found = driver.Entry{Consumer: consumer, MessageID: messageID, Time: utc(t)}, true
		}
		return err
	})
	return e, found, err
}

// Cleanup implements [driver.Driver.Cleanup]: one DELETE of at most limit
// rows, in a transaction of its own. Rows another transaction holds are left
// for a later cleanup.
func (b *inboxEntries) Cleanup(ctx context.Context, before time.Time, limit int) (int, error) {
	return b.db.deleteBatch(ctx, driver.ErrClosed, b.cleanup, before, limit)
}
