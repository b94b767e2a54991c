package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// writeStmts are the statements of the write path, prepared once on the writer
// connection. Whoever holds the write lock may use them.
type writeStmts struct {
	begin, commit, rollback *sql.Stmt
	byID, stream            *sql.Stmt
	insert, setVersion      *sql.Stmt
	meta                    []byte // scratch for encoded metadata
}

func prepareWrite(ctx context.Context, conn *sql.Conn) (*writeStmts, error) {
	s := &writeStmts{}
	for _, p := range []struct {
		dst   **sql.Stmt
		query string
	}{
		{&s.begin, "BEGIN IMMEDIATE"},
		{&s.commit, "COMMIT"},
		{&s.rollback, "ROLLBACK"},
		{&s.byID, "SELECT pos, stream, version, type, data FROM recado_events WHERE id = ?"},
		{&s.stream, "SELECT version, deleted_through, tombstoned FROM recado_streams WHERE name = ?"},
		{&s.insert, "INSERT INTO recado_events (id, stream, version, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)"},
		{&s.setVersion, `INSERT INTO recado_streams (name, version) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET version = excluded.version`},
	} {
		st, err := conn.PrepareContext(ctx, p.query)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.dst = st
	}
	return s, nil
}

func (s *writeStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.begin, s.commit, s.rollback, s.byID, s.stream, s.insert, s.setVersion} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// streamState is a stream's row in recado_streams.
type streamState struct {
	version, deletedThrough uint64
	tombstoned              bool
}

func (st streamState) exists() bool { return st.version > st.deletedThrough && !st.tombstoned }

func loadStream(ctx context.Context, q *sql.Stmt, stream string) (streamState, error) {
	var s streamState
	err := q.QueryRowContext(ctx, stream).Scan(&s.version, &s.deletedThrough, &s.tombstoned)
	if errors.Is(err, sql.ErrNoRows) {
		return streamState{}, nil
	}
	return s, err
}

// undoError marks an error after which the append may have written part of
// itself (a storage error, or a later event's ID found stored when inserting
// it): the group commit rolls back and goes on without that append, a Tx rolls
// back to its savepoint. Other errors (conflicts, retries that do not match,
// deleted streams) are found before anything is written.
type undoError struct{ err error }

func (e undoError) Error() string { return e.err.Error() }
func (e undoError) Unwrap() error { return e.err }

// apply runs one append inside the open write transaction: the idempotency
// check, the version check, the inserts. A domain error (conflict, duplicate,
// deleted stream) leaves the transaction untouched; an undoError may leave
// part of the append written, so the caller must roll back (to a savepoint).
func (s *writeStmts) apply(ctx context.Context, stream string, events []recado.Event,
	expected eventstore.ExpectedVersion, now int64) (eventstore.AppendResult, error) {
	var res eventstore.AppendResult
	first, found, err := s.lookupID(ctx, events[0].ID)
	if err != nil {
		return res, undoError{fmt.Errorf("sqlite: append to %q: %w", stream, err)}
	}
	if found {
		return s.retried(ctx, stream, events, first)
	}
	st, err := loadStream(ctx, s.stream, stream)
	if err != nil {
		return res, undoError{fmt.Errorf("sqlite: append to %q: %w", stream, err)}
	}
	if st.tombstoned {
		return res, fmt.Errorf("sqlite: append to %q: %w", stream, eventstore.ErrStreamDeleted)
	}
	if err := expected.Check(stream, st.version, st.exists()); err != nil {
		return res, err
	}
	for i := range events {
		e := &events[i]
		t := now
		if !e.Time.IsZero() {
			t = e.Time.UnixNano()
		}
		s.meta = e.Metadata.AppendJSON(s.meta[:0])
		version := st.version + uint64(i) + 1
		r, err := s.insert.ExecContext(ctx, e.ID, stream, int64(version), e.Type, e.Data, s.meta, t)
		if err != nil {
			if strings.Contains(err.Error(), "recado_events.id") {
				return res, undoError{s.duplicateLater(ctx, stream, e.ID, i)}
			}
			return res, undoError{fmt.Errorf("sqlite: append to %q: insert event %s: %w", stream, e.ID, err)}
		}
		if i == 0 || i == len(events)-1 {
			pos, err := r.LastInsertId()
			if err != nil {
				return res, undoError{fmt.Errorf("sqlite: append to %q: %w", stream, err)}
			}
			if i == 0 {
				res.FirstPosition = recado.NewPosition(uint64(pos), 0)
			}
			res.LastPosition = recado.NewPosition(uint64(pos), 0)
		}
	}
	res.FirstVersion = st.version + 1
	res.LastVersion = st.version + uint64(len(events))
	if _, err := s.setVersion.ExecContext(ctx, stream, int64(res.LastVersion)); err != nil {
		return res, undoError{fmt.Errorf("sqlite: append to %q: %w", stream, err)}
	}
	return res, nil
}

// storedEvent is what the idempotency check reads of a stored event.
type storedEvent struct {
	pos     int64
	stream  string
	version uint64
	typ     string
	data    []byte
}

func (s *writeStmts) lookupID(ctx context.Context, id string) (storedEvent, bool, error) {
	var e storedEvent
	err := s.byID.QueryRowContext(ctx, id).Scan(&e.pos, &e.stream, &e.version, &e.typ, &e.data)
	if errors.Is(err, sql.ErrNoRows) {
		return e, false, nil
	}
	return e, err == nil, err
}

// retried checks an append whose first event ID is stored: it is a retry when
// every event matches a stored one, in order, and then returns the original
// result.
func (s *writeStmts) retried(ctx context.Context, stream string, events []recado.Event, first storedEvent) (eventstore.AppendResult, error) {
	dup := func(reason string, args ...any) error {
		return &eventstore.DuplicateIDError{ID: events[0].ID, Stream: first.stream, Reason: fmt.Sprintf(reason, args...)}
	}
	if first.stream != stream {
		return eventstore.AppendResult{}, dup("it is stored in another stream, not in %q", stream)
	}
	res := eventstore.AppendResult{
		FirstVersion:  first.version,
		LastVersion:   first.version + uint64(len(events)) - 1,
		FirstPosition: recado.NewPosition(uint64(first.pos), 0),
		LastPosition:  recado.NewPosition(uint64(first.pos), 0),
		Duplicate:     true,
	}
	for i := range events {
		e := &events[i]
		got := first
		if i > 0 {
			var found bool
			var err error
			if got, found, err = s.lookupID(ctx, e.ID); err != nil {
				return eventstore.AppendResult{}, undoError{fmt.Errorf("sqlite: append to %q: %w", stream, err)}
			} else if !found {
				return eventstore.AppendResult{}, dup("the earlier append did not store event %d (%s) with it", i, e.ID)
			}
		}
		switch want := first.version + uint64(i); {
		case got.stream != stream || got.version != want:
			return eventstore.AppendResult{}, dup("event %d (%s) is stored as version %d of %q, not version %d of %q",
				i, e.ID, got.version, got.stream, want, stream)
		case got.typ != e.Type:
			return eventstore.AppendResult{}, dup("event %d (%s) is stored with type %q, not %q", i, e.ID, got.typ, e.Type)
		case !bytes.Equal(got.data, e.Data):
			return eventstore.AppendResult{}, dup("event %d (%s) is stored with other data", i, e.ID)
		}
		res.LastPosition = recado.NewPosition(uint64(got.pos), 0)
	}
	return res, nil
}

// duplicateLater reports event i of an append, whose ID turned out to be
// stored for another event when inserting it.
func (s *writeStmts) duplicateLater(ctx context.Context, stream, id string, i int) error {
	got, found, err := s.lookupID(ctx, id)
	if err != nil || !found {
		return fmt.Errorf("sqlite: append to %q: event %d (%s): duplicate ID, and reading it back: %v", stream, i, id, err)
	}
	return &eventstore.DuplicateIDError{ID: id, Stream: got.stream,
		Reason: fmt.Sprintf("event %d of an append to %q has the ID of version %d of %q", i, stream, got.version, got.stream)}
}

// Request states: the writer takes a pending request; a caller whose context
// ends abandons it if the writer has not taken it yet.
const (
	reqPending int32 = iota
	reqTaken
	reqAbandoned
)

// appendReq is one Append waiting for group commit.
type appendReq struct {
	stream   string
	events   []recado.Event
	expected eventstore.ExpectedVersion
	state    atomic.Int32
	res      eventstore.AppendResult
	err      error
	done     chan struct{} // closed when res and err are set
}

func (r *appendReq) reply(res eventstore.AppendResult, err error) {
	r.res, r.err = res, err
	close(r.done)
}

// groupAppend sends an append to the writer and waits for its own result.
func (db *DB) groupAppend(ctx context.Context, stream string, events []recado.Event, expected eventstore.ExpectedVersion) (eventstore.AppendResult, error) {
	var zero eventstore.AppendResult
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	r := &appendReq{stream: stream, events: events, expected: expected, done: make(chan struct{})}
	db.waiting.Add(1)
	select {
	case db.queue <- r:
	case <-ctx.Done():
		db.waiting.Add(-1)
		return zero, ctx.Err()
	case <-db.closing:
		db.waiting.Add(-1)
		return zero, db.closedErr()
	}
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqPending, reqAbandoned) {
			db.waiting.Add(-1)
			return zero, ctx.Err() // never sent to the database
		}
		select {
		case <-r.done:
			return r.res, r.err
		default:
			return zero, eventstore.UnknownOutcome(stream, ctx.Err())
		}
	case <-db.done:
		if r.state.CompareAndSwap(reqPending, reqAbandoned) {
			db.waiting.Add(-1)
			return zero, db.closedErr()
		}
		<-r.done
		return r.res, r.err
	}
}

// writer is the goroutine that owns group commit: it takes every waiting
// append (up to MaxBatch), runs them in one transaction and commits once.
func (db *DB) writer() {
	defer close(db.done)
	waiting := make([]*appendReq, 0, db.opts.MaxBatch)
	batch := make([]*appendReq, 0, db.opts.MaxBatch)
	for {
		waiting = waiting[:0]
		select {
		case <-db.closing:
			db.drain(nil)
			return
		case r := <-db.queue:
			waiting = append(waiting, r)
		}
		select {
		case db.writeLock <- struct{}{}:
		case <-db.closing:
			db.drain(waiting)
			return
		}
		// Gather once the writer is ours: appends sent while a Tx held it
		// join this batch.
	gather:
		for len(waiting) < db.opts.MaxBatch {
			select {
			case r := <-db.queue:
				waiting = append(waiting, r)
			default:
				break gather
			}
		}
		// Only now is a request taken: a caller that gave up while a Tx held
		// the lock gets its plain ctx error.
		batch = batch[:0]
		for _, r := range waiting {
			if r.state.CompareAndSwap(reqPending, reqTaken) {
				db.waiting.Add(-1)
				batch = append(batch, r)
			}
		}
		if len(batch) > 0 {
			db.commitBatch(batch)
		}
		db.unlockWrite()
		clear(waiting)
		clear(batch)
	}
}

// drain fails the given requests and every request still queued with ErrClosed.
func (db *DB) drain(waiting []*appendReq) {
	fail := func(r *appendReq) {
		if r.state.CompareAndSwap(reqPending, reqTaken) {
			db.waiting.Add(-1)
			r.reply(eventstore.AppendResult{}, db.closedErr())
		}
	}
	for _, r := range waiting {
		fail(r)
	}
	for {
		select {
		case r := <-db.queue:
			fail(r)
		default:
			return
		}
	}
}

// commitBatch commits the batch's appends in one transaction and replies to
// each. An append that meets a storage error is rolled back alone: the
// transaction is rolled back and run again without it.
func (db *DB) commitBatch(batch []*appendReq) {
	now := time.Now().UnixNano()
	for len(batch) > 0 {
		failed, err := db.tryBatch(batch, now)
		if err == nil {
			db.committed(batch)
			return
		}
		if failed < 0 { // the transaction itself failed: everyone gets the error
			db.log.Error("sqlite: group commit failed", "path", db.path, "appends", len(batch), "err", err)
			for _, r := range batch {
				r.reply(eventstore.AppendResult{}, fmt.Errorf("sqlite: append to %q: group commit: %w", r.stream, err))
			}
			return
		}
		batch[failed].reply(eventstore.AppendResult{}, err)
		batch = append(batch[:failed], batch[failed+1:]...)
	}
}

// tryBatch runs the batch in one transaction. It returns the index of an
// append that met a storage error (the transaction is then rolled back), or
// -1 with the error of the transaction itself, or -1 and nil once committed.
// Each request's own result or domain error is left in r.res and r.err.
func (db *DB) tryBatch(batch []*appendReq, now int64) (int, error) {
	ctx := context.Background() // the batch is never cut short: callers give up alone
	s := db.stmts
	if _, err := s.begin.ExecContext(ctx); err != nil {
		return -1, err
	}
	for i, r := range batch {
		r.res, r.err = s.apply(ctx, r.stream, r.events, r.expected, now)
		if se := (undoError{}); errors.As(r.err, &se) {
			db.rollback()
			return i, se.err
		}
	}
	if _, err := s.commit.ExecContext(ctx); err != nil {
		db.rollback()
		return -1, err
	}
	return -1, nil
}

func (db *DB) rollback() {
	if _, err := db.stmts.rollback.ExecContext(context.Background()); err != nil {
		db.log.Error("sqlite: rollback failed", "path", db.path, "err", err)
	}
}

// committed replies to every request of a committed batch and wakes
// subscribers.
func (db *DB) committed(batch []*appendReq) {
	var appends, events uint64
	for _, r := range batch {
		if r.err == nil && !r.res.Duplicate {
			appends++
			events += uint64(len(r.events))
		}
	}
	if appends > 0 {
		db.stats.commits.Add(1)
		db.stats.appends.Add(appends)
		db.stats.events.Add(events)
		db.signal.Notify()
	}
	for _, r := range batch {
		close(r.done)
	}
}
