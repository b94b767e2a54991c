package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"math"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// EventStore is the event store kept in a [DB]'s file. It implements
// [eventstore.Store], [eventstore.Notifier], [eventstore.Subscriber] and
// [eventstore.Deleter].
type EventStore struct {
	db *DB
}

var (
	_ eventstore.Store      = (*EventStore)(nil)
	_ eventstore.Notifier   = (*EventStore)(nil)
	_ eventstore.Subscriber = (*EventStore)(nil)
	_ eventstore.Deleter    = (*EventStore)(nil)
)

// Append implements [eventstore.Store]. Without [eventstore.InTx] the append
// joins the next group commit; with it, it joins the caller's [Tx].
func (s *EventStore) Append(ctx context.Context, stream string, events []recado.Event, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	o := eventstore.NewAppendOptions(opts...)
	if s.db.isClosing() {
		return eventstore.AppendResult{}, s.db.closedErr()
	}
	if err := eventstore.ValidateAppend(stream, events, o); err != nil {
		return eventstore.AppendResult{}, err
	}
	for i := range events {
		if t := events[i].Time; !t.IsZero() && (t.Year() < 1678 || t.Year() > 2261) {
			return eventstore.AppendResult{}, fmt.Errorf("%w: append to %q: event %d (%s): time %v is outside the years 1678-2261 that a nanosecond count holds",
				eventstore.ErrInvalid, stream, i, events[i].ID, t)
		}
	}
	if o.Tx != nil {
		return s.db.appendInTx(ctx, o.Tx, stream, events, o.Expected)
	}
	return s.db.groupAppend(ctx, stream, events, o.Expected)
}

// Committed implements [eventstore.Notifier]: the channel is closed after the
// next commit of events in this process.
func (s *EventStore) Committed() <-chan struct{} { return s.db.signal.Committed() }

// Subscribe implements [eventstore.Subscriber] with [eventstore.Poll], idle
// subscriptions reading the log again every Options.PollInterval (unless the
// call sets its own) so that events written by other processes arrive too.
func (s *EventStore) Subscribe(ctx context.Context, after recado.Position, opts ...eventstore.SubscribeOption) iter.Seq2[eventstore.Message, error] {
	opts = append([]eventstore.SubscribeOption{eventstore.WithPollInterval(s.db.opts.PollInterval)}, opts...)
	return eventstore.Poll(ctx, s, after, opts...)
}

// Delete implements [eventstore.Deleter] (soft delete).
func (s *EventStore) Delete(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return s.deleteStream(ctx, stream, false, opts)
}

// Tombstone implements [eventstore.Deleter] (permanent delete).
func (s *EventStore) Tombstone(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return s.deleteStream(ctx, stream, true, opts)
}

func (s *EventStore) deleteStream(ctx context.Context, stream string, tombstone bool, opts []eventstore.AppendOption) error {
	o := eventstore.NewAppendOptions(opts...)
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	if o.Tx != nil {
		tx, ok := o.Tx.(*Tx)
		if !ok || tx == nil || tx.db != s.db || tx.done {
			return fmt.Errorf("%w: delete %q: unit of work %T is not a live *sqlite.Tx of this DB", eventstore.ErrInvalid, stream, o.Tx)
		}
		return s.db.deleteIn(ctx, stream, tombstone, o.Expected)
	}
	return s.db.tx(ctx, func(*Tx) error { return s.db.deleteIn(ctx, stream, tombstone, o.Expected) })
}

// deleteIn deletes stream inside the open write transaction.
func (db *DB) deleteIn(ctx context.Context, stream string, tombstone bool, expected eventstore.ExpectedVersion) error {
	st, err := loadStream(ctx, db.stmts.stream, stream)
	if err != nil {
		return fmt.Errorf("sqlite: delete %q: %w", stream, err)
	}
	switch {
	case st.tombstoned:
		return fmt.Errorf("sqlite: delete %q: %w", stream, eventstore.ErrStreamDeleted)
	case !tombstone && !st.exists():
		return fmt.Errorf("sqlite: delete %q: %w", stream, eventstore.ErrStreamNotFound)
	}
	if err := expected.Check(stream, st.version, st.exists()); err != nil {
		return err
	}
	q := "UPDATE recado_streams SET deleted_through = version WHERE name = ?"
	if tombstone {
		q = `INSERT INTO recado_streams (name, version, tombstoned) VALUES (?, 0, 1)
ON CONFLICT (name) DO UPDATE SET tombstoned = 1`
	}
	if _, err := db.conn.ExecContext(ctx, q, stream); err != nil {
		return fmt.Errorf("sqlite: delete %q: %w", stream, err)
	}
	return nil
}

// readStmts are the read queries, prepared on the read pool.
type readStmts struct {
	allFwd, allBack, streamFwd, streamBack, stream *sql.Stmt
}

const eventColumns = "pos, id, stream, version, type, data, metadata, time"

func prepareRead(ctx context.Context, db *sql.DB) (*readStmts, error) {
	s := &readStmts{}
	for _, p := range []struct {
		dst   **sql.Stmt
		query string
	}{
		{&s.allFwd, "SELECT " + eventColumns + " FROM recado_events WHERE pos > ? ORDER BY pos LIMIT ?"},
		{&s.allBack, "SELECT " + eventColumns + " FROM recado_events WHERE pos < ? ORDER BY pos DESC LIMIT ?"},
		{&s.streamFwd, "SELECT " + eventColumns + " FROM recado_events WHERE stream = ? AND version >= ? ORDER BY version LIMIT ?"},
		{&s.streamBack, "SELECT " + eventColumns + " FROM recado_events WHERE stream = ? AND version <= ? AND version > ? ORDER BY version DESC LIMIT ?"},
		{&s.stream, "SELECT version, deleted_through, tombstoned FROM recado_streams WHERE name = ?"},
	} {
		st, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.dst = st
	}
	return s, nil
}

func (s *readStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.allFwd, s.allBack, s.streamFwd, s.streamBack, s.stream} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// pageSize is how many events one query of a read fetches. A read runs one
// query per page and holds no connection while the caller handles events.
const pageSize = 512

// pageCtx is the context a page's query runs with: not cancelled with ctx,
// which read checks between pages instead. A page is short, and a query that
// watches a cancellable context pays for it on every row (a watcher goroutine,
// or a context check and a yield of the processor every few rows), which
// costs more than half the read rate.
func pageCtx(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// ReadAll implements [eventstore.Store].
func (s *EventStore) ReadAll(ctx context.Context, after recado.Position, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := s.readCheck(ctx, o); err != nil {
			yield(recado.Event{}, err)
			return
		}
		major, minor := after.Parts()
		var cursor int64 // exclusive bound
		var q *sql.Stmt
		if o.Backwards {
			q, cursor = s.db.rstmt.allBack, math.MaxInt64
			if !after.IsZero() {
				cursor = clampPos(major)
				if minor > 0 && cursor < math.MaxInt64 {
					cursor++ // (major, minor) comes after the event at major
				}
			}
		} else {
			q, cursor = s.db.rstmt.allFwd, clampPos(major)
		}
		s.read(ctx, o.Limit, yield, func(n int) (*sql.Rows, error) {
			return q.QueryContext(pageCtx(ctx), cursor, n)
		}, func(e *recado.Event) {
			p, _ := e.Position.Parts()
			cursor = int64(p)
		})
	}
}

func clampPos(p uint64) int64 {
	if p > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(p)
}

// ReadStream implements [eventstore.Store].
func (s *EventStore) ReadStream(ctx context.Context, stream string, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := s.readCheck(ctx, o); err != nil {
			yield(recado.Event{}, err)
			return
		}
		if err := eventstore.ValidateStream(stream); err != nil {
			yield(recado.Event{}, err)
			return
		}
		st, err := loadStream(ctx, s.db.rstmt.stream, stream)
		switch {
		case err != nil:
			yield(recado.Event{}, s.readErr(ctx, err))
			return
		case st.tombstoned:
			yield(recado.Event{}, fmt.Errorf("sqlite: read %q: %w", stream, eventstore.ErrStreamDeleted))
			return
		case !st.exists():
			yield(recado.Event{}, fmt.Errorf("sqlite: read %q: %w", stream, eventstore.ErrStreamNotFound))
			return
		}
		floor := int64(st.deletedThrough) // versions up to floor are deleted
		if o.Backwards {
			next := int64(st.version) // inclusive
			if o.From != 0 && o.From < st.version {
				next = int64(o.From)
			}
			s.read(ctx, o.Limit, yield, func(n int) (*sql.Rows, error) {
				return s.db.rstmt.streamBack.QueryContext(pageCtx(ctx), stream, next, floor, n)
			}, func(e *recado.Event) { next = int64(e.Version) - 1 })
			return
		}
		next := max(floor+1, int64(min(o.From, math.MaxInt64)))
		s.read(ctx, o.Limit, yield, func(n int) (*sql.Rows, error) {
			return s.db.rstmt.streamFwd.QueryContext(pageCtx(ctx), stream, next, n)
		}, func(e *recado.Event) { next = int64(e.Version) + 1 })
	}
}

func (s *EventStore) readCheck(ctx context.Context, o eventstore.ReadOptions) error {
	if s.db.isClosing() {
		return s.db.closedErr()
	}
	if err := o.Validate(); err != nil {
		return err
	}
	return ctx.Err()
}

func (s *EventStore) readErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s.db.isClosing() {
		return s.db.closedErr()
	}
	return fmt.Errorf("sqlite: read %s: %w", s.db.path, err)
}

// read runs query page by page until limit events (0: all) were yielded or a
// page comes back short, calling advance with each page's last event.
func (s *EventStore) read(ctx context.Context, limit int, yield func(recado.Event, error) bool,
	query func(n int) (*sql.Rows, error), advance func(*recado.Event)) {
	page := make([]recado.Event, 0, min(pageSize, max(limit, 16)))
	for left := limit; limit == 0 || left > 0; {
		if err := ctx.Err(); err != nil {
			yield(recado.Event{}, err)
			return
		}
		n := pageSize
		if limit > 0 {
			n = min(n, left)
		}
		var err error
		page, err = s.readPage(ctx, query, n, page[:0])
		if err != nil {
			yield(recado.Event{}, err)
			return
		}
		for i := range page {
			if !yield(page[i], nil) {
				return
			}
		}
		if len(page) < n {
			return
		}
		advance(&page[len(page)-1])
		left -= len(page)
		clear(page)
	}
}

func (s *EventStore) readPage(ctx context.Context, query func(n int) (*sql.Rows, error), n int, page []recado.Event) ([]recado.Event, error) {
	if s.db.isClosing() {
		return page, s.db.closedErr()
	}
	rows, err := query(n)
	if err != nil {
		return page, s.readErr(ctx, err)
	}
	defer rows.Close()
	var (
		pos, version, ns int64
		data, meta       sql.RawBytes
	)
	for rows.Next() {
		var e recado.Event
		if err := rows.Scan(&pos, &e.ID, &e.Stream, &version, &e.Type, &data, &meta, &ns); err != nil {
			return page, s.readErr(ctx, err)
		}
		e.Position = recado.NewPosition(uint64(pos), 0)
		e.Version = uint64(version)
		if len(data) > 0 {
			e.Data = append([]byte(nil), data...)
		}
		if e.Metadata, err = recado.ParseMetadata(meta); err != nil {
			return page, fmt.Errorf("sqlite: read event %s at %d: %w", e.ID, pos, err)
		}
		e.Time = unixNano(ns)
		page = append(page, e)
	}
	if err := rows.Err(); err != nil {
		return page, s.readErr(ctx, err)
	}
	return page, nil
}

func unixNano(ns int64) time.Time { return time.Unix(0, ns).UTC() }
