package memory

import (
	"context"
	"fmt"
	"sync"

	"github.com/recado-dev/recado"
	cdriver "github.com/recado-dev/recado/command/driver"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
	dldriver "github.com/recado-dev/recado/resilience/deadletter/driver"
	idemdriver "github.com/recado-dev/recado/resilience/idempotency/driver"
	inboxdriver "github.com/recado-dev/recado/resilience/inbox/driver"
	leasedriver "github.com/recado-dev/recado/resilience/lease/driver"
)

// DB holds every store of package memory and runs the units of work they
// share. The zero value is not ready: use [New].
//
// One writer at a time changes a DB, as in SQLite: a unit of work holds the
// writer from start to end, and a write outside any unit waits for it. Readers
// never wait for the writer; they see what has committed.
type DB struct {
	// writer is held (a value sent) by the unit of work, or the single write,
	// that may change the DB. A channel and not a mutex, so that waiting for it
	// ends when the context does or when the DB closes.
	writer chan struct{}
	done   chan struct{} // closed by Close
	sig    driver.Signal // notified after each commit that changed something, and on Close

	// mu guards the data of every store and closed. Writers hold it to change
	// the data and to commit or roll back; readers hold it for reading, briefly.
	mu     sync.RWMutex
	closed bool

	events *events
	front  *eventstore.Store

	// The recoverability stores' drivers; their fronts are made per call,
	// with the caller's settings.
	deadLetters *deadLetters
	idempotency *idempotencyKeys
	inbox       *inboxEntries
	leases      *leases

	checkpoints *checkpoints // the projections' checkpoint store's driver
	// Package command's stores.
	commands  *commandRecords
	snapshots *snapshots
}

// New returns an empty DB.
func New() *DB {
	db := &DB{writer: make(chan struct{}, 1), done: make(chan struct{})}
	db.events = newEvents(db)
	db.front = eventstore.New(db.events)
	db.deadLetters = &deadLetters{db: db, letters: newTable[uint64, dldriver.Letter]()}
	db.idempotency = &idempotencyKeys{db: db, recs: newTable[[2]string, idemdriver.Record]()}
	db.inbox = &inboxEntries{db: db, entries: newTable[[2]string, inboxdriver.Entry]()}
	db.leases = &leases{db: db, recs: newTable[string, leasedriver.Record]()}
	db.checkpoints = newCheckpoints(db)
	db.commands = newCommandRecords(db)
	db.snapshots = &snapshots{db: db, snaps: newTable[string, cdriver.Snapshot]()}
	return db
}

// Events returns the DB's event store. Its appends, deletes and State take
// eventstore.InTx(tx) with a [*Tx] of this DB.
func (db *DB) Events() *eventstore.Store { return db.front }

// Close closes the DB: every later call of its stores fails with the store's
// ErrClosed (eventstore.ErrClosed, deadletter.ErrClosed, ...), subscriptions
// end with it, and a unit of work in
// progress rolls back (its [DB.Tx] returns the error). Close is safe to call
// more than once.
func (db *DB) Close() error {
	db.mu.Lock()
	if !db.closed {
		db.closed = true
		close(db.done)
	}
	db.mu.Unlock()
	db.sig.Notify()
	return nil
}

// Tx is a unit of work on a [DB]: what the stores of the DB do in it commits
// together when the function given to [DB.Tx] returns nil, and is undone
// otherwise. Pass it to the event store with eventstore.InTx(tx).
//
// A Tx is valid only inside the function given to [DB.Tx], and only on that
// function's goroutine. A store given a Tx that has ended, or one of another
// DB, fails with an error wrapping eventstore.ErrInvalid.
type Tx struct {
	db       *DB
	done     bool     // the unit has ended; guarded by db.mu
	undo     []func() // run in reverse order on rollback, under db.mu
	publish  []func() // run in order on commit, under db.mu
	onCommit []func() // run after commit, without locks
}

var _ recado.UnitOfWork[*Tx] = (*DB)(nil)

// OnCommit implements [recado.Tx]: f runs after the unit of work commits, on
// the goroutine that called [DB.Tx], before Tx returns; not if it rolls back.
func (tx *Tx) OnCommit(f func()) { tx.onCommit = append(tx.onCommit, f) }

// How a store of package memory joins a unit of work. A store's write, made
// with db.mu held for writing, changes the data in place and registers with
// onRollback how to undo the change and with onPublish how to make it visible
// to readers outside the unit: those two keep what has committed apart from
// what the unit has written (the event log, for one, keeps a committed length
// that readers do not read past). Inside the unit, the store reads all of it.

// onRollback registers f to undo a change if the unit rolls back. Functions run
// in the reverse order of their registration, with db.mu held for writing.
func (tx *Tx) onRollback(f func()) { tx.undo = append(tx.undo, f) }

// onPublish registers f to make a change visible to readers outside the unit
// when it commits. Functions run in their order of registration, with db.mu
// held for writing: readers see all of a unit's changes or none.
func (tx *Tx) onPublish(f func()) { tx.publish = append(tx.publish, f) }

// Tx runs fn in a unit of work and commits it if fn returns nil; otherwise, or
// if fn panics, it undoes everything fn did through the DB's stores and
// returns fn's error (or goes on panicking). Readers outside the unit see its
// changes only once it has committed, all at once; inside it, the stores read
// what it wrote (eventstore.InTx(tx)).
//
// The unit holds the DB's only writer while fn runs: every other unit, and
// every write made outside one, waits for it. Inside fn, pass InTx(tx) to
// every store call that writes: a write of this DB without it waits for fn to
// end, which never comes (it returns when its context ends).
func (db *DB) Tx(ctx context.Context, fn func(tx *Tx) error) error {
	if err := db.lockWriter(ctx); err != nil {
		return fmt.Errorf("memory: unit of work: %w", err)
	}
	tx := &Tx{db: db}
	if err := db.run(tx, fn); err != nil {
		return err
	}
	for _, f := range tx.onCommit {
		f()
	}
	return nil
}

// run runs fn in tx, commits or rolls back, wakes the readers waiting for a
// commit, and releases the writer, which the caller holds.
func (db *DB) run(tx *Tx, fn func(tx *Tx) error) error {
	defer db.unlockWriter()
	ok := false
	defer func() {
		if !ok { // fn failed or panicked
			db.finish(tx, false)
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	ok = true
	if err := db.finish(tx, true); err != nil {
		return err
	}
	if len(tx.publish) > 0 {
		db.sig.Notify()
	}
	return nil
}

// write runs f, a write of one of the DB's stores, in the unit of work rtx, or
// when rtx is nil in a unit of its own, committed at once if f returns nil.
func (db *DB) write(ctx context.Context, rtx recado.Tx, f func(tx *Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	step := func(tx *Tx) error {
		db.mu.Lock()
		defer db.mu.Unlock()
		if err := db.live(tx); err != nil {
			return err
		}
		return f(tx)
	}
	if rtx != nil {
		tx, err := db.own(rtx)
		if err != nil {
			return err
		}
		return step(tx)
	}
	if err := db.lockWriter(ctx); err != nil {
		return err
	}
	return db.run(&Tx{db: db}, step)
}

// finish commits (ok) or rolls back tx and ends it. It returns ErrClosed, having
// rolled back, if the DB closed before the commit. The caller holds the writer.
func (db *DB) finish(tx *Tx, ok bool) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	tx.done = true
	var err error
	if ok && db.closed {
		ok, err = false, driver.ErrClosed
	}
	if ok {
		for _, f := range tx.publish {
			f()
		}
		return nil
	}
	for i := len(tx.undo) - 1; i >= 0; i-- {
		tx.undo[i]()
	}
	tx.publish = nil
	return err
}

// own returns rtx as a unit of work of db, or an error wrapping
// [driver.ErrForeignTx].
func (db *DB) own(rtx recado.Tx) (*Tx, error) {
	tx, ok := rtx.(*Tx)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: %T is not a *memory.Tx", driver.ErrForeignTx, rtx)
	case tx == nil || tx.db != db:
		return nil, fmt.Errorf("%w: a unit of work of another memory.DB", driver.ErrForeignTx)
	}
	return tx, nil
}

// live returns an error if the DB is closed or tx has ended. db.mu is held.
func (db *DB) live(tx *Tx) error {
	switch {
	case db.closed:
		return driver.ErrClosed
	case tx.done:
		return fmt.Errorf("%w: the unit of work has ended", driver.ErrForeignTx)
	}
	return nil
}

// lockWriter waits until the caller holds the writer, ctx ends or the DB
// closes.
func (db *DB) lockWriter(ctx context.Context) error {
	select {
	case <-db.done:
		return driver.ErrClosed
	default:
	}
	select {
	case db.writer <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-db.done:
		return driver.ErrClosed
	}
}

func (db *DB) unlockWriter() { <-db.writer }
