package postgres

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/lease/driver"
)

// leaseV1 creates the lease store: a row per lease, locked by every change
// of it and by every Guard until the guarded unit of work ends.
const leaseV1 = `
CREATE TABLE %[1]s.leases (
	name     text COLLATE "C" PRIMARY KEY,
	holder   text        NOT NULL,
	token    bigint      NOT NULL,
	acquired timestamptz NOT NULL,
	expires  timestamptz NOT NULL
);
`

// leases is the lease store's driver.
type leases struct {
	db                                          *DB
	get, acquire, change, guard, insert, update string
}

var _ driver.Driver = (*leases)(nil)

// Leases returns a lease store of the DB, with cfg's clock. Its Guard joins
// a unit of work given a [*Tx] of this DB: it locks the lease's row until
// the unit ends, in a mode that holds off an Acquire (so no new holder's
// Acquire commits before the guarded writes do) and nothing else: Guards of
// one lease in several units, and the holder's Renew and Release, do not wait
// for it. Acquire, Renew and Release run in short transactions of their own.
func (db *DB) Leases(cfg lease.Config) *lease.Store { return lease.New(newLeases(db), cfg) }

func newLeases(db *DB) *leases {
	r := strings.NewReplacer("$S", db.schema)
	get := r.Replace(`SELECT holder, token, acquired, expires FROM $S.leases WHERE name = $1`)
	// The row lock modes: an Acquire's FOR UPDATE conflicts with every
	// other; a Renew's or Release's FOR NO KEY UPDATE (as their UPDATE of
	// columns other than the key takes) with each other and with an
	// Acquire's; a Guard's FOR KEY SHARE only with an Acquire's.
	return &leases{db: db, get: get, acquire: get + " FOR UPDATE", change: get + " FOR NO KEY UPDATE", guard: get + " FOR KEY SHARE",
		insert: r.Replace(`INSERT INTO $S.leases (name, holder, token, acquired, expires) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO NOTHING`),
		update: r.Replace(`UPDATE $S.leases SET holder = $2, token = $3, acquired = $4, expires = $5 WHERE name = $1`),
	}
}

// Apply implements [driver.Driver.Apply]. It locks the lease's row (see
// newLeases for the modes) and decides on it. A lease with no row yet is
// inserted; of concurrent first Acquires the insert of one wins, and the
// others decide again on the row it stored.
func (l *leases) Apply(ctx context.Context, r *driver.Request) error {
	s, err := l.db.session(r.Tx, driver.ErrClosed, driver.ErrForeignTx)
	if err != nil {
		return err
	}
	defer s.close()
	return s.fail(l.apply(ctx, s, r), driver.ErrClosed)
}

func (l *leases) apply(ctx context.Context, s *session, r *driver.Request) error {
	lock := l.change
	switch r.Op {
	case driver.Acquire:
		lock = l.acquire
	case driver.Guard:
		lock = l.guard
	}
	for {
		rec := driver.Record{Name: r.Name}
		var found bool
		b := s.batch()
		b.Queue(lock, r.Name).QueryRow(func(row pgx.Row) error {
			var err error
			found, err = scanLease(row, &rec)
			return err
		})
		if err := s.send(ctx, b); err != nil {
			return err
		}
		if !r.Decide(rec, found) {
			return s.commit(ctx, nil)
		}
		n := &r.Next
		args := []any{n.Name, n.Holder, int64(n.Token), n.Acquired, n.Expires}
		b = &pgx.Batch{}
		if found {
			b.Queue(l.update, args...)
			return s.commit(ctx, b)
		}
		inserted := false
		b.Queue(l.insert, args...).Exec(func(tag pgconn.CommandTag) error {
			inserted = tag.RowsAffected() == 1
			return nil
		})
		if err := s.commit(ctx, b); err != nil || inserted {
			return err
		}
		// Another transaction inserted the lease's row since: decide again
		// on what it stored.
	}
}

// scanLease scans a lease's row into rec, and reports whether there was one.
func scanLease(row pgx.Row, rec *driver.Record) (bool, error) {
	var token int64
	err := row.Scan(&rec.Holder, &token, &rec.Acquired, &rec.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rec.Token, rec.Acquired, rec.Expires = uint64(token), utc(rec.Acquired), utc(rec.Expires)
	return true, nil
}

// Get implements [driver.Driver.Get].
func (l *leases) Get(ctx context.Context, name string) (rec driver.Record, found bool, err error) {
	rec.Name = name
	err = l.db.read(ctx, driver.ErrClosed, func(q querier) error {
		found, err = scanLease(q.QueryRow(ctx, l.get, name), &rec)
		return err
	})
	return rec, found, err
}
