package sqlite

import (
	"context"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/lease/driver"
)

// leases is the lease store's driver: a row per lease in recado_leases.
type leases struct{ db *DB }

var _ driver.Driver = (*leases)(nil)

// Leases returns a lease store kept in the DB's file, with cfg's clock. Its
// Guard joins a unit of work given a [*Tx] of this DB: the Tx holds the
// file's only writer until it ends, so no Acquire, in this process or
// another, commits before the guarded unit of work does. Acquire, Renew and
// Release (and Guard without a unit of work) go through group commit.
func (db *DB) Leases(cfg lease.Config) *lease.Store { return lease.New(&leases{db: db}, cfg) }

// Apply implements [driver.Driver.Apply]: it reads the lease's row on the
// writer, inside the write transaction, decides and stores the outcome.
func (l *leases) Apply(ctx context.Context, r *driver.Request) error {
	err := l.db.storeWrite(ctx, r.Tx, func(w *writeStmts) error {
		cur, found, err := loadLease(&w.cache, r.Name)
		if err != nil || !r.Decide(cur, found) {
			return err
		}
		n := &r.Next
		return w.cache.exec(`INSERT INTO recado_leases (name, holder, token, acquired, expires) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token,
	acquired = excluded.acquired, expires = excluded.expires`,
			n.Name, n.Holder, n.Token, micros(n.Acquired), micros(n.Expires))
	})
	return storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// Get implements [driver.Driver.Get], on a read connection.
func (l *leases) Get(ctx context.Context, name string) (rec driver.Record, found bool, err error) {
	err = l.db.readStore(ctx, func(rc *readConn) (err error) {
		rec, found, err = loadLease(&rc.cache, name)
		return err
	})
	return rec, found, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// loadLease reads the row of lease name on c's connection.
func loadLease(c *stmtCache, name string) (rec driver.Record, found bool, err error) {
	found, err = c.queryRow("SELECT holder, token, acquired, expires FROM recado_leases WHERE name = ?",
		func(st *sqlite3.Stmt) error {
			rec = driver.Record{Name: name, Holder: st.ColumnText(0), Token: uint64(st.ColumnInt64(1)),
				Acquired: columnTime(st, 2), Expires: columnTime(st, 3)}
			return nil
		}, name)
	return rec, found, err
}
