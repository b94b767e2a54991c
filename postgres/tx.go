package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Tx is a unit of work: appends made with [eventstore.InTx](tx) and the
// caller's own statements on [Tx.Pgx] commit together, or not at all.
//
// While it is open the transaction holds back every reader of the global log
// (see the package documentation), so keep it short: no network calls, no
// waiting on people.
type Tx struct {
	db       *DB
	tx       pgx.Tx
	appended bool
	held     []string    // streams whose rows it has locked
	done     atomic.Bool // DB.Tx has returned
}

// hold records that tx holds stream's row, so that group commits park appends
// to it instead of waiting for the row until tx ends.
func (tx *Tx) hold(stream string) {
	if !slices.Contains(tx.held, stream) {
		tx.held = append(tx.held, stream)
		tx.db.events.w.park.hold(stream)
	}
}

// Pgx returns the PostgreSQL transaction, for the caller's own reads and writes
// (a read model, say). Do not commit or roll it back: [DB.Tx] does.
func (tx *Tx) Pgx() pgx.Tx { return tx.tx }

// Tx runs fn in one transaction and commits it if fn returns nil; otherwise
// (or if fn panics) it rolls back and returns fn's error.
func (db *DB) Tx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	if db.closed.Load() {
		return db.errClosed("Tx")
	}
	ptx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("postgres: begin unit of work: %w", err)
	}
	tx := &Tx{db: db, tx: ptx}
	committed := false
	defer func() {
		if !committed {
			_ = ptx.Rollback(context.Background())
		}
		tx.done.Store(true)
		db.events.w.park.release(tx.held...) // the appends parked behind it may go
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := ptx.Commit(ctx); err != nil {
		if errors.Is(err, pgx.ErrTxClosed) {
			return fmt.Errorf("postgres: commit unit of work: the transaction was ended inside fn: %w", err)
		}
		return fmt.Errorf("postgres: commit unit of work: %w", err)
	}
	committed = true
	if tx.appended {
		db.events.Notify()
	}
	return nil
}

// Exec runs sql in the unit of work.
func (tx *Tx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return tx.tx.Exec(ctx, sql, args...)
}

// Query runs sql in the unit of work.
func (tx *Tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return tx.tx.Query(ctx, sql, args...)
}

// QueryRow runs sql in the unit of work.
func (tx *Tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return tx.tx.QueryRow(ctx, sql, args...)
}
