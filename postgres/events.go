package postgres

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// eventDriver is the event store of a [DB], as a [driver.Driver]: it stores
// and reads events, and it decides appends and deletes with
// [driver.Request.Decide] and [driver.Request.DecideDelete] inside the
// transaction that writes them.
type eventDriver struct {
	driver.Signal
	db    *DB
	w     *writer
	hooks testHooks // set by tests only, before use
	// heldByUnit: a ReadAll stopped short of events a unit of work of this
	// DB held back; its end wakes subscribers.
	heldByUnit atomic.Bool
}

var _ driver.Driver = (*eventDriver)(nil)

const (
	readAllFirstPage = 512
	readAllMaxPage   = 8192
	readStreamPage   = 500
)

func newEvents(db *DB) *eventDriver {
	e := &eventDriver{db: db}
	e.w = &writer{e: e, reqs: make(chan *appendReq), stop: make(chan struct{})}
	e.w.park.init()
	return e
}

// errClosed is the error of every call after Close.
func errClosed() error { return fmt.Errorf("%w: the postgres DB is closed", driver.ErrClosed) }

// Close closes the DB.
func (e *eventDriver) Close() error { return e.db.Close() }

// Append implements [driver.Driver.Append]. Concurrent appends share a commit
// (group commit); an append with r.Tx set joins that unit of work instead.
//
// The writer decides and writes its own copy of r, so that an append whose
// caller gave up leaves r alone; r gets the copy back once it is decided and
// committed. The events (the front's copies) are shared: the writer sets
// their Stream, Version and Position.
func (e *eventDriver) Append(ctx context.Context, r *driver.Request) error {
	if e.db.closed.Load() {
		return errClosed()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.Tx != nil {
		tx, err := e.db.unit(r.Tx)
		if err != nil {
			return err
		}
		return e.appendInTx(ctx, tx, r)
	}
	a := &appendReq{own: *r, done: make(chan error, 1)}
	a.r = &a.own
	select {
	case e.w.reqs <- a:
	case <-ctx.Done():
		return ctx.Err()
	case <-e.w.stop:
		return errClosed()
	}
	select {
	case err := <-a.done:
		return a.answer(r, err)
	case <-ctx.Done():
		if a.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return ctx.Err()
		}
		select {
		case err := <-a.done:
			return a.answer(r, err)
		default:
			return fmt.Errorf("%w: %w", driver.ErrUnknownOutcome, ctx.Err())
		}
	}
}

// answer hands the writer's decision back to the caller's request.
func (a *appendReq) answer(r *driver.Request, err error) error {
	if err == nil {
		*r = a.own
	}
	return err
}

func (e *eventDriver) appendInTx(ctx context.Context, tx *Tx, r *driver.Request) error {
	e.w.cache.forget(r.Stream)
	a := &appendReq{r: r}
	var err error
	for range maxCommitAttempts {
		_, err = e.execute(ctx, tx, []*appendReq{a}, &batchBuf{}, true)
		tx.hold(r.Stream)
		if !errors.Is(err, errRaced) {
			break
		}
	}
	if err != nil {
		r.Reset()
		return fmt.Errorf("postgres: in a unit of work: %w", err)
	}
	if r.Outcome == driver.Written {
		tx.appended = true
	}
	return nil
}

// State implements [driver.Driver.State]: the stream's row, read (not locked)
// in tx if given, on the pool otherwise.
func (e *eventDriver) State(ctx context.Context, stream string, tx recado.Tx) (driver.State, error) {
	if e.db.closed.Load() {
		return driver.State{}, errClosed()
	}
	var q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	} = e.db.pool
	if tx != nil {
		unit, err := e.db.unit(tx)
		if err != nil {
			return driver.State{}, err
		}
		q = unit.tx
	}
	var version, deleted int64
	var st driver.State
	err := q.QueryRow(ctx, e.db.q.streamState, stream).Scan(&version, &deleted, &st.Tombstoned)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return driver.State{}, nil
	case err != nil:
		if e.db.closed.Load() {
			return driver.State{}, errClosed()
		}
		return driver.State{}, fmt.Errorf("postgres: %w", err)
	}
	st.Version, st.Start = uint64(version), uint64(deleted)
	return st, nil
}

// ReadAll implements [driver.Driver.ReadAll].
//
// It reads only events below the horizon, the oldest transaction still
// running in the database; when events committed before the read started lie
// beyond it (a transaction that began earlier is still open), the read waits
// for the horizon to pass them before it ends, so it never returns fewer
// events than were committed when it started. It does not wait for a unit of
// work of this DB ([DB.Tx]) that holds the horizon: the read may be running
// inside it, and would wait for itself. It then ends with what is readable;
// resuming after its last event later is safe.
//
// The log is read in pages; while the caller handles one page, the next is
// fetched. No connection is held while the caller's loop body runs.
func (e *eventDriver) ReadAll(ctx context.Context, after recado.Position, o driver.Read) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		if err := e.readable(ctx); err != nil {
			yield(recado.Event{}, err)
			return
		}
		r := &allReader{e: e, backwards: o.Backwards, remaining: o.Limit, target: -1, page: readAllFirstPage}
		major, seq := after.Parts()
		r.cur = [2]int64{clampInt64(major), clampInt64(seq)}
		if o.Backwards && after.IsZero() {
			r.cur = [2]int64{math.MaxInt64, math.MaxInt64}
		}
		if err := r.start(ctx); err != nil {
			yield(recado.Event{}, err)
			return
		}
		p, spare := &page{}, &page{}
		err := r.fetch(ctx, p, r.cur, r.pageSize(), !o.Backwards)
		for {
			if err != nil {
				yield(recado.Event{}, fmt.Errorf("postgres: reading a page of the log: %w", err))
				return
			}
			n := r.pageSize()
			got := p.rows()
			r.advance(p)
			var next chan error
			if got == n && r.remaining >= 0 {
				// A full page: fetch the next one while this one is decoded and
				// handled.
				r.page = min(2*r.page, readAllMaxPage)
				next = make(chan error, 1)
				go func(q *page, cur [2]int64, n int) { next <- r.fetch(ctx, q, cur, n, false) }(spare, r.cur, r.pageSize())
			}
			if err := p.decode(); err != nil {
				if next != nil {
					<-next
				}
				yield(recado.Event{}, err)
				return
			}
			for i := range p.events {
				if !yield(p.events[i], nil) {
					if next != nil {
						<-next
					}
					return
				}
			}
			if next != nil {
				err = <-next
				p, spare = spare, p
				continue
			}
			if r.remaining < 0 || r.target < 0 || o.Backwards {
				return
			}
			// The end of what is readable, but events committed before the
			// read started lie beyond the horizon: wait for it, read on.
			if err := e.waitHorizon(ctx, r.target); err != nil {
				yield(recado.Event{}, err)
				return
			}
			r.target = -1
			err = r.fetch(ctx, p, r.cur, r.pageSize(), false)
		}
	}
}

// allReader is the state of one ReadAll.
type allReader struct {
	e         *eventDriver
	backwards bool
	cur       [2]int64 // the position to read after (before, backwards)
	remaining int      // events still wanted: 0 is no limit, -1 is done
	target    int64    // while >= 0, the newest major committed at the start, not yet below the horizon
	page      int      // the page size, growing from readAllFirstPage to readAllMaxPage
}

// pageSize is the size of the next page: it starts small, for the short
// reads of a live subscription, and doubles with every full page, so a long
// read pays few round trips.
func (r *allReader) pageSize() int {
	n := r.page
	if r.remaining > 0 && r.remaining < n {
		return r.remaining
	}
	return n
}

// start reads the horizon. A backwards read from the end first waits until
// everything committed before it started is readable.
func (r *allReader) start(ctx context.Context) error {
	if !r.backwards {
		return nil // the horizon comes with the first page
	}
	b := &pgx.Batch{}
	r.queueHorizon(b)
	if err := r.e.sendBatch(ctx, b); err != nil {
		return fmt.Errorf("postgres: reading the horizon: %w", err)
	}
	if r.target >= 0 {
		if err := r.e.waitHorizon(ctx, min(r.target, r.cur[0])); err != nil {
			return err
		}
		r.target = -1
	}
	return nil
}

func (r *allReader) queueHorizon(b *pgx.Batch) {
	b.Queue(r.e.db.q.horizon).QueryRow(func(row pgx.Row) error {
		var xmin, newest int64
		if err := row.Scan(&xmin, &newest); err != nil {
			return err
		}
		if newest >= xmin {
			r.target = newest
		}
		return nil
	})
}

// fetch reads the page of n events after cur into p, with the horizon first
// if withHorizon.
func (r *allReader) fetch(ctx context.Context, p *page, cur [2]int64, n int, withHorizon bool) error {
	q := r.e.db.q.readAll
	if r.backwards {
		q = r.e.db.q.readAllBack
	}
	b := &pgx.Batch{}
	if withHorizon {
		r.queueHorizon(b)
	}
	b.Queue(q, cur[0], cur[1], n).Query(func(rs pgx.Rows) error {
		p.reset(n) // again on a retry
		return readPage(rs, p, 0)
	})
	return r.e.sendBatch(ctx, b)
}

// advance moves the reader past the rows of p.
func (r *allReader) advance(p *page) {
	k := p.rows()
	if k == 0 {
		return
	}
	major, seq := p.position(k - 1).Parts()
	r.cur = [2]int64{int64(major), int64(seq)}
	if r.remaining > 0 {
		if r.remaining -= k; r.remaining == 0 {
			r.remaining = -1
		}
	}
}

// waitHorizon waits until every transaction that could have written major has
// ended: the horizon is above major.
func (e *eventDriver) waitHorizon(ctx context.Context, major int64) error {
	delay := time.Millisecond
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		var xmin int64
		var holder int32
		q := "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, 0"
		if e.db.units.n.Load() > 0 {
			q = e.db.q.horizonHolder
		}
		err := e.retryRead(ctx, func() error { return e.db.pool.QueryRow(ctx, q).Scan(&xmin, &holder) })
		if err != nil {
			return fmt.Errorf("postgres: waiting for open transactions: %w", err)
		}
		if xmin > major {
			return nil
		}
		if e.db.units.holds(xmin, uint32(holder)) {
			// A unit of work of this DB holds the horizon, perhaps the
			// reader's own: waiting for it could be waiting forever. The read
			// ends with what is readable (it resumes safely after it), and
			// the unit of work's end wakes subscribers.
			e.heldByUnit.Store(true)
			return nil
		}
		timer.Reset(delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.db.ctx.Done():
			return errClosed()
		case <-timer.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// readable checks what every read checks first.
func (e *eventDriver) readable(ctx context.Context) error {
	if e.db.closed.Load() {
		return errClosed()
	}
	return ctx.Err()
}

// sendBatch runs b on a pooled connection, once more if the connection failed
// (a read is safe to repeat).
func (e *eventDriver) sendBatch(ctx context.Context, b *pgx.Batch) error {
	return e.retryRead(ctx, func() error { return e.db.pool.SendBatch(ctx, b).Close() })
}

func (e *eventDriver) retryRead(ctx context.Context, f func() error) error {
	err := f()
	for attempt := 1; err != nil && attempt < maxCommitAttempts && ctx.Err() == nil && connLost(err); attempt++ {
		if e.db.closed.Load() {
			return errClosed()
		}
		e.db.log.Warn("postgres: read failed, retrying", "schema", e.db.opts.Schema, "err", err)
		err = f()
	}
	if err != nil && e.db.closed.Load() {
		return errClosed()
	}
	return err
}

// readPage decodes the events of rs into p, from column off.
func readPage(rs pgx.Rows, p *page, off int) error {
	// A batch hands its callbacks the rows of a query that failed to start
	// (the connection dropped) as is: ask before touching them.
	if err := rs.Err(); err != nil {
		return err
	}
	text, err := checkFormats(rs.FieldDescriptions(), off)
	if err != nil {
		return err
	}
	for rs.Next() {
		if err := p.add(rs.RawValues(), off, text); err != nil {
			return err
		}
	}
	return rs.Err()
}

// ReadStream implements [driver.Driver.ReadStream].
func (e *eventDriver) ReadStream(ctx context.Context, stream string, o driver.Read) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		if err := e.readable(ctx); err != nil {
			yield(recado.Event{}, err)
			return
		}
		// bound is exclusive: the version before the first to read forwards,
		// after it backwards.
		var bound int64
		q := e.db.q.readStream
		if o.From > 0 {
			bound = clampInt64(o.From) - 1
		}
		if o.Backwards {
			q = e.db.q.readBack
			bound = math.MaxInt64
			if o.From > 0 && o.From < math.MaxInt64 {
				bound = int64(o.From) + 1
			}
		}
		remaining := o.Limit
		p := &page{}
		var deleted int64 // the deleted version the first page saw
		for first := true; ; first = false {
			n := readStreamPage
			if remaining > 0 && remaining < n {
				n = remaining
			}
			p.reset(n)
			var state struct {
				found            bool
				version, deleted int64
				tombstoned       bool
			}
			b := &pgx.Batch{}
			b.Queue(q, stream, bound, n).Query(func(rs pgx.Rows) error {
				if err := rs.Err(); err != nil {
					return err // see readPage
				}
				text, err := checkFormats(rs.FieldDescriptions(), 3)
				if err != nil {
					return err
				}
				for rs.Next() {
					raw := rs.RawValues()
					if !state.found {
						if err := rs.Scan(&state.version, &state.deleted, &state.tombstoned,
							nil, nil, nil, nil, nil, nil, nil, nil, nil); err != nil {
							return err
						}
						state.found = true
					}
					if raw[3] == nil {
						continue // the stream has no events in range
					}
					if err := p.add(raw, 3, text); err != nil {
						return err
					}
				}
				return rs.Err()
			})
			if err := e.sendBatch(ctx, b); err != nil {
				yield(recado.Event{}, fmt.Errorf("postgres: reading a page of the stream: %w", err))
				return
			}
			// Each page comes with the stream's state of its own snapshot. A
			// stream deleted since the first page (and perhaps written again)
			// ends the read with the error the first page would have given.
			during := ""
			if !first {
				during = " while it was read"
			}
			switch {
			case state.tombstoned:
				yield(recado.Event{}, fmt.Errorf("%w: tombstoned%s", driver.ErrStreamDeleted, during))
				return
			case !state.found || state.version == 0:
				yield(recado.Event{}, fmt.Errorf("%w: no events%s", driver.ErrStreamNotFound, during))
				return
			case first && state.version <= state.deleted, !first && state.deleted != deleted:
				yield(recado.Event{}, fmt.Errorf("%w: soft-deleted at version %d%s", driver.ErrStreamNotFound, state.deleted, during))
				return
			}
			deleted = state.deleted
			if err := p.decode(); err != nil {
				yield(recado.Event{}, err)
				return
			}
			for i := range p.events {
				if !yield(p.events[i], nil) {
					return
				}
			}
			k := len(p.events)
			if k < n {
				return
			}
			bound = int64(p.events[k-1].Version)
			if remaining > 0 {
				if remaining -= k; remaining == 0 {
					return
				}
			}
		}
	}
}

// Delete implements [driver.Driver.Delete]: it locks the stream's row (making
// one if the stream has none), lets r.DecideDelete decide on its state, and
// marks the row soft-deleted or tombstoned: in r.Tx if set, in a short
// transaction of its own otherwise (rolled back when nothing is to be done).
func (e *eventDriver) Delete(ctx context.Context, r *driver.Request) error {
	if e.db.closed.Load() {
		return errClosed()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	run := func(tx pgx.Tx) error {
		var version, deleted int64
		var st driver.State
		if err := tx.QueryRow(ctx, e.db.q.lockStream, r.Stream).Scan(&version, &deleted, &st.Tombstoned); err != nil {
			return fmt.Errorf("postgres: lock the stream's row: %w", err)
		}
		st.Version, st.Start = uint64(version), uint64(deleted)
		if !r.DecideDelete(st) {
			return errNothingToDo
		}
		update := e.db.q.setDeleted
		if r.Tombstone {
			update = e.db.q.setTomb
		}
		if _, err := tx.Exec(ctx, update, r.Stream); err != nil {
			r.Reset()
			return fmt.Errorf("postgres: mark the stream deleted: %w", err)
		}
		return nil
	}
	e.w.cache.forget(r.Stream)
	if r.Tx != nil {
		tx, err := e.db.unit(r.Tx)
		if err != nil {
			return err
		}
		defer tx.hold(r.Stream)
		if err := run(tx.tx); err != nil && err != errNothingToDo {
			return fmt.Errorf("postgres: in a unit of work: %w", err)
		}
		return nil
	}
	err := pgx.BeginTxFunc(ctx, e.db.pool, ownTxOptions, run)
	switch {
	case err == nil, err == errNothingToDo:
		return nil
	case e.db.closed.Load():
		r.Reset()
		return fmt.Errorf("%w (%w)", driver.ErrClosed, err)
	}
	r.Reset()
	return err
}

// errNothingToDo rolls back a delete that r.DecideDelete refused.
var errNothingToDo = errors.New("postgres: nothing to delete")
