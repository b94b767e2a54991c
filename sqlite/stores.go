package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// The recoverability stores (dead letters, idempotency keys, inbox, leases)
// share the DB's writer and its unit of work with the event store. Each of
// their writes runs on the writer connection in one of three ways:
//
//   - in the caller's unit of work ([DB.writeInTx]), where the Tx holds the
//     writer until it ends: what the write read stays as it read it, and
//     every other write of the DB, in this process or another, waits;
//   - outside one, in the next group commit ([DB.groupWrite]), beside the
//     appends and the other stores' writes that are waiting: one commit (one
//     sync) serves them all. The write must decide afresh each time it runs,
//     since a group runs again when one of its writes fails;
//   - outside one, in a transaction of its own ([DB.writeAlone]), for the
//     writes that must run once (the dead-letter queue's, whose function the
//     front gives) and the batched cleanups.
//
// Their reads outside a unit of work run on the read connections and see
// what has committed. Their statements are prepared on each connection the
// first time they are used (stmtCache).

// storeWrite runs op in the unit of work rtx when it is not nil, else in the
// next group commit.
func (db *DB) storeWrite(ctx context.Context, rtx recado.Tx, op func(w *writeStmts) error) error {
	if db.isClosing() {
		return driver.ErrClosed
	}
	if rtx != nil {
		return db.writeInTx(ctx, rtx, op)
	}
	return db.groupWrite(ctx, op)
}

// writeInTx runs op in the unit of work rtx, which must be a live Tx of this
// DB. An error of op that ended the transaction (SQLite rolled it back) is
// [ErrTxAborted], as for every call of the Tx.
func (db *DB) writeInTx(ctx context.Context, rtx recado.Tx, op func(w *writeStmts) error) error {
	tx, err := db.ownTx(rtx)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Once started, op runs to its end (a few statements on the direct API,
	// which watch no context): interrupting SQLite inside a write can roll
	// back the caller's whole transaction.
	return tx.run(func() error { return db.onWriter(op) })
}

// writeAlone runs op in a write transaction of its own, committed if op
// returns nil.
func (db *DB) writeAlone(ctx context.Context, op func(w *writeStmts) error) error {
	if db.isClosing() {
		return driver.ErrClosed
	}
	_, err := db.runTx(ctx, func(tx *Tx) error {
		return tx.run(func() error { return db.onWriter(op) })
	})
	return err
}

// readStore runs f on a read connection, which sees what has committed.
func (db *DB) readStore(ctx context.Context, f func(rc *readConn) error) error {
	if db.isClosing() {
		return driver.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rc, err := db.reads.get(db.closing)
	if err != nil {
		return err
	}
	err = f(rc)
	// A statement that failed may not have been reset, which would leave a
	// read transaction open: such a connection is closed, not kept.
	db.reads.put(rc, err != nil)
	if err != nil {
		return db.readErr(ctx, err)
	}
	return nil
}

// storeErr maps the DB's errors that wrap the event store's driver errors
// ErrClosed and ErrForeignTx to those of another store's driver contract.
func storeErr(err, closed, foreign error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, driver.ErrClosed):
		return closed
	case errors.Is(err, driver.ErrForeignTx):
		detail := strings.TrimPrefix(err.Error(), driver.ErrForeignTx.Error()+": ")
		return fmt.Errorf("%w: %s", foreign, detail)
	}
	return err
}

// inSavepoint runs f under a savepoint, so that an f that fails leaves
// nothing of itself in the transaction (unless SQLite ended the whole
// transaction, which the caller learns from the error).
func (s *writeStmts) inSavepoint(f func() error) error {
	if err := s.savepoint.Exec(); err != nil {
		return err
	}
	err := f()
	if err != nil {
		if !s.inTx() { // SQLite rolled everything back: no savepoint left
			return err
		}
		if rbErr := s.rollbackTo.Exec(); rbErr != nil {
			err = errors.Join(err, fmt.Errorf("roll back to the savepoint: %w", rbErr))
		}
	}
	if relErr := s.release.Exec(); relErr != nil && err == nil {
		err = relErr
	}
	return err
}

// stmtCache prepares statements on one connection the first time they are
// used, and keeps them for the connection's life. The user of a statement
// resets it before the next use of the connection (exec, queryRows).
type stmtCache struct {
	conn *sqlite3.Conn
	m    map[string]*sqlite3.Stmt
}

// get returns the prepared statement of query.
func (c *stmtCache) get(query string) (*sqlite3.Stmt, error) {
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	var st *sqlite3.Stmt
	if err := prepare(c.conn, []stmtDef{{&st, query}}); err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = make(map[string]*sqlite3.Stmt)
	}
	c.m[query] = st
	return st, nil
}

func (c *stmtCache) close() error {
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}

// exec runs query with args to its end.
func (c *stmtCache) exec(query string, args ...any) error {
	st, err := c.get(query)
	if err != nil {
		return err
	}
	if err := bindAll(st, args); err != nil {
		return errors.Join(err, st.ClearBindings())
	}
	return st.Exec()
}

// queryRows runs query with args and calls row for each row, until row
// returns false or an error. The statement is reset before queryRows
// returns.
func (c *stmtCache) queryRows(query string, row func(st *sqlite3.Stmt) (more bool, err error), args ...any) error {
	st, err := c.get(query)
	if err != nil {
		return err
	}
	if err := bindAll(st, args); err != nil {
		return errors.Join(err, st.ClearBindings())
	}
	for st.Step() {
		more, err := row(st)
		if err != nil {
			return errors.Join(err, st.Reset())
		}
		if !more {
			break
		}
	}
	err = st.Err()
	if rerr := st.Reset(); err == nil {
		err = rerr
	}
	return err
}

// queryRow runs query with args and calls row with its first row, if it has
// one; it reports whether it had.
func (c *stmtCache) queryRow(query string, row func(st *sqlite3.Stmt) error, args ...any) (found bool, err error) {
	err = c.queryRows(query, func(st *sqlite3.Stmt) (bool, error) {
		found = true
		return false, row(st)
	}, args...)
	return found, err
}

// bindAll binds args to the parameters 1, 2, ... of st: a string as text, a
// []byte as a blob (nil as NULL), an int64 or a uint64 (its bits, as int64)
// as an integer, nil as NULL.
func bindAll(st *sqlite3.Stmt, args []any) error {
	for i, a := range args {
		var err error
		switch v := a.(type) {
		case nil:
			err = st.BindNull(i + 1)
		case string:
			err = st.BindText(i+1, v)
		case []byte:
			err = st.BindBlob(i+1, v)
		case int64:
			err = st.BindInt64(i+1, v)
		case uint64:
			err = st.BindInt64(i+1, int64(v))
		case int:
			err = st.BindInt64(i+1, int64(v))
		default:
			err = fmt.Errorf("sqlite: unsupported argument type %T", v)
		}
		if err != nil {
			return fmt.Errorf("bind argument %d: %w", i+1, err)
		}
	}
	return nil
}

// micros is how the stores keep a time: Unix microseconds (UTC), NULL for
// the zero time.
func micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// columnTime reads a time kept by micros.
func columnTime(st *sqlite3.Stmt, col int) time.Time {
	if st.ColumnType(col) == sqlite3.NULL {
		return time.Time{}
	}
	return unixMicro(st.ColumnInt64(col))
}

// columnBytes returns a copy of a blob column: nil for NULL, empty (not nil)
// for an empty blob.
func columnBytes(st *sqlite3.Stmt, col int) []byte {
	if st.ColumnType(col) == sqlite3.NULL {
		return nil
	}
	return append([]byte{}, st.ColumnRawBlob(col)...)
}
