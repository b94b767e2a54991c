package sqlite

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
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
	softDelete, tombstone          *sqlite3.Stmt
	meta                           []byte    // scratch for encoded metadata
	cache                          stmtCache // the other stores' statements
}

func prepareWrite(c *sqlite3.Conn) (*writeStmts, error) {
	s := &writeStmts{conn: c, cache: stmtCache{conn: c}}
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
		{&s.softDelete, "UPDATE recado_streams SET deleted_through = version WHERE name = ?"},
		{&s.tombstone, `INSERT INTO recado_streams (name, version, tombstoned) VALUES (?, 0, 1)
ON CONFLICT (name) DO UPDATE SET tombstoned = 1`},
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *writeStmts) close() error {
	return errors.Join(closeStmts(s.begin, s.commit, s.rollback, s.savepoint, s.rollbackTo, s.release,
		s.byID, s.stream, s.insert, s.setVersion, s.softDelete, s.tombstone), s.cache.close())
}

// inTx reports whether the connection is inside a transaction: after some
// errors SQLite has already rolled it back.
func (s *writeStmts) inTx() bool { return !s.conn.GetAutocommit() }

// loadStream reads a stream's row with q (the same query on the writer and on
// the readers); a stream without a row is the zero state.
func loadStream(q *sqlite3.Stmt, stream string) (driver.State, error) {
	var st driver.State
	if err := q.BindText(1, stream); err != nil {
		return st, err
	}
	if q.Step() {
		st = driver.State{
			Version:    uint64(q.ColumnInt64(0)),
			Start:      uint64(q.ColumnInt64(1)),
			Tombstoned: q.ColumnInt64(2) != 0,
		}
	}
	err := q.Err()
	if rerr := q.Reset(); err == nil {
		err = rerr
	}
	return st, err
}

// errPartial: an insert found an event's ID stored after earlier events of
// the same request were inserted. The caller undoes the request's writes (the
// group commit rolls back and runs the group again, a unit of work rolls back
// to its savepoint) and applies it again with lookup set.
var errPartial = errors.New("an event ID of the append is stored, found after part of the append was written")

// apply decides r inside the open write transaction and, when r.Decide says
// so, stores its events. The decision's outcome is in r; the error is a
// storage error (or errPartial), after which part of r may have been written
// and the caller must undo it.
//
// The facts Decide needs are the stream's row and the stored events that
// share an ID with r. Looking up every ID would cost a query per event, so on
// the common path only the stream's row is read, and the unique index on IDs
// tells whether an ID is stored: an insert that finds one stops, and the IDs
// are then looked up and the request decided again on all the facts. The IDs
// are also looked up when the version or a tombstone refuses r, since a
// stored ID (a retry) decides first. With lookup set, they are looked up
// before deciding. So three statements serve an append of one event in the
// common case: the stream's row, the insert, the stream's new version.
func (s *writeStmts) apply(r *driver.Request, lookup bool) error {
	st, err := loadStream(s.stream, r.Stream)
	if err != nil {
		return err
	}
	var stored []driver.Stored
	if lookup {
		if stored, err = s.storedIDs(r); err != nil {
			return err
		}
	}
	if !r.Decide(st, stored) {
		if lookup || (r.Outcome != driver.Conflict && r.Outcome != driver.Deleted) {
			return nil
		}
		if stored, err = s.storedIDs(r); err != nil || len(stored) == 0 {
			return err
		}
		r.Decide(st, stored)
		return nil
	}
	for i := range r.Events {
		e := &r.Events[i]
		version := r.FirstVersion + uint64(i)
		if err := s.insertEvent(e, r.Stream, version); err != nil {
			switch {
			case !isIDTaken(err):
				return fmt.Errorf("insert event %s: %w", e.ID, err)
			case lookup: // the lookup found no stored ID: the database changed under us
				return fmt.Errorf("insert event %s: %w, although its ID was not found stored just before", e.ID, err)
			case i > 0:
				return errPartial
			}
			return s.apply(r, true) // nothing written yet
		}
		e.Stream, e.Version = r.Stream, version
		e.Position = recado.NewPosition(uint64(s.conn.LastInsertRowID()), 0)
	}
	r.FirstPosition, r.LastPosition = r.Events[0].Position, r.Events[len(r.Events)-1].Position
	q := s.setVersion
	err = firstErr(q.BindText(1, r.Stream), q.BindInt64(2, int64(r.LastVersion)))
	if err == nil {
		err = q.Exec()
	}
	return err
}

// isIDTaken reports whether err is the unique index on event IDs refusing an
// insert.
func isIDTaken(err error) bool {
	return errors.Is(err, sqlite3.CONSTRAINT_UNIQUE) && strings.Contains(err.Error(), "recado_events.id")
}

// insertEvent inserts one event row.
func (s *writeStmts) insertEvent(e *recado.Event, stream string, version uint64) error {
	s.meta = e.Metadata.AppendJSON(s.meta[:0])
	meta := s.meta
	if len(meta) == 0 {
		meta = nil // NULL: no metadata
	}
	q := s.insert
	err := firstErr(q.BindText(1, e.ID), q.BindText(2, stream), q.BindInt64(3, int64(version)),
		q.BindText(4, e.Type), q.BindBlob(5, e.Data), q.BindBlob(6, meta), q.BindInt64(7, e.Time.UnixMicro()))
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

// storedIDs returns the stored events whose IDs are among r's.
func (s *writeStmts) storedIDs(r *driver.Request) ([]driver.Stored, error) {
	var stored []driver.Stored
	q := s.byID
	for i := range r.Events {
		id := r.Events[i].ID
		if err := q.BindText(1, id); err != nil {
			return nil, err
		}
		if q.Step() {
			stored = append(stored, driver.Stored{
				ID:       id,
				Position: recado.NewPosition(uint64(q.ColumnInt64(0)), 0),
				Stream:   q.ColumnText(1),
				Version:  uint64(q.ColumnInt64(2)),
				Type:     q.ColumnText(3),
				Data:     q.ColumnBlob(4, nil),
			})
		}
		err := q.Err()
		if rerr := q.Reset(); err == nil {
			err = rerr
		}
		if err != nil {
			return nil, err
		}
	}
	return stored, nil
}

// delete decides the delete r inside the open write transaction and applies
// it when r.DecideDelete says so.
func (s *writeStmts) delete(r *driver.Request) error {
	st, err := loadStream(s.stream, r.Stream)
	if err != nil || !r.DecideDelete(st) {
		return err
	}
	q := s.softDelete
	if r.Tombstone {
		q = s.tombstone
	}
	if err := q.BindText(1, r.Stream); err != nil {
		return err
	}
	return q.Exec()
}

// applyInTx runs apply inside a unit of work, under a savepoint so that an
// append that fails leaves nothing of itself in the transaction.
func (s *writeStmts) applyInTx(r *driver.Request) error {
	if err := s.savepoint.Exec(); err != nil {
		return err
	}
	err := s.apply(r, false)
	if err == errPartial {
		if err = s.rollbackTo.Exec(); err == nil {
			err = s.apply(r, true)
		}
	}
	if err != nil {
		r.Reset()      // nothing was decided that holds
		if !s.inTx() { // SQLite rolled everything back: no savepoint left
			return err
		}
		if rbErr := s.rollbackTo.Exec(); rbErr != nil {
			err = errors.Join(err, fmt.Errorf("roll back the failed append: %w", rbErr))
		}
	}
	if relErr := s.release.Exec(); relErr != nil && err == nil {
		err = relErr
	}
	return err
}

// Request states: the writer takes a pending request; a caller whose context
// ends abandons it if the writer has not taken it yet.
const (
	reqPending int32 = iota
	reqTaken
	reqAbandoned
)

// appendReq is one write waiting for group commit: an append of events (r),
// or a write of another store of the DB (op).
type appendReq struct {
	r *driver.Request
	// op, when r is nil, runs the write on the writer inside the group's
	// transaction. It may run more than once (the group runs again when a
	// write of it fails), each time on the state the writes before it left:
	// it must decide afresh each time, as Request.Decide does.
	op     func(w *writeStmts) error
	state  atomic.Int32
	lookup bool          // look the IDs up before deciding (see errPartial)
	err    error         // the storage error of r or op, or of its group's transaction
	done   chan struct{} // receives once r is decided (and committed) or err is set
}

// reset forgets what a run of the group decided for q's append.
func (q *appendReq) reset() {
	if q.r != nil {
		q.r.Reset()
	}
}

// appendReqs recycles the requests of group commit, each with its channel. A
// request goes back only once its caller has received its answer: one that
// was abandoned, or whose caller gave up waiting, may still be in the
// writer's hands and is left to the garbage collector.
var appendReqs = sync.Pool{New: func() any { return &appendReq{done: make(chan struct{}, 1)} }}

func (q *appendReq) reply(err error) {
	q.err = err
	q.done <- struct{}{}
}

// send puts q in the writer's queue, pending, unless ctx ends or the DB
// closes first. On an error q is recycled.
func (db *DB) send(ctx context.Context, q *appendReq) error {
	if err := ctx.Err(); err != nil {
		return q.recycle(err)
	}
	q.state.Store(reqPending)
	db.waiting.Add(1)
	select {
	case db.queue <- q:
		return nil
	case <-ctx.Done():
		db.waiting.Add(-1)
		return q.recycle(ctx.Err())
	case <-db.closing:
		db.waiting.Add(-1)
		return q.recycle(driver.ErrClosed)
	}
}

// groupWrite runs op, a write of one of the DB's stores outside any unit of
// work, in the next group commit, and returns once that has committed (or
// failed). A caller whose ctx ends before the writer takes op gets ctx's
// error and op never runs; once taken, op's group runs to its end (a few
// statements, or the busy timeout while another process holds the file's
// lock) and groupWrite waits for it: the caller learns the outcome, which a
// store's contract has no "unknown" for.
func (db *DB) groupWrite(ctx context.Context, op func(w *writeStmts) error) error {
	q := appendReqs.Get().(*appendReq)
	q.op = op
	if err := db.send(ctx, q); err != nil {
		return err
	}
	select {
	case <-q.done:
		return q.recycle(q.err)
	case <-ctx.Done():
	case <-db.done:
	}
	if q.state.CompareAndSwap(reqPending, reqAbandoned) {
		db.waiting.Add(-1)
		if ctx.Err() != nil {
			return ctx.Err() // never sent to the database
		}
		return driver.ErrClosed
	}
	<-q.done
	return q.recycle(q.err)
}

// groupAppend sends r to the writer and waits until it is committed.
func (db *DB) groupAppend(ctx context.Context, r *driver.Request) error {
	q := appendReqs.Get().(*appendReq)
	q.r = r
	if err := db.send(ctx, q); err != nil {
		return err
	}
	select {
	case <-q.done:
		return q.recycle(q.err)
	case <-ctx.Done():
		if q.state.CompareAndSwap(reqPending, reqAbandoned) {
			db.waiting.Add(-1)
			return ctx.Err() // never sent to the database
		}
		select {
		case <-q.done:
			return q.recycle(q.err)
		default:
			return fmt.Errorf("%w: %w", driver.ErrUnknownOutcome, ctx.Err())
		}
	case <-db.done:
		if q.state.CompareAndSwap(reqPending, reqAbandoned) {
			db.waiting.Add(-1)
			return driver.ErrClosed
		}
		<-q.done
		return q.recycle(q.err)
	}
}

// recycle puts q back in the pool, once nothing else holds it, and returns
// err.
func (q *appendReq) recycle(err error) error {
	q.r, q.op, q.err, q.lookup = nil, nil, nil, false
	appendReqs.Put(q)
	return err
}

// writer is the goroutine that owns group commit: it takes every waiting
// append (up to MaxBatch), runs them in one transaction and commits once.
// While idle it wakes subscribers every PollInterval, so that they read the
// log again and find what other processes committed to the file.
func (db *DB) writer() {
	defer close(db.done)
	poll := time.NewTicker(db.opts.PollInterval)
	defer poll.Stop()
	waiting := make([]*appendReq, 0, db.opts.MaxBatch)
	batch := make([]*appendReq, 0, db.opts.MaxBatch)
	for {
		waiting = waiting[:0]
		select {
		case <-db.closing:
			db.drain(nil)
			return
		case <-poll.C:
			db.signal.Notify()
			continue
		case q := <-db.queue:
			waiting = append(waiting, q)
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
			case q := <-db.queue:
				waiting = append(waiting, q)
			default:
				break gather
			}
		}
		// Only now is a request taken: a caller that gave up while a Tx held
		// the lock gets its plain ctx error.
		batch = batch[:0]
		for _, q := range waiting {
			if q.state.CompareAndSwap(reqPending, reqTaken) {
				db.waiting.Add(-1)
				batch = append(batch, q)
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
	fail := func(q *appendReq) {
		if q.state.CompareAndSwap(reqPending, reqTaken) {
			db.waiting.Add(-1)
			q.reply(driver.ErrClosed)
		}
	}
	for _, q := range waiting {
		fail(q)
	}
	for {
		select {
		case q := <-db.queue:
			fail(q)
		default:
			return
		}
	}
}

// commitBatch commits the batch's writes (appends, and the other stores'
// writes) in one transaction, each decided in queue order on the state the
// ones before it left, and replies to each. A write that meets a storage
// error fails alone: the transaction is rolled back and run again without it.
func (db *DB) commitBatch(batch []*appendReq) {
	for len(batch) > 0 {
		failed, err := db.tryBatch(batch)
		switch {
		case err == nil:
			db.committed(batch)
			return
		case failed < 0: // the transaction itself failed: everyone gets the error
			db.log.Error("sqlite: group commit failed", "path", db.path, "appends", len(batch), "err", err)
			for _, q := range batch {
				q.reset()
				q.reply(fmt.Errorf("group commit: %w", err))
			}
			return
		case err == errPartial: // run the group again, that append looking its IDs up first
			batch[failed].lookup = true
		default:
			batch[failed].reset()
			batch[failed].reply(err)
			batch = append(batch[:failed], batch[failed+1:]...)
		}
	}
}

// tryBatch runs the batch in one transaction. It returns the index of an
// append that met a storage error or errPartial (the transaction is then
// rolled back), or -1 with the error of the transaction itself, or -1 and nil
// once committed. The batch is never cut short: callers give up alone.
func (db *DB) tryBatch(batch []*appendReq) (failed int, err error) {
	failed = -1
	err = db.onWriter(func(w *writeStmts) error {
		if err := w.begin.Exec(); err != nil {
			return err
		}
		for i, q := range batch {
			var err error
			if q.op != nil {
				err = q.op(w)
			} else {
				err = w.apply(q.r, q.lookup)
			}
			if err != nil {
				db.rollback(w)
				failed = i
				return err
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
	for _, q := range batch {
		if q.r != nil && q.r.Outcome == driver.Written {
			appends++
			events += uint64(len(q.r.Events))
		}
	}
	if appends > 0 {
		db.stats.commits.Add(1)
		db.stats.appends.Add(appends)
		db.stats.events.Add(events)
		db.signal.Notify()
	}
	for _, q := range batch {
		q.reply(nil)
	}
}
