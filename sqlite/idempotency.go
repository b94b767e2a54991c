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

// Apply implements [driver.Driver.Apply]: it reads the key's row on the
// writer, inside the write transaction, decides and stores the outcome.
func (s *idempotencyKeys) Apply(ctx context.Context, r *driver.Request) error {
	err := s.db.storeWrite(ctx, r.Tx, func(w *writeStmts) error {
		cur, found, err := loadKey(&w.cache, r.Scope, r.Key)
		if err != nil || !r.Decide(cur, found) {
			return err
		}
		if r.Delete {
			return w.cache.exec("DELETE FROM recado_idempotency_keys WHERE scope = ? AND key = ?", r.Scope, r.Key)
		}
		n := &r.Next
		return w.cache.exec(`INSERT INTO recado_idempotency_keys
	(scope, key, fingerprint, state, token, response, created, locked) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, state = excluded.state,
	token = excluded.token, response = excluded.response, created = excluded.created, locked = excluded.locked`,
			n.Scope, n.Key, nonNil(n.Fingerprint), int64(n.State), n.Token, n.Response, micros(n.Created), micros(n.Locked))
	})
	return storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// loadKey reads the row of scope and key on c's connection.
func loadKey(c *stmtCache, scope, key string) (rec driver.Record, found bool, err error) {
	found, err = c.queryRow(`SELECT fingerprint, state, token, response, created, locked
FROM recado_idempotency_keys WHERE scope = ? AND key = ?`, func(st *sqlite3.Stmt) error {
		rec = driver.Record{Scope: scope, Key: key, Fingerprint: columnBytes(st, 0), State: driver.State(st.ColumnInt64(1)),
			Token: uint64(st.ColumnInt64(2)), Response: columnBytes(st, 3), Created: columnTime(st, 4), Locked: columnTime(st, 5)}
		return nil
	}, scope, key)
	return rec, found, err
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
