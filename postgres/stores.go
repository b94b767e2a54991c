package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// storeContracts are the stores beside the event store, each with its own
// tables and its own migrations (checkpoints.go, deadletter.go,
// idempotency.go, inbox.go, lease.go). Open migrates them all.
var storeContracts = [...]contract{
	{name: "checkpoint", migrations: []string{checkpointV1}},
	{name: "deadletter", migrations: []string{deadLetterV1}},
	{name: "idempotency", migrations: []string{idempotencyV1}},
	{name: "inbox", migrations: []string{inboxV1}},
	{name: "lease", migrations: []string{leaseV1}},
}

// allContracts are the contracts Open migrates, in order.
func allContracts() []contract {
	all := make([]contract, 0, len(contracts)+len(storeContracts))
	return append(append(all, contracts[:]...), storeContracts[:]...)
}

// utc returns t, read from a timestamptz column, as the stores hand times
// out: in UTC (pgx returns them in the local zone). The stores keep a zero
// time.Time as it is, 0001-01-01 00:00:00 UTC, which reads back as the zero
// time.Time: time columns stay NOT NULL, and min and max order a zero time
// first, as Go does.
func utc(t time.Time) time.Time { return t.UTC() }

// A session is where one call of a store other than the event store runs:
// in the caller's unit of work, or in a short transaction of its own on a
// connection of the pool, begun (with its isolation and timeouts, see
// beginOwn) in the same round trip as its first statements and committed in
// the same round trip as its last. It is used on one goroutine.
type session struct {
	db   *DB
	unit *Tx           // the caller's unit of work, or nil
	conn *pgxpool.Conn // the own transaction's connection, once acquired
	open bool          // the own transaction has begun and not ended
	bad  bool          // a batch of the own transaction failed: roll back or drop the connection
}

// session returns where a call given the unit of work t (nil for none)
// runs. It fails with closed after Close, and with foreign (the store
// contract's error for a unit of work of another DB, or one that has ended)
// if t is not one of db's live units of work.
func (db *DB) session(t recado.Tx, closed, foreign error) (*session, error) {
	if db.closed.Load() {
		return nil, closedError(closed)
	}
	s := &session{db: db}
	if t != nil {
		unit, err := db.unit(t)
		if err != nil {
			detail := strings.TrimPrefix(err.Error(), driver.ErrForeignTx.Error()+": ")
			return nil, fmt.Errorf("%w: %s", foreign, detail)
		}
		s.unit = unit
	}
	return s, nil
}

// closedError is closed, said of a postgres DB.
func closedError(closed error) error { return fmt.Errorf("%w: the postgres DB is closed", closed) }

// batch returns a batch to send next: in an own transaction not yet begun,
// it begins with BEGIN and the transaction's timeouts.
func (s *session) batch() *pgx.Batch {
	b := &pgx.Batch{}
	if s.unit == nil && !s.open {
		b.Queue(beginOwn)
		b.Queue("SELECT " + ownTimeouts(0))
	}
	return b
}

// send sends b and reads its results (running its callbacks).
func (s *session) send(ctx context.Context, b *pgx.Batch) error {
	if s.unit != nil {
		return s.unit.tx.SendBatch(ctx, b).Close()
	}
	if s.conn == nil {
		c, err := s.db.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		s.conn = c
	}
	s.open = true
	if err := s.conn.SendBatch(ctx, b).Close(); err != nil {
		s.bad = true
		return err
	}
	return nil
}

// commit sends b (nil: no statement) and, in an own transaction, commits
// it in the same round trip; in a unit of work the unit's commit is the
// commit. After it, a new batch begins a new own transaction.
func (s *session) commit(ctx context.Context, b *pgx.Batch) error {
	if s.unit != nil {
		if b == nil || b.Len() == 0 {
			return nil
		}
		return s.send(ctx, b)
	}
	if b == nil {
		if !s.open {
			return nil // nothing was begun
		}
		b = s.batch()
	}
	b.Queue("commit")
	if err := s.send(ctx, b); err != nil {
		return err
	}
	s.open = false
	return nil
}

// close ends the session: an own transaction still open is rolled back
// (after a failure, the connection is dropped if even that fails), and the
// connection goes back to the pool.
func (s *session) close() {
	if s.conn == nil {
		return
	}
	release(s.conn, !s.open && !s.bad)
	s.conn = nil
}

// fail returns err as a store's call reports it: closed (with err) if the DB
// was closed meanwhile.
func (s *session) fail(err error, closed error) error {
	if err == nil {
		return nil
	}
	if s.db.closed.Load() && !errors.Is(err, closed) {
		return fmt.Errorf("%w (%w)", closedError(closed), err)
	}
	return err
}

// querier is what a read of committed data runs on: the pool.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// read runs f, a read of committed data, on the pool, outside any
// transaction.
func (db *DB) read(ctx context.Context, closed error, f func(q querier) error) error {
	if db.closed.Load() {
		return closedError(closed)
	}
	err := f(db.pool)
	if err != nil && db.closed.Load() {
		return fmt.Errorf("%w (%w)", closedError(closed), err)
	}
	return err
}

// deleteBatch runs sql, a DELETE of at most a batch of rows, in a short
// transaction of its own, and returns how many it deleted.
func (db *DB) deleteBatch(ctx context.Context, closed error, sql string, args ...any) (int, error) {
	s, err := db.session(nil, closed, nil)
	if err != nil {
		return 0, err
	}
	defer s.close()
	n := 0
	b := s.batch()
	b.Queue(sql, args...).Exec(func(tag pgconn.CommandTag) error { n = int(tag.RowsAffected()); return nil })
	if err := s.commit(ctx, b); err != nil {
		return 0, s.fail(err, closed)
	}
	return n, nil
}
