package memory

import (
	"bytes"
	"context"
	"time"

	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/idempotency/driver"
)

// idempotencyKeys is the idempotency store's driver: a record per scope and
// key.
type idempotencyKeys struct {
	db   *DB
	recs *table[[2]string, driver.Record]
}

var _ driver.Driver = (*idempotencyKeys)(nil)

// IdempotencyKeys returns an idempotency key store of the DB, with cfg's
// clock, limits and retention. Its calls join a unit of work given a [*Tx]
// of this DB.
func (db *DB) IdempotencyKeys(cfg idempotency.Config) *idempotency.Store {
	return idempotency.New(db.idempotency, cfg)
}

// Apply implements [driver.Driver.Apply].
func (s *idempotencyKeys) Apply(ctx context.Context, r *driver.Request) error {
	return s.db.writeTo(ctx, r.Tx, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		k := [2]string{r.Scope, r.Key}
		cur, found := s.recs.get(tx, k)
		// The request takes the record's bytes out to the caller: give it
		// its own.
		cur.Fingerprint, cur.Response = bytes.Clone(cur.Fingerprint), bytes.Clone(cur.Response)
		if !r.Decide(cur, found) {
			return nil
		}
		if r.Delete {
			s.recs.del(tx, k)
		} else {
			s.recs.put(tx, k, r.Next)
		}
		return nil
	})
}

// Cleanup implements [driver.Driver.Cleanup].
func (s *idempotencyKeys) Cleanup(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = s.db.writeTo(ctx, nil, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		for k, rec := range s.recs.now {
			if n == limit {
				break
			}
			if rec.Created.Before(before) {
				s.recs.del(tx, k)
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
