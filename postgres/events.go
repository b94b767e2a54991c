package postgres

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// EventStore is the event store of a [DB]: an [eventstore.Store] that is also an
// [eventstore.Notifier], [eventstore.Subscriber] and [eventstore.Deleter].
type EventStore struct {
	eventstore.Signal
	db    *DB
	w     *writer
	hooks testHooks // set by tests only, before use
	// heldByUnit: a ReadAll stopped short of events a unit of work of this
	// DB held back; its end wakes subscribers.
	heldByUnit atomic.Bool
}

var (
	_ eventstore.Store      = (*EventStore)(nil)
	_ eventstore.Notifier   = (*EventStore)(nil)
	_ eventstore.Subscriber = (*EventStore)(nil)
	_ eventstore.Deleter    = (*EventStore)(nil)
)

const (
	readAllFirstPage = 512
	readAllMaxPage   = 8192
	readStreamPage   = 500
)

func newEvents(db *DB) *EventStore {
	e := &EventStore{db: db}
	e.w = &writer{e: e, reqs: make(chan *appendReq), stop: make(chan struct{})}
	e.w.park.init()
	return e
}

// Append implements [eventstore.Store.Append]. Concurrent appends share a
// commit (group commit); an append with [eventstore.InTx] joins the caller's
// [Tx] instead.
func (e *EventStore) Append(ctx context.Context, stream string, events []recado.Event, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	o := eventstore.NewAppendOptions(opts...)
	if e.db.closed.Load() {
		return eventstore.AppendResult{}, e.db.errClosed("append to " + stream)
	}
	if err := eventstore.ValidateAppend(stream, events, o); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	r := &appendReq{stream: stream, events: slices.Clone(events), expected: o.Expected, done: make(chan appendOutcome, 1)}
	if o.Tx != nil {
		tx, ok := o.Tx.(*Tx)
		if !ok {
			return eventstore.AppendResult{}, fmt.Errorf("%w: append to %q: InTx given a %T, want a *postgres.Tx",
				eventstore.ErrInvalid, stream, o.Tx)
		}
		if err := tx.usable(e.db, "append to "+stream); err != nil {
			return eventstore.AppendResult{}, err
		}
		return e.appendInTx(ctx, tx, r)
	}
	select {
	case e.w.reqs <- r:
	case <-ctx.Done():
		return eventstore.AppendResult{}, ctx.Err()
	case <-e.w.stop:
		return eventstore.AppendResult{}, e.db.errClosed("append to " + stream)
	}
	select {
	case out := <-r.done:
		return out.res, out.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return eventstore.AppendResult{}, ctx.Err()
		}
		select {
		case out := <-r.done:
			return out.res, out.err
		default:
			return eventstore.AppendResult{}, eventstore.UnknownOutcome(stream, ctx.Err())
		}
	}
}

func (e *EventStore) appendInTx(ctx context.Context, tx *Tx, r *appendReq) (eventstore.AppendResult, error) {
	var out []appendOutcome
	var err error
	for range maxCommitAttempts {
		out, _, err = e.execute(ctx, tx, []*appendReq{r}, &batchBuf{}, true)
		tx.hold(r.stream)
		if !errors.Is(err, errRaced) {
			break
		}
	}
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q in a unit of work: %w", r.stream, err)
	}
	if out[0].err == nil && !out[0].res.Duplicate {
		tx.appended = true
	}
	return out[0].res, out[0].err
}

// Subscribe implements [eventstore.Subscriber]: [eventstore.Poll] woken by
// LISTEN/NOTIFY, polling every Options.PollInterval (unless opts say
// otherwise) in case a notification is lost.
func (e *EventStore) Subscribe(ctx context.Context, after recado.Position, opts ...eventstore.SubscribeOption) iter.Seq2[eventstore.Message, error] {
	all := append([]eventstore.SubscribeOption{eventstore.WithPollInterval(e.db.opts.PollInterval)}, opts...)
	return eventstore.Poll(ctx, e, after, all...)
}

// ReadAll implements [eventstore.Store.ReadAll].
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
func (e *EventStore) ReadAll(ctx context.Context, after recado.Position, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := e.readable(ctx, o); err != nil {
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
				yield(recado.Event{}, fmt.Errorf("postgres: read all after %s: %w", after, err))
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
	e         *EventStore
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
		return fmt.Errorf("postgres: read all: %w", err)
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
func (e *EventStore) waitHorizon(ctx context.Context, major int64) error {
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
			return fmt.Errorf("postgres: read all: wait for open transactions: %w", err)
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
			return e.db.errClosed("read all")
		case <-timer.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// readable checks what every read checks first.
func (e *EventStore) readable(ctx context.Context, o eventstore.ReadOptions) error {
	if e.db.closed.Load() {
		return e.db.errClosed("read")
	}
	if err := o.Validate(); err != nil {
		return err
	}
	return ctx.Err()
}

// sendBatch runs b on a pooled connection, once more if the connection failed
// (a read is safe to repeat).
func (e *EventStore) sendBatch(ctx context.Context, b *pgx.Batch) error {
	return e.retryRead(ctx, func() error { return e.db.pool.SendBatch(ctx, b).Close() })
}

func (e *EventStore) retryRead(ctx context.Context, f func() error) error {
	err := f()
	for attempt := 1; err != nil && attempt < maxCommitAttempts && ctx.Err() == nil && connLost(err); attempt++ {
		if e.db.closed.Load() {
			return e.db.errClosed("read")
		}
		e.db.log.Warn("postgres: read failed, retrying", "schema", e.db.opts.Schema, "err", err)
		err = f()
	}
	if err != nil && e.db.closed.Load() {
		return e.db.errClosed("read")
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

// ReadStream implements [eventstore.Store.ReadStream].
func (e *EventStore) ReadStream(ctx context.Context, stream string, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := e.readable(ctx, o); err != nil {
			yield(recado.Event{}, err)
			return
		}
		if err := eventstore.ValidateStream(stream); err != nil {
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
				yield(recado.Event{}, fmt.Errorf("postgres: read stream %q: %w", stream, err))
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
				yield(recado.Event{}, fmt.Errorf("postgres: read stream %q: tombstoned%s: %w", stream, during, eventstore.ErrStreamDeleted))
				return
			case first && (!state.found || state.version <= state.deleted),
				!first && (!state.found || state.deleted != deleted):
				yield(recado.Event{}, fmt.Errorf("postgres: read stream %q%s: %w", stream, during, eventstore.ErrStreamNotFound))
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

// Delete implements [eventstore.Deleter.Delete]: a soft delete.
func (e *EventStore) Delete(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return e.delete(ctx, "delete", stream, opts, func(row streamRow, expected eventstore.ExpectedVersion) (string, error) {
		exists := row.version > row.deleted
		if !exists {
			return "", fmt.Errorf("postgres: delete stream %q: %w", stream, eventstore.ErrStreamNotFound)
		}
		if err := expected.Check(stream, row.version, exists); err != nil {
			return "", err
		}
		return e.db.q.setDeleted, nil
	})
}

// Tombstone implements [eventstore.Deleter.Tombstone]. A stream never written
// can be tombstoned too, to reserve its name for good.
func (e *EventStore) Tombstone(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return e.delete(ctx, "tombstone", stream, opts, func(row streamRow, expected eventstore.ExpectedVersion) (string, error) {
		if err := expected.Check(stream, row.version, row.version > row.deleted); err != nil {
			return "", err
		}
		return e.db.q.setTomb, nil
	})
}

// delete locks the stream's row, lets decide check its state, and runs the
// update decide returns: in the caller's unit of work if opts name one, in a
// short transaction of its own otherwise.
func (e *EventStore) delete(ctx context.Context, op, stream string, opts []eventstore.AppendOption,
	decide func(streamRow, eventstore.ExpectedVersion) (string, error)) error {
	o := eventstore.NewAppendOptions(opts...)
	if e.db.closed.Load() {
		return e.db.errClosed(op + " stream " + stream)
	}
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	run := func(tx pgx.Tx) error {
		var row streamRow
		var version, deleted int64
		if err := tx.QueryRow(ctx, e.db.q.lockStream, stream).Scan(&version, &deleted, &row.tombstoned); err != nil {
			return fmt.Errorf("postgres: %s stream %q: %w", op, stream, err)
		}
		row.version, row.deleted = uint64(version), uint64(deleted)
		if row.tombstoned {
			return fmt.Errorf("postgres: %s stream %q: %w", op, stream, eventstore.ErrStreamDeleted)
		}
		update, err := decide(row, o.Expected)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, update, stream); err != nil {
			return fmt.Errorf("postgres: %s stream %q: %w", op, stream, err)
		}
		return nil
	}
	if o.Tx != nil {
		tx, ok := o.Tx.(*Tx)
		if !ok {
			return fmt.Errorf("%w: %s stream %q: InTx given a %T, want a *postgres.Tx", eventstore.ErrInvalid, op, stream, o.Tx)
		}
		if err := tx.usable(e.db, op+" stream "+stream); err != nil {
			return err
		}
		defer tx.hold(stream)
		return run(tx.tx)
	}
	err := pgx.BeginTxFunc(ctx, e.db.pool, ownTxOptions, run)
	if err != nil && e.db.closed.Load() && !isStoreError(err) {
		return e.db.errClosed(op + " stream " + stream)
	}
	return err
}

func isStoreError(err error) bool {
	return errors.Is(err, eventstore.ErrConflict) || errors.Is(err, eventstore.ErrStreamNotFound) ||
		errors.Is(err, eventstore.ErrStreamDeleted)
}
