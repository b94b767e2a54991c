package sqlite

import (
	"context"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/idempotency/driver"
)

// idempotencyKeys is the idempotency store's driver: a row per scope and key
// in recado_idempotency_keys.
type idempotencyKeys struct{ db *DB }

var _ driver.Driver = (*idempotencyKeys)(nil)

// IdempotencyKeys returns an idempotency key store kept in the DB's file,
// with cfg's clock, limits and retention. Its calls join a unit of work given
// a [*Tx] of this DB; without one, each claim, completion and release goes
// through group commit, so concurrent requests share commits.
func (db *DB) IdempotencyKeys(cfg idempotency.Config) *idempotency.Store {
	return idempotency.New(&idempotencyKeys{db: db}, cfg)
}

// Apply implements [driver.Driver.Apply]: on the writer, inside the write
// transaction, it reads the key's row, decides and stores r.Next: an insert
// for a new key, an update by rowid of the columns that change otherwise.
func (s *idempotencyKeys) Apply(ctx context.Context, r *driver.Request) error {
	err := s.db.storeWrite(ctx, r.Tx, func(w *writeStmts) error {
		// Most claims are of a new key: decide the claim as one, and insert
		// it unless the unique index says the key is stored; only then read
		// the key's row and decide on it. (One statement instead of two on
		// the common path.)
		if r.Op == driver.Claim && r.Decide(driver.Record{}, false) {
			inserted, err := insertKey(&w.cache, &r.Next, true)
			if err != nil || inserted {
				return err
			}
		}
		cur, row, found, err := loadKey(&w.cache, r.Scope, r.Key)
		if err != nil || !r.Decide(cur, found) {
			return err
		}
		n := &r.Next
		switch {
		case r.Delete:
			return w.cache.exec("DELETE FROM recado_idempotency_keys WHERE rowid = ?", row)
		case !found:
			_, err := insertKey(&w.cache, n, false)
			return err
		case n.Created.Equal(cur.Created):
			// created is indexed: an UPDATE that sets it rewrites its index
			// entry, which a completion, a release or a take-over keeps.
			return w.cache.exec(`UPDATE recado_idempotency_keys SET fingerprint = ?, state = ?, token = ?,
	response = ?, locked = ? WHERE rowid = ?`,
				nonNil(n.Fingerprint), int64(n.State), n.Token, n.Response, micros(n.Locked), row)
		}
		return w.cache.exec(`UPDATE recado_idempotency_keys SET fingerprint = ?, state = ?, token = ?,
	response = ?, locked = ?, created = ? WHERE rowid = ?`,
			nonNil(n.Fingerprint), int64(n.State), n.Token, n.Response, micros(n.Locked), micros(n.Created), row)
	})
	return storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// insertKey inserts rec's row and reports whether it did: with ifNew, it
// inserts nothing if the key is stored.
func insertKey(c *stmtCache, rec *driver.Record, ifNew bool) (inserted bool, err error) {
	q := `INSERT INTO recado_idempotency_keys
	(scope, key, fingerprint, state, token, response, created, locked) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	if ifNew {
		q += " ON CONFLICT DO NOTHING"
	}
	err = c.exec(q, rec.Scope, rec.Key, nonNil(rec.Fingerprint), int64(rec.State), rec.Token, rec.Response, micros(rec.Created), micros(rec.Locked))
	return err == nil && c.conn.Changes() == 1, err
}

// loadKey reads the row of scope and key on c's connection, and its rowid.
func loadKey(c *stmtCache, scope, key string) (rec driver.Record, row int64, found bool, err error) {
	found, err = c.queryRow(`SELECT rowid, fingerprint, state, token, response, created, locked
FROM recado_idempotency_keys WHERE scope = ? AND key = ?`, func(st *sqlite3.Stmt) error {
		row = st.ColumnInt64(0)
		rec = driver.Record{Scope: scope, Key: key, Fingerprint: columnBytes(st, 1), State: driver.State(st.ColumnInt64(2)),
			Token: uint64(st.ColumnInt64(3)), Response: columnBytes(st, 4), Created: columnTime(st, 5), Locked: columnTime(st, 6)}
		return nil
	}, scope, key)
	return rec, row, found, err
}

// Cleanup implements [driver.Driver.Cleanup], in a transaction of its own.
func (s *idempotencyKeys) Cleanup(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = s.db.writeAlone(ctx, func(w *writeStmts) error {
		err := w.cache.exec(`DELETE FROM recado_idempotency_keys WHERE rowid IN
	(SELECT rowid FROM recado_idempotency_keys WHERE created < ? LIMIT ?)`, micros(before), limit)
		n = int(w.conn.Changes())
		return err
	})
	if err != nil {
		return 0, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return n, nil
}

// nonNil returns b, or an empty slice for nil: stored as an empty blob, not
// NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
