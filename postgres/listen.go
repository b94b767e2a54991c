package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// listen keeps one connection of its own LISTENing on the event store's
// channel and wakes subscribers on every notification. When the connection
// drops it reconnects, with back-off, and wakes subscribers once more: a
// commit notified while it was away would otherwise wait for their poll.
func (db *DB) listen() {
	delay := 100 * time.Millisecond
	for db.ctx.Err() == nil {
		err := db.listenOnce()
		if db.ctx.Err() != nil {
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
	for {
		if _, err := conn.WaitForNotification(db.ctx); err != nil {
			return err
		}
		db.events.Notify()
	}
}
