package postgres

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// EventStore is the event store of a [DB]: an [eventstore.Store] that is also an
// [eventstore.Notifier], [eventstore.Subscriber] and [eventstore.Deleter].
type EventStore struct {
	eventstore.Signal
	db *DB
	w  *writer
}

var (
	_ eventstore.Store      = (*EventStore)(nil)
	_ eventstore.Notifier   = (*EventStore)(nil)
	_ eventstore.Subscriber = (*EventStore)(nil)
	_ eventstore.Deleter    = (*EventStore)(nil)
)

const (
	readAllPage    = 1000
	readStreamPage = 500
)

func newEvents(db *DB) *EventStore {
	e := &EventStore{db: db}
	e.w = &writer{e: e, reqs: make(chan *appendReq), stop: make(chan struct{})}
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
		if !ok || tx == nil {
			return eventstore.AppendResult{}, fmt.Errorf("%w: append to %q: InTx given a %T, want a *postgres.Tx",
				eventstore.ErrInvalid, stream, o.Tx)
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
	out, _, err := e.execute(ctx, tx.tx, []*appendReq{r}, &batchBuf{})
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
// events than were committed when it started.
func (e *EventStore) ReadAll(ctx context.Context, after recado.Position, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := e.readable(ctx, o); err != nil {
			yield(recado.Event{}, err)
			return
		}
		major, seq := after.Parts()
		cur := [2]int64{clampInt64(major), clampInt64(seq)}
		if o.Backwards && after.IsZero() {
			cur = [2]int64{math.MaxInt64, math.MaxInt64}
		}
		q := e.db.q.readAll
		if o.Backwards {
			q = e.db.q.readAllBack
		}
		remaining := o.Limit
		p := &page{}
		var target int64 = -1 // the newest major committed when the read started, while not yet below the horizon
		first := true
		for {
			n := readAllPage
			if remaining > 0 && remaining < n {
				n = remaining
			}
			b := &pgx.Batch{}
			if first {
				b.Queue(e.db.q.horizon).QueryRow(func(row pgx.Row) error {
					var xmin, newest int64
					if err := row.Scan(&xmin, &newest); err != nil {
						return err
					}
					if newest >= xmin {
						target = newest
					}
					return nil
				})
			}
			if first && o.Backwards && target >= 0 {
				// Reading from the end: first wait until everything committed
				// before the start is readable.
				if err := e.sendBatch(ctx, b); err != nil {
					yield(recado.Event{}, fmt.Errorf("postgres: read all: %w", err))
					return
				}
				b = &pgx.Batch{}
				if err := e.waitHorizon(ctx, min(target, cur[0])); err != nil {
					yield(recado.Event{}, err)
					return
				}
				target = -1
			}
			first = false
			p.reset()
			b.Queue(q, cur[0], cur[1], n).Query(func(rs pgx.Rows) error { return readPage(rs, p, 0) })
			if err := e.sendBatch(ctx, b); err != nil {
				yield(recado.Event{}, fmt.Errorf("postgres: read all after %s: %w", recado.NewPosition(uint64(cur[0]), uint64(cur[1])), err))
				return
			}
			p.finish()
			for i := range p.events {
				if !yield(p.events[i], nil) {
					return
				}
			}
			if k := len(p.events); k > 0 {
				last := p.events[k-1].Position
				major, seq := last.Parts()
				cur = [2]int64{int64(major), int64(seq)}
				if remaining > 0 {
					if remaining -= k; remaining == 0 {
						return
					}
				}
			}
			if len(p.events) == n {
				continue
			}
			if target < 0 || o.Backwards {
				return
			}
			if err := e.waitHorizon(ctx, target); err != nil {
				yield(recado.Event{}, err)
				return
			}
			target = -1
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
		err := e.retryRead(ctx, func() error {
			return e.db.pool.QueryRow(ctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").Scan(&xmin)
		})
		if err != nil {
			return fmt.Errorf("postgres: read all: wait for open transactions: %w", err)
		}
		if xmin > major {
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
	if err := checkFormats(rs.FieldDescriptions(), off); err != nil {
		return err
	}
	for rs.Next() {
		if err := p.add(rs.RawValues(), off); err != nil {
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
		for first := true; ; first = false {
			n := readStreamPage
			if remaining > 0 && remaining < n {
				n = remaining
			}
			p.reset()
			var state struct {
				found            bool
				version, deleted int64
				tombstoned       bool
			}
			b := &pgx.Batch{}
			b.Queue(q, stream, bound, n).Query(func(rs pgx.Rows) error {
				if err := checkFormats(rs.FieldDescriptions(), 3); err != nil {
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
					if err := p.add(raw, 3); err != nil {
						return err
					}
				}
				return rs.Err()
			})
			if err := e.sendBatch(ctx, b); err != nil {
				yield(recado.Event{}, fmt.Errorf("postgres: read stream %q: %w", stream, err))
				return
			}
			switch {
			case state.tombstoned:
				if first {
					yield(recado.Event{}, fmt.Errorf("postgres: read stream %q: %w", stream, eventstore.ErrStreamDeleted))
				}
				return
			case !state.found || state.version <= state.deleted:
				if first {
					yield(recado.Event{}, fmt.Errorf("postgres: read stream %q: %w", stream, eventstore.ErrStreamNotFound))
				}
				return
			}
			p.finish()
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
		if !ok || tx == nil {
			return fmt.Errorf("%w: %s stream %q: InTx given a %T, want a *postgres.Tx", eventstore.ErrInvalid, op, stream, o.Tx)
		}
		return run(tx.tx)
	}
	err := pgx.BeginFunc(ctx, e.db.pool, run)
	if err != nil && e.db.closed.Load() && !isStoreError(err) {
		return e.db.errClosed(op + " stream " + stream)
	}
	return err
}

func isStoreError(err error) bool {
	return errors.Is(err, eventstore.ErrConflict) || errors.Is(err, eventstore.ErrStreamNotFound) ||
		errors.Is(err, eventstore.ErrStreamDeleted)
}
