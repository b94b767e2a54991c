package postgres

import (
	"context"
	"fmt"
	"time"
)

// Horizon describes how far readers of the global log are held back.
type Horizon struct {
	// Age is how long the oldest transaction still running in the database
	// cluster with a transaction id (one that has written something) has been
	// open: readers see no event committed after it took its id until it ends.
	// It is nonzero while such a transaction is open even if HeldBack is zero
	// (nothing was committed since, as with a session idle in a transaction):
	// the next commit will be held back. Zero only when no transaction with an
	// id is open. Alert when it grows past what your subscribers can tolerate.
	Age time.Duration
	// PID is the backend process id of that transaction's session, zero for a
	// prepared (two-phase) transaction or when none holds readers back.
	PID uint32
	// HeldBack is how many committed events readers cannot see yet because of
	// it, now: zero until something is committed after it.
	HeldBack int64
}

// Horizon reports how far readers of the global log are held back by open
// transactions. Seeing other users' sessions needs the pg_read_all_stats role
// (or pg_monitor); without it Age covers only the current user's sessions.
func (db *DB) Horizon(ctx context.Context) (Horizon, error) {
	if db.closed.Load() {
		return Horizon{}, db.errClosed("horizon")
	}
	var h Horizon
	var secs float64
	err := db.pool.QueryRow(ctx, db.q.horizonInfo).Scan(&secs, &h.PID, &h.HeldBack)
	if err != nil {
		return Horizon{}, fmt.Errorf("postgres: horizon: %w", err)
	}
	h.Age = time.Duration(secs * float64(time.Second))
	return h, nil
}
