package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
)

// ErrTxDone is returned by every method of a [Tx] used after the function
// given to [DB.Tx] returned, and by stores given such a Tx. It wraps
// [sql.ErrTxDone], as *sql.Tx's error does.
var ErrTxDone = fmt.Errorf("sqlite: unit of work already finished: %w", sql.ErrTxDone)

// ErrTxAborted is returned, wrapped with the error that caused it, by the call
// in a unit of work during which SQLite ended the transaction, by every later
// call in that unit of work, and by [DB.Tx]. Some errors make SQLite roll the
// whole transaction back by itself: a write interrupted because its context
// ended, INSERT OR ROLLBACK and RAISE(ROLLBACK), a full disk, I/O errors, no
// memory. Nothing of the unit of work is stored then; fn may return, and a new
// unit of work starts afresh. It is [eventstore.ErrTxAborted], so the event
// store's calls in the unit of work report it too.
var ErrTxAborted = eventstore.ErrTxAborted

// Tx is a unit of work: one write transaction on the DB's writer connection.
// Pass it to the stores of this DB (eventstore.InTx(tx)) and use it for your
// own tables; everything commits together or not at all.
//
// A Tx is valid only inside the function given to [DB.Tx], and only on that
// function's goroutine. Its methods match those of *sql.Tx, so code written
// against an interface of ExecContext, QueryContext and QueryRowContext takes
// it as it is. Do not run BEGIN, COMMIT, ROLLBACK or SAVEPOINT statements
// through it: [DB.Tx] does that.
//
// Once SQLite has ended the transaction under it (see [ErrTxAborted]), every
// method fails: what would run next would otherwise run outside any
// transaction and commit statement by statement.
type Tx struct {
	db           *DB
	done         bool
	cause        error    // why SQLite ended the transaction; nil while it is open
	appended     bool     // events were appended: notify subscribers after commit
	checkpointed bool     // checkpoints were written: notify their waiters after commit
	onCommit     []func() // run once the transaction has committed
}

var (
	_ recado.Tx              = (*Tx)(nil)
	_ recado.UnitOfWork[*Tx] = (*DB)(nil)
)

// OnCommit implements [recado.Tx]: f runs after the transaction commits, on
// the goroutine that called [DB.Tx], before DB.Tx returns, once the writer is
// free again (so f may append or start another unit of work). The functions
// run in the order they were registered. They do not run if the unit of work
// rolls back. OnCommit on a finished Tx does nothing.
func (tx *Tx) OnCommit(f func()) {
	if !tx.done {
		tx.onCommit = append(tx.onCommit, f)
	}
}

// ExecContext runs a statement that returns no rows inside the transaction.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (res sql.Result, err error) {
	err = tx.run(func() error {
		res, err = tx.db.conn.ExecContext(ctx, query, args...)
		return err
	})
	return res, err
}

// QueryContext runs a query inside the transaction. Close the rows before the
// function given to [DB.Tx] returns.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (rows *sql.Rows, err error) {
	err = tx.run(func() error {
		rows, err = tx.db.conn.QueryContext(ctx, query, args...)
		return err
	})
	return rows, err
}

// QueryRowContext runs a query that returns at most one row inside the
// transaction.
func (tx *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if err := tx.check(); err != nil {
		return errRow(err)
	}
	// An error that ends the transaction here surfaces in Scan, after this
	// returns: the next call's check finds it.
	return tx.db.conn.QueryRowContext(ctx, query, args...)
}

// run runs f, a call of the unit of work, if the transaction is still open,
// and then checks whether f's error ended it.
func (tx *Tx) run(f func() error) error {
	if err := tx.check(); err != nil {
		return err
	}
	err := f()
	if err == nil {
		return nil
	}
	if open, _ := tx.db.writerTx(false); open {
		return err
	}
	tx.cause = err
	return fmt.Errorf("%w: %w", ErrTxAborted, err)
}

// check returns the error of a call made on a finished unit of work, or on
// one whose transaction SQLite has ended, found by an earlier call or now:
// an error may also surface while the caller steps through rows, outside any
// of the Tx's methods.
func (tx *Tx) check() error {
	switch {
	case tx.done:
		return ErrTxDone
	case tx.cause == nil:
		open, last := tx.db.writerTx(true)
		if open {
			return nil
		}
		if tx.cause = last; last == nil {
			tx.cause = errors.New("the transaction was ended by a statement run through the Tx (COMMIT, ROLLBACK or END?)")
		}
	}
	return fmt.Errorf("%w, on an earlier error: %w", ErrTxAborted, tx.cause)
}

// writerTx reports whether the writer connection is inside a transaction, and
// the last error a statement run on it through database/sql returned since
// the last call with reset.
func (db *DB) writerTx(reset bool) (open bool, last error) {
	err := db.conn.Raw(func(dc any) error {
		c, err := asSQLConn(dc)
		if err != nil {
			return err
		}
		open, last = !c.raw.GetAutocommit(), c.lastErr
		if reset {
			c.lastErr = nil
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	return open, last
}

// Tx runs fn in one write transaction and commits it if fn returns nil;
// otherwise, or if fn panics, it rolls back and returns fn's error. If SQLite
// ended the transaction while fn ran, Tx returns [ErrTxAborted] even when fn
// returns nil, and nothing commits. Events appended with eventstore.InTx(tx)
// are seen by subscribers once it commits, and the functions given to
// [Tx.OnCommit] run then, before Tx returns. Tx implements
// [recado.UnitOfWork].
//
// The transaction holds the file's only writer while fn runs: every append and
// every other Tx waits for it. Keep fn short: never hold it open across a
// network call or a wait for user input. Inside fn, pass InTx(tx) to every
// store call that writes; a write of this DB without it waits for fn to end,
// which never comes.
func (db *DB) Tx(ctx context.Context, fn func(tx *Tx) error) error {
	tx, err := db.runTx(ctx, fn)
	if err != nil {
		return err
	}
	db.stats.txs.Add(1)
	for _, f := range tx.onCommit {
		f()
	}
	return nil
}

// runTx runs fn in a transaction that holds the writer, and commits it.
func (db *DB) runTx(ctx context.Context, fn func(tx *Tx) error) (_ *Tx, err error) {
	if err := db.lockWrite(ctx); err != nil {
		return nil, err
	}
	defer db.unlockWrite()
	if err := db.onWriter(func(w *writeStmts) error { return w.begin.Exec() }); err != nil {
		return nil, fmt.Errorf("sqlite: begin unit of work: %w", err)
	}
	tx := &Tx{db: db}
	committed := false
	defer func() {
		tx.done = true
		if !committed {
			_ = db.onWriter(func(w *writeStmts) error { db.rollback(w); return nil })
		}
	}()
	if err := fn(tx); err != nil {
		return nil, err
	}
	if err := tx.check(); err != nil { // fn carried on after SQLite ended the transaction
		return nil, err
	}
	// The commit is ours to finish now fn has succeeded: a caller that gives up
	// at this point should not leave the outcome half-known (the direct API
	// runs it on a context that is never cancelled).
	if err := db.onWriter(func(w *writeStmts) error { return w.commit.Exec() }); err != nil {
		return nil, fmt.Errorf("sqlite: commit unit of work: %w", err)
	}
	committed = true
	if tx.appended {
		db.signal.Notify()
	}
	if tx.checkpointed {
		db.checkpointSig.Notify()
	}
	return tx, nil
}

// ownTx returns unit as a live unit of work of this DB, or an error wrapping
// [driver.ErrForeignTx].
func (db *DB) ownTx(unit recado.Tx) (*Tx, error) {
	tx, ok := unit.(*Tx)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: %T is not a *sqlite.Tx", driver.ErrForeignTx, unit)
	case tx == nil || tx.db != db:
		return nil, fmt.Errorf("%w: a *sqlite.Tx of another DB", driver.ErrForeignTx)
	case tx.done:
		return nil, fmt.Errorf("%w: %w", driver.ErrForeignTx, ErrTxDone)
	}
	return tx, nil
}

// appendInTx appends r inside its unit of work, under a savepoint so that a
// failed append leaves nothing of itself behind in the transaction.
func (db *DB) appendInTx(ctx context.Context, r *driver.Request) error {
	tx, err := db.ownTx(r.Tx)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The append runs to its end once started (a few statements): interrupting
	// SQLite inside a write can roll back the caller's whole transaction.
	err = tx.run(func() error {
		return db.onWriter(func(w *writeStmts) error { return w.applyInTx(r) })
	})
	if err != nil {
		r.Reset()
		return err
	}
	if r.Outcome == driver.Written {
		tx.appended = true
	}
	return nil
}
