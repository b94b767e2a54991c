package postgres

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The DB's listener: one connection of its own LISTENing on the event
// store's channel, so that commits by other processes wake this DB's
// subscriptions at once. Commits made through this DB wake them directly, so
// the listener runs only while subscriptions wait: a DB that only appends
// keeps no connection listening, and no backend of it is woken by every
// notification in the database.

// listenIdleCheck is how often the listener checks whether any subscription
// still waits. After a period in which none asked for Committed, it wakes
// them all: those still there read the log and ask again. After a second
// period in which none did, it stops.
var listenIdleCheck = time.Minute // a variable for the tests

// listening tracks what the listener needs to know of subscriptions.
type listening struct {
	on     atomic.Bool   // a listener runs (or is starting)
	asked  atomic.Uint64 // calls of Committed so far
	wanted chan struct{} // a subscription asked while no listener ran (buffered: 1)
}

// Committed implements [driver.Driver.Committed]. A subscription asks for it
// before each read of the log: it starts the listener if none runs.
func (e *eventDriver) Committed() <-chan struct{} {
	ch := e.Signal.Committed()
	l := &e.db.listening
	l.asked.Add(1)
	if !l.on.Load() {
		select {
		case l.wanted <- struct{}{}:
		default:
		}
	}
	return ch
}

// listen runs the listener whenever subscriptions want it.
func (db *DB) listen() {
	for {
		select {
		case <-db.listening.wanted:
		case <-db.ctx.Done():
			return
		}
		db.listening.on.Store(true)
		db.listenWhileWanted()
	}
}

// listenWhileWanted keeps a connection listening until no subscription has
// waited for a while. When the connection drops it reconnects, with
// back-off.
func (db *DB) listenWhileWanted() {
	delay := 100 * time.Millisecond
	for db.ctx.Err() == nil {
		err := db.listenOnce()
		if err == nil || db.ctx.Err() != nil {
			return
		}
		db.log.Warn("postgres: listener connection lost, reconnecting", "schema", db.opts.Schema, "err", err, "in", delay)
		select {
		case <-time.After(delay):
		case <-db.ctx.Done():
			return
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// errIdle ends a listener no subscription waits for.
var errIdle = errors.New("postgres: no subscription waits")

// listenOnce listens on one connection. After it LISTENs it wakes
// subscribers once: a commit notified before would otherwise wait for their
// poll. It returns nil when no subscription has waited for listenIdleCheck,
// with the listener marked off.
func (db *DB) listenOnce() error {
	conn, err := pgx.ConnectConfig(db.ctx, db.pool.Config().ConnConfig)
	if err != nil {
		return err
	}
	defer func() {
		db.listenPID.Store(0)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	}()
	if _, err := conn.Exec(db.ctx, "LISTEN "+pgx.Identifier{db.q.channel}.Sanitize()); err != nil {
		return err
	}
	db.listenPID.Store(conn.PgConn().PID())
	db.events.Notify()
	l := &db.listening
	asked := l.asked.Load()
	probed := false // subscribers were woken to see whether any is left
	for {
		ctx, cancel := context.WithTimeout(db.ctx, listenIdleCheck)
		_, err := conn.WaitForNotification(ctx)
		cancel()
		switch {
		case err == nil:
			db.events.Notify()
			continue
		case db.ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded):
			return err
		case l.asked.Load() != asked:
			asked, probed = l.asked.Load(), false
		case !probed:
			db.events.Notify()
			probed = true
		default:
			// Idle. A subscription that asks from now on finds the listener
			// off and starts it again; one that asked meanwhile keeps it.
			l.on.Store(false)
			if l.asked.Load() == asked {
				return nil
			}
			l.on.Store(true)
		}
		if conn.IsClosed() {
			return errIdle // the timeout closed it: reconnect
		}
	}
}
