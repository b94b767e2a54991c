package sqlite

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// writeStmts are the statements of the write path, prepared once on the writer
// connection's direct API. Whoever holds the write lock may use them, inside
// [DB.onWriter].
type writeStmts struct {
	conn                           *sqlite3.Conn
	begin, commit, rollback        *sqlite3.Stmt
	savepoint, rollbackTo, release *sqlite3.Stmt
	byID, stream                   *sqlite3.Stmt
	insert, setVersion             *sqlite3.Stmt
	meta                           []byte // scratch for encoded metadata
}

func prepareWrite(c *sqlite3.Conn) (*writeStmts, error) {
	s := &writeStmts{conn: c}
	err := prepare(c, []stmtDef{
		{&s.begin, "BEGIN IMMEDIATE"},
		{&s.commit, "COMMIT"},
		{&s.rollback, "ROLLBACK"},
		{&s.savepoint, "SAVEPOINT recado_append"},
		{&s.rollbackTo, "ROLLBACK TO recado_append"},
		{&s.release, "RELEASE recado_append"},
		{&s.byID, "SELECT pos, stream, version, type, data FROM recado_events WHERE id = ?"},
		{&s.stream, "SELECT version, deleted_through, tombstoned FROM recado_streams WHERE name = ?"},
		{&s.insert, "INSERT INTO recado_events (id, stream, version, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)"},
		{&s.setVersion, `INSERT INTO recado_streams (name, version) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET version = excluded.version`},
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *writeStmts) close() error {
	return closeStmts(s.begin, s.commit, s.rollback, s.savepoint, s.rollbackTo, s.release,
		s.byID, s.stream, s.insert, s.setVersion)
}

// inTx reports whether the connection is inside a transaction: after some
// errors SQLite has already rolled it back.
func (s *writeStmts) inTx() bool { return !s.conn.GetAutocommit() }

// streamState is a stream's row in recado_streams.
type streamState struct {
	version, deletedThrough uint64
	tombstoned              bool
}

func (st streamState) exists() bool { return st.version > st.deletedThrough && !st.tombstoned }

// loadStream reads a stream's row with q (the same query on the writer and on
// the readers); a stream without a row is the zero state.
func loadStream(q *sqlite3.Stmt, stream string) (streamState, error) {
	var st streamState
	if err := q.BindText(1, stream); err != nil {
		return st, err
	}
	if q.Step() {
		st = streamState{
			version:        uint64(q.ColumnInt64(0)),
			deletedThrough: uint64(q.ColumnInt64(1)),
			tombstoned:     q.ColumnInt64(2) != 0,
		}
	}
	err := q.Err()
	if rerr := q.Reset(); err == nil {
		err = rerr
	}
	return st, err
}

// undoError marks an error after which the append may have written part of
// itself (a storage error, or a later event's ID found stored when inserting
// it): the group commit rolls back and goes on without that append, a Tx rolls
// back to its savepoint. Other errors (conflicts, retries that do not match,
// deleted streams) are found before anything is written. apply returns it as
// it is, never wrapped.
type undoError struct{ err error }

func (e undoError) Error() string { return e.err.Error() }
func (e undoError) Unwrap() error { return e.err }

// apply runs one append inside the open write transaction: the version check,
// the inserts, the stream's new version; and, when the version check refuses
// the append or the first insert finds its ID stored, the idempotency check,
// whose verdict comes first (a retry is recognised whatever the expected
// version). A domain error (conflict, duplicate, deleted stream) leaves the
// transaction untouched; an undoError may leave part of the append written,
// so the caller must roll back (to a savepoint).
//
// Three statements serve an append of one event in the common case: the
// stream's row, the insert, the stream's new version. The ID lookup runs only
// when something is wrong, since the unique index on IDs rejects a stored
// first ID anyway.
func (s *writeStmts) apply(stream string, events []recado.Event,
	expected eventstore.ExpectedVersion, now int64) (eventstore.AppendResult, error) {
	var res eventstore.AppendResult
	st, err := loadStream(s.stream, stream)
	if err != nil {
		return res, undoError{fmt.Errorf("sqlite: append to %q: %w", stream, err)}
	}
	refused := expected.Check(stream, st.version, st.exists())
	if st.tombstoned {
		refused = fmt.Errorf("sqlite: append to %q: %w", stream, eventstore.ErrStreamDeleted)
	}
	if refused != nil {
		first, found, err := s.lookupID(events[0].ID)
		switch {
		case err != nil:
			return res, undoError{fmt.Errorf("sqlite: append to %q: %w", stream, err)}
		case found:
			return s.retried(stream, events, first)
		}
		return res, refused
	}
	for i := range events {
		e := &events[i]
		t := now
		if !e.Time.IsZero() {
			t = e.Time.UnixMicro()
		}
		if err := s.insertEvent(e, stream, st.version+uint64(i)+1, t); err != nil {
			if !strings.Contains(err.Error(), "recado_events.id") {
				return res, undoError{fmt.Errorf("sqlite: append to %q: insert event %s: %w", stream, e.ID, err)}
			}
			if i == 0 { // nothing written yet: a retry, or a plain duplicate
				first, found, lerr := s.lookupID(e.ID)
				if lerr == nil && found {
					return s.retried(stream, events, first)
				}
			}
			return res, undoError{s.duplicateLater(stream, e.ID, i)}
		}
		pos := recado.NewPosition(uint64(s.conn.LastInsertRowID()), 0)
		if i == 0 {
			res.FirstPosition = pos
		}
		res.LastPosition = pos
	}
	res.FirstVersion = st.version + 1
	res.LastVersion = st.version + uint64(len(events))
	q := s.setVersion
	err = firstErr(q.BindText(1, stream), q.BindInt64(2, int64(res.LastVersion)))
	if err == nil {
		err = q.Exec()
	}
	if err != nil {
		return res, undoError{fmt.Errorf("sqlite: append to %q: %w", stream, err)}
	}
	return res, nil
}

// insertEvent inserts one event row.
func (s *writeStmts) insertEvent(e *recado.Event, stream string, version uint64, t int64) error {
	s.meta = e.Metadata.AppendJSON(s.meta[:0])
	meta := s.meta
	if len(meta) == 0 {
		meta = nil // NULL: no metadata
	}
	q := s.insert
	err := firstErr(q.BindText(1, e.ID), q.BindText(2, stream), q.BindInt64(3, int64(version)),
		q.BindText(4, e.Type), q.BindBlob(5, e.Data), q.BindBlob(6, meta), q.BindInt64(7, t))
	if err != nil {
		return err
	}
	return q.Exec()
}

// firstErr returns the first non-nil error, for a run of Bind calls.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// storedEvent is what the idempotency check reads of a stored event.
type storedEvent struct {
	pos     int64
	stream  string
	version uint64
	typ     string
	data    []byte
}

func (s *writeStmts) lookupID(id string) (storedEvent, bool, error) {
	q := s.byID
	var e storedEvent
	if err := q.BindText(1, id); err != nil {
		return e, false, err
	}
	found := q.Step()
	if found {
		e = storedEvent{
			pos:     q.ColumnInt64(0),
			stream:  q.ColumnText(1),
			version: uint64(q.ColumnInt64(2)),
			typ:     q.ColumnText(3),
			data:    q.ColumnBlob(4, nil),
		}
	}
	err := q.Err()
	if rerr := q.Reset(); err == nil {
		err = rerr
	}
	return e, found && err == nil, err
}

// retried checks an append whose first event ID is stored: it is a retry when
// every event matches a stored one, in order, and then returns the original
// result.
func (s *writeStmts) retried(stream string, events []recado.Event, first storedEvent) (eventstore.AppendResult, error) {
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
			if got, found, err = s.lookupID(e.ID); err != nil {
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
func (s *writeStmts) duplicateLater(stream, id string, i int) error {
	got, found, err := s.lookupID(id)
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
		// join this batch. Yield the processor first: the appenders the last
		// commit answered are runnable, and letting them send their next
		// append now makes one commit of what would otherwise be a small
		// commit followed by a large one. (No timer: with nobody else
		// runnable, Gosched returns at once.)
		runtime.Gosched()
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
	now := time.Now().UnixMicro()
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
// Each request's own result or domain error is left in r.res and r.err. The
// batch is never cut short: callers give up alone.
func (db *DB) tryBatch(batch []*appendReq, now int64) (failed int, err error) {
	failed = -1
	err = db.onWriter(func(w *writeStmts) error {
		if err := w.begin.Exec(); err != nil {
			return err
		}
		for i, r := range batch {
			r.res, r.err = w.apply(r.stream, r.events, r.expected, now)
			if se, ok := r.err.(undoError); ok {
				db.rollback(w)
				failed = i
				return se.err
			}
		}
		if err := w.commit.Exec(); err != nil {
			db.rollback(w)
			return err
		}
		return nil
	})
	return failed, err
}

// rollback rolls back the writer's transaction, if SQLite has not already.
func (db *DB) rollback(w *writeStmts) {
	if !w.inTx() {
		return
	}
	if err := w.rollback.Exec(); err != nil {
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
