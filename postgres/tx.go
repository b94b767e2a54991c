package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// Tx is a unit of work: appends and deletes made with [eventstore.InTx](tx),
// the calls of the DB's other stores given tx (a dead letter, an idempotency
// key, an inbox claim, a lease's Guard) and the caller's own statements on
// [Tx.Pgx] commit together, or not at all.
// It is a [recado.Tx], valid only inside the function given to [DB.Tx] and on
// its goroutine.
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
	pid      uint32      // its session's backend
	xid      int64       // its transaction id, once an append has taken one
	onCommit []func()
}

var (
	_ recado.Tx              = (*Tx)(nil)
	_ recado.UnitOfWork[*Tx] = (*DB)(nil)
)

// OnCommit registers f to run after the unit of work commits, on the
// goroutine that called [DB.Tx], before DB.Tx returns; in the order
// registered. f does not run if the unit of work rolls back.
func (tx *Tx) OnCommit(f func()) { tx.onCommit = append(tx.onCommit, f) }

// setXID records tx's transaction id, known after its first append.
func (tx *Tx) setXID(xid int64) {
	if tx.xid == 0 && xid != 0 {
		tx.xid = xid
		tx.db.units.add(0, xid)
	}
}

// openUnits are the units of work of a DB still running: their sessions and
// the transaction ids known, so that a read does not wait for the horizon
// one of them holds (it may be the reader's own).
type openUnits struct {
	mu   sync.Mutex
	pids map[uint32]int
	xids map[int64]int
	n    atomic.Int32 // open units: zero spares the lookup
}

func (u *openUnits) add(pid uint32, xid int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pids == nil {
		u.pids, u.xids = map[uint32]int{}, map[int64]int{}
	}
	if pid != 0 {
		u.pids[pid]++
		u.n.Add(1)
	}
	if xid != 0 {
		u.xids[xid]++
	}
}

func (u *openUnits) remove(pid uint32, xid int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pids[pid]--; u.pids[pid] <= 0 {
		delete(u.pids, pid)
	}
	if xid != 0 {
		if u.xids[xid]--; u.xids[xid] <= 0 {
			delete(u.xids, xid)
		}
	}
	u.n.Add(-1)
}

// holds reports whether the transaction with id xid, or the session pid, is
// an open unit of work's. (Behind a pooler the session's pid is not the
// server's; the id is known once the unit of work has appended.)
func (u *openUnits) holds(xid int64, pid uint32) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.xids[xid] > 0 || pid != 0 && u.pids[pid] > 0
}

// hold records that tx holds stream's row, so that group commits park appends
// to it instead of waiting for the row until tx ends.
func (tx *Tx) hold(stream string) {
	if !slices.Contains(tx.held, stream) {
		tx.held = append(tx.held, stream)
		tx.db.events.w.park.hold(stream)
	}
}

// unit returns the unit of work t if it is one of db's, still running, and
// otherwise an error wrapping [driver.ErrForeignTx].
func (db *DB) unit(t recado.Tx) (*Tx, error) {
	tx, ok := t.(*Tx)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: given a %T, want a *postgres.Tx", driver.ErrForeignTx, t)
	case tx == nil:
		return nil, fmt.Errorf("%w: given a nil *postgres.Tx", driver.ErrForeignTx)
	case tx.db != db:
		return nil, fmt.Errorf("%w: given a unit of work of another postgres DB", driver.ErrForeignTx)
	case tx.done.Load():
		return nil, fmt.Errorf("%w: given a unit of work that has ended", driver.ErrForeignTx)
	}
	return tx, nil
}

// Pgx returns the PostgreSQL transaction, for the caller's own reads and writes
// (a read model, say). Do not commit or roll it back: [DB.Tx] does.
func (tx *Tx) Pgx() pgx.Tx { return tx.tx }

// Tx runs fn in one transaction (READ COMMITTED) and commits it if fn returns
// nil; otherwise (or if fn panics) it rolls back and returns fn's error. After
// a commit it runs the functions given to [Tx.OnCommit], then returns.
//
// An append in fn that meets a conflict or a duplicate reports it without
// aborting the transaction; an error PostgreSQL raises itself (a value it
// refuses, the role's lock_timeout) ends it. While tx holds a stream's row,
// appends to that stream from outside it wait until it ends, and appends to
// other streams go on. A ReadAll in fn does not wait for the horizon tx holds.
func (db *DB) Tx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	if db.closed.Load() {
		return db.errClosed("Tx")
	}
	ptx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("postgres: begin unit of work: %w", err)
	}
	tx := &Tx{db: db, tx: ptx, pid: ptx.Conn().PgConn().PID()}
	db.units.add(tx.pid, 0)
	committed := false
	defer func() {
		if !committed {
			_ = ptx.Rollback(context.Background())
			tx.end()
		}
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
	tx.end()
	if tx.appended {
		db.events.Notify()
	}
	// After end: f may append to a stream tx held.
	for _, f := range tx.onCommit {
		f()
	}
	return nil
}

// end marks tx ended, once it has committed or rolled back.
func (tx *Tx) end() {
	db := tx.db
	tx.done.Store(true)
	db.units.remove(tx.pid, tx.xid)
	db.events.w.park.release(tx.held...) // the appends parked behind it may go
	if db.events.heldByUnit.Swap(false) {
		db.events.Notify() // a read stopped short of events it held back
	}
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
