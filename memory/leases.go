package memory

import (
	"context"

	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/lease/driver"
)

// leases is the lease store's driver: a record per lease name.
type leases struct {
	db   *DB
	recs *table[string, driver.Record]
}

var _ driver.Driver = (*leases)(nil)

// Leases returns a lease store of the DB, with cfg's clock. Its Guard joins
// a unit of work given a [*Tx] of this DB: the unit holds the DB's writer,
// so no Acquire commits until it ends.
func (db *DB) Leases(cfg lease.Config) *lease.Store { return lease.New(db.leases, cfg) }

// Apply implements [driver.Driver.Apply].
func (l *leases) Apply(ctx context.Context, r *driver.Request) error {
	return l.db.writeTo(ctx, r.Tx, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		cur, found := l.recs.get(tx, r.Name)
		if r.Decide(cur, found) {
			l.recs.put(tx, r.Name, r.Next)
		}
		return nil
	})
}

// Get implements [driver.Driver.Get].
func (l *leases) Get(ctx context.Context, name string) (rec driver.Record, found bool, err error) {
	err = l.db.read(ctx, driver.ErrClosed, func() { rec, found = l.recs.get(nil, name) })
	return rec, found, err
}
