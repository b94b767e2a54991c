package projection

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// worker runs one partition of one copy while the runner holds its lease.
// Its fields are its goroutine's own.
type worker[T recado.Tx] struct {
	r          *Runner[T]
	k          part
	partitions int // of the copy
	lease      lease.Lease
	source     string // of the copy's dead letters

	at       recado.Position // the committed checkpoint
	caughtUp bool            // saved as caught up
	role     checkpoint.Role // of the copy, as the last unit of work (or load) found it
	blocked  map[string]bool // the partition's streams that have open dead letters

	// free holds batch buffers the worker has done with, for the reader to
	// fill again: catching up allocates no slice per batch.
	free chan []recado.Event
	// batch is the buffer of a BatchHandler's events.
	batch []Event
}

// storeError marks an error of the stores (or of ctx) inside a unit of
// work: it ends the worker, it never sends an event to the dead-letter
// queue.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// handlerError marks the handler's error inside a unit of work.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// batch is what the reader hands the worker: the partition's events up to
// end, a position in the log after which the reader goes on.
type batch struct {
	events   []recado.Event
	end      recado.Position
	caughtUp bool // end is the end of the log
	err      error
}

func (w *worker[T]) run(ctx context.Context) (err error) {
	r := w.r
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel(nil)
		wg.Wait()
		r.setLocal(w.k, localState{}, false)
		if !errors.Is(err, lease.ErrLost) {
			rctx, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			r.s.Leases.Release(rctx, w.lease) // a lease not released expires
			done()
		}
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		w.changed(false, err)
	}()
	w.changed(true, nil)
	wg.Go(func() { w.renew(ctx, cancel) })
	if err := w.load(ctx); err != nil {
		return w.end(ctx, err)
	}
	if err := w.replays(ctx); err != nil {
		return w.end(ctx, err)
	}
	batches := make(chan batch, 1)
	w.free = make(chan []recado.Event, 2)
	wg.Go(func() { w.read(ctx, batches) })
	tick := time.NewTicker(r.o.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return w.end(ctx, ctx.Err())
		case b := <-batches:
			if b.err != nil {
				return w.end(ctx, b.err)
			}
			if err := w.handle(ctx, b); err != nil {
				return w.end(ctx, err)
			}
			clear(b.events) // the handler got copies: drop the references
			select {
			case w.free <- b.events[:0]:
			default:
			}
		case <-tick.C:
			if len(w.blocked) > 0 {
				if err := w.replays(ctx); err != nil {
					return w.end(ctx, err)
				}
			}
			if w.caughtUp && w.role == checkpoint.Building {
				if err := w.swap(ctx); err != nil { // the active copy was ahead: try again
					return w.end(ctx, err)
				}
			}
		}
	}
}

// end returns why the worker ends: ctx's cause when ctx has ended (the lease
// was lost, or Run is stopping), else err.
func (w *worker[T]) end(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var se *storeError
	if errors.As(err, &se) {
		return se.err
	}
	return err
}

func (w *worker[T]) changed(running bool, err error) {
	if f := w.r.o.Hooks.Partition; f != nil {
		f(PartitionChange{Projection: w.r.o.Name, Copy: w.k.copy, Partition: w.k.partition, Running: running, Err: err})
	}
}

// renew renews the lease every third of its time to live, and ends the
// worker when it cannot.
func (w *worker[T]) renew(ctx context.Context, cancel context.CancelCauseFunc) {
	ttl := w.r.o.LeaseTTL
	t := time.NewTimer(ttl / 3)
	defer t.Stop()
	l := w.lease
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var err error
		if l, err = w.r.s.Leases.Renew(ctx, l, ttl); err != nil {
			if ctx.Err() == nil {
				cancel(err)
			}
			return
		}
		t.Reset(ttl / 3)
	}
}

// load reads the partition's checkpoint, what its copy is to the
// projection, and its blocked streams.
func (w *worker[T]) load(ctx context.Context) error {
	r := w.r
	p, err := r.s.Checkpoints.Get(ctx, r.o.Name)
	if err != nil {
		return err
	}
	w.role = checkpoint.Active
	if p.Building.Number == w.k.copy {
		w.role = checkpoint.Building
	}
	cps, err := r.s.Checkpoints.Checkpoints(ctx, r.o.Name, w.k.copy)
	if err != nil {
		return err
	}
	cp := cps[w.k.partition]
	w.at, w.caughtUp = cp.Position, cp.CaughtUp
	keys, err := r.s.DeadLetters.Blocked(ctx, w.source)
	if err != nil {
		return err
	}
	w.blocked = make(map[string]bool)
	for _, k := range keys {
		if PartitionOf(k, w.partitions) == w.k.partition {
			w.blocked[k] = true
		}
	}
	r.setLocal(w.k, localState{applied: w.at, caughtUp: w.caughtUp}, true)
	return nil
}

// read subscribes to the log after the checkpoint and sends the partition's
// events in batches: at most Batch events, ending where the subscription
// reports progress or reaches the end of the log, so that the checkpoint
// moves even when no event is the partition's.
func (w *worker[T]) read(ctx context.Context, out chan<- batch) {
	o := &w.r.o
	buffer := func() []recado.Event {
		select {
		case buf := <-w.free:
			return buf
		default:
			return make([]recado.Event, 0, min(o.Batch, 1024))
		}
	}
	b := batch{end: w.at, events: buffer()}
	sent, seen := w.at, 0
	send := func() bool {
		if len(b.events) == 0 && b.end == sent && !b.caughtUp {
			return true
		}
		select {
		case out <- b:
			sent, seen = b.end, 0
			b = batch{end: b.end, events: buffer()}
			return true
		case <-ctx.Done():
			return false
		}
	}
	opts := []eventstore.SubscribeOption{eventstore.WithFilter(o.Filter), eventstore.WithBatchSize(o.Batch),
		eventstore.WithPollInterval(o.PollInterval)}
	for m, err := range w.r.s.Events.Subscribe(ctx, w.at, opts...) {
		if err != nil {
			b.err = err
			send()
			return
		}
		b.end = m.Position
		switch m.Kind {
		case eventstore.KindEvent:
			seen++
			if PartitionOf(m.Event.Stream, w.partitions) == w.k.partition {
				b.events = append(b.events, m.Event)
			}
			if len(b.events) < o.Batch && seen < 4*o.Batch {
				continue
			}
		case eventstore.KindCaughtUp:
			b.caughtUp = true
		}
		if !send() {
			return
		}
	}
}

// handle applies a batch and moves the checkpoint to its end. A copy
// being rebuilt that has caught up tries to replace the active copy.
func (w *worker[T]) handle(ctx context.Context, b batch) error {
	if len(b.events) > 0 || b.end != w.at || (b.caughtUp && !w.caughtUp) {
		var err error
		if w.r.outside {
			err = w.handleOutside(ctx, b.events, b.end, b.caughtUp)
		} else {
			err = w.handleInside(ctx, b.events, b.end, b.caughtUp)
		}
		if err != nil {
			return err
		}
	}
	if b.caughtUp && w.role == checkpoint.Building {
		return w.swap(ctx)
	}
	return nil
}

// handleInside applies evs in one unit of work that saves the checkpoint
// end. If an event fails, the unit rolls back; the events before it are
// applied again in a unit of their own, and the failing one alone, with
// retries, then the rest.
//
// A BatchHandler gets the unit's events at once; if that fails, the unit
// rolls back and runs again with the events one at a time, to find the
// failing one.
func (w *worker[T]) handleInside(ctx context.Context, evs []recado.Event, end recado.Position, caughtUp bool) error {
	whole := w.r.batcher != nil
	for {
		i, cause, err := w.unit(ctx, evs, end, caughtUp, whole)
		if err != nil || cause == nil {
			return err
		}
		if i < 0 {
			whole = false
			continue
		}
		if i > 0 {
			if err := w.handleInside(ctx, evs[:i], evs[i-1].Position, false); err != nil {
				return err
			}
		}
		if err := w.retry(ctx, evs[i], cause); err != nil {
			return err
		}
		evs = evs[i+1:]
	}
}

// unit runs one unit of work: it checks the lease, saves the checkpoint
// end, parks the events of blocked streams and applies the others (with
// one ApplyBatch if whole). When the handler fails on evs[i], it returns i
// and the handler's error, and the unit has rolled back; when ApplyBatch
// fails, -1.
func (w *worker[T]) unit(ctx context.Context, evs []recado.Event, end recado.Position, caughtUp, whole bool) (failed int, cause error, err error) {
	start := time.Now()
	var applied, parked int
	var last time.Time
	defer func() { clear(w.batch) }() // the handler is done with the events
	err = w.r.db.Tx(ctx, func(tx T) error {
		applied, parked = 0, 0
		w.batch = w.batch[:0]
		if err := w.begin(ctx, tx, end, caughtUp); err != nil {
			return err
		}
		for i := range evs {
			e := &evs[i]
			ok, err := w.park(ctx, tx, e)
			if err != nil {
				return err
			}
			if ok {
				parked++
				continue
			}
			if whole {
				w.batch = append(w.batch, w.event(e, 0))
				continue
			}
			if err := w.apply(ctx, tx, e, 0); err != nil {
				failed = i
				return &handlerError{err}
			}
			applied++
			last = e.Time
		}
		if len(w.batch) > 0 {
			if err := w.applyBatch(ctx, tx, w.batch); err != nil {
				failed = -1
				return &handlerError{err}
			}
			applied, last = len(w.batch), w.batch[len(w.batch)-1].Time
		}
		w.publishOnCommit(tx, end, caughtUp)
		return nil
	})
	var he *handlerError
	if errors.As(err, &he) {
		return failed, he.err, nil
	}
	if err != nil {
		return 0, nil, &storeError{err}
	}
	w.committed(end, caughtUp, applied, parked, last, start)
	return 0, nil, nil
}

// begin starts a unit of work: it checks the lease (a runner whose lease
// another has taken writes nothing) and saves the checkpoint at, which
// fails if a rebuild has replaced the copy.
func (w *worker[T]) begin(ctx context.Context, tx T, at recado.Position, caughtUp bool) error {
	r := w.r
	if err := r.s.Leases.Guard(ctx, tx, w.lease); err != nil {
		return &storeError{err}
	}
	role, err := r.s.Checkpoints.Save(ctx, tx, checkpoint.Checkpoint{Name: r.o.Name, Copy: w.k.copy,
		Partition: w.k.partition, Position: at, CaughtUp: caughtUp})
	if err != nil {
		return &storeError{err}
	}
	w.role = role
	return nil
}

// publishOnCommit makes the runner's WaitFor see the checkpoint at once the
// unit of work tx has committed, after the handlers' own OnCommit functions
// (a read model in process memory is updated in those).
func (w *worker[T]) publishOnCommit(tx T, at recado.Position, caughtUp bool) {
	k, caught := w.k, caughtUp || w.caughtUp
	tx.OnCommit(func() { w.r.setLocal(k, localState{applied: at, caughtUp: caught}, true) })
}

// committed records a committed unit of work and reports it to the hook.
func (w *worker[T]) committed(at recado.Position, caughtUp bool, applied, parked int, last, start time.Time) {
	w.at, w.caughtUp = at, w.caughtUp || caughtUp
	f := w.r.o.Hooks.Committed
	if f == nil {
		return
	}
	now := time.Now()
	b := Batch{Projection: w.r.o.Name, Copy: w.k.copy, Partition: w.k.partition, Applied: applied, Parked: parked,
		Position: at, CaughtUp: caughtUp, Replay: w.role == checkpoint.Building, Took: now.Sub(start)}
	if applied > 0 {
		b.Delay = max(now.Sub(last), 0)
	}
	f(b)
}

// park parks e behind the dead letters of its stream, in tx, if its stream
// is blocked, and reports whether it did.
func (w *worker[T]) park(ctx context.Context, tx T, e *recado.Event) (bool, error) {
	if !w.blocked[e.Stream] {
		return false, nil
	}
	_, err := w.r.s.DeadLetters.Park(ctx, tx, w.source, e.Stream, *e)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, deadletter.ErrNotBlocked): // someone freed the stream
		delete(w.blocked, e.Stream)
		return false, nil
	}
	return false, &storeError{err}
}

// event returns e as the handler gets it.
func (w *worker[T]) event(e *recado.Event, letter uint64) Event {
	return Event{Event: *e, Projection: w.r.o.Name, Copy: w.k.copy, Partition: w.k.partition,
		Replay: w.role == checkpoint.Building, Letter: letter}
}

// apply calls the handler, turning a panic into an error.
func (w *worker[T]) apply(ctx context.Context, tx T, e *recado.Event, letter uint64) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
			w.r.o.Logger.Error("projection: handler panicked", "projection", w.r.o.Name, "stream", e.Stream,
				"version", e.Version, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	return w.r.o.Handler.Apply(ctx, tx, w.event(e, letter))
}

// applyBatch calls the BatchHandler with events, turning a panic into an
// error (the events are then applied one at a time, which finds the one
// that panics).
func (w *worker[T]) applyBatch(ctx context.Context, tx T, events []Event) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return w.r.batcher.ApplyBatch(ctx, tx, events)
}

// retry tries e again, alone, after it failed with cause, with the
// runner's retry policy; when it keeps failing, it sends e to the
// dead-letter queue and blocks its stream, in the unit of work that moves
// the checkpoint past it.
func (w *worker[T]) retry(ctx context.Context, e recado.Event, cause error) error {
	first, attempts := time.Now(), 1
	tried := false
	_, err := resilience.Do(ctx, w.r.pipeline, func(ctx context.Context) (struct{}, error) {
		if !tried { // the attempt that failed already
			tried = true
			return struct{}{}, cause
		}
		attempts++
		return struct{}{}, w.once(ctx, &e)
	})
	if err == nil {
		return nil
	}
	var se *storeError
	if errors.As(err, &se) {
		return se
	}
	if ctx.Err() != nil {
		return &storeError{ctx.Err()}
	}
	return w.deadLetter(ctx, e, err, attempts, first)
}

// once applies e alone: in a unit of work that saves the checkpoint e's
// position, or outside one (AtLeastOnce) with no checkpoint.
func (w *worker[T]) once(ctx context.Context, e *recado.Event) error {
	if w.r.outside {
		return w.apply(ctx, *new(T), e, 0)
	}
	_, cause, err := w.unit(ctx, []recado.Event{*e}, e.Position, false, false)
	if err != nil {
		return err
	}
	return cause
}

// deadLetter adds the letter for e, which failed with cause, in the unit of
// work that moves the checkpoint to e.
func (w *worker[T]) deadLetter(ctx context.Context, e recado.Event, cause error, attempts int, first time.Time) error {
	start := time.Now()
	var l deadletter.Letter
	err := w.r.db.Tx(ctx, func(tx T) error {
		if err := w.begin(ctx, tx, e.Position, false); err != nil {
			return err
		}
		var err error
		l, err = w.r.s.DeadLetters.Add(ctx, tx, deadletter.Failure{Source: w.source, Key: e.Stream, Message: e,
			Err: cause, Attempts: attempts, FirstFailure: first})
		if err != nil {
			return err
		}
		w.publishOnCommit(tx, e.Position, false)
		return nil
	})
	if err != nil {
		return &storeError{err}
	}
	w.blocked[e.Stream] = true
	w.r.o.Logger.Warn("projection: event sent to the dead-letter queue", "projection", w.r.o.Name,
		"letter", l.ID, "stream", e.Stream, "version", e.Version, "error", l.Error)
	w.committed(e.Position, false, 0, 0, time.Time{}, start)
	if f := w.r.o.Hooks.DeadLettered; f != nil {
		f(l)
	}
	return nil
}

// handleOutside applies evs with an AtLeastOnce handler, outside any unit of
// work, then saves the checkpoint end. An event of a blocked stream is
// parked, and one that keeps failing is sent to the dead-letter queue, each
// in a unit of work that moves the checkpoint to it.
func (w *worker[T]) handleOutside(ctx context.Context, evs []recado.Event, end recado.Position, caughtUp bool) error {
	start := time.Now()
	applied, parked := 0, 0
	var last time.Time
	for i := range evs {
		e := &evs[i]
		if w.blocked[e.Stream] {
			ok, err := w.parkOutside(ctx, e)
			if err != nil {
				return err
			}
			if ok {
				parked++
				continue
			}
		}
		if err := w.apply(ctx, *new(T), e, 0); err != nil {
			if err := w.retry(ctx, *e, err); err != nil {
				return err
			}
			continue
		}
		applied++
		last = e.Time
	}
	err := w.r.db.Tx(ctx, func(tx T) error {
		if err := w.begin(ctx, tx, end, caughtUp); err != nil {
			return err
		}
		w.publishOnCommit(tx, end, caughtUp)
		return nil
	})
	if err != nil {
		return &storeError{err}
	}
	w.committed(end, caughtUp, applied, parked, last, start)
	return nil
}

// errFreed rolls back a unit of work whose Park found the stream freed.
var errFreed = errors.New("stream freed")

// parkOutside parks e in a unit of work that moves the checkpoint to it,
// and reports whether it did (false: the stream was freed meanwhile).
func (w *worker[T]) parkOutside(ctx context.Context, e *recado.Event) (bool, error) {
	start := time.Now()
	err := w.r.db.Tx(ctx, func(tx T) error {
		if err := w.begin(ctx, tx, e.Position, false); err != nil {
			return err
		}
		ok, err := w.park(ctx, tx, e)
		if err != nil {
			return err
		}
		if !ok {
			return errFreed
		}
		w.publishOnCommit(tx, e.Position, false)
		return nil
	})
	if errors.Is(err, errFreed) {
		return false, nil
	}
	if err != nil {
		return false, &storeError{err}
	}
	w.committed(e.Position, false, 0, 1, time.Time{}, start)
	return true, nil
}

// replays carries out the replay requests of the partition's dead letters:
// each requested letter is delivered again, by ascending ID, and recorded
// as delivered (the next letter of its stream is then requested in turn)
// or as failed again (its stream stays blocked). In transactional mode the
// delivery and its record commit together.
func (w *worker[T]) replays(ctx context.Context) error {
	for {
		letters, err := w.requested(ctx)
		if err != nil || len(letters) == 0 {
			return err
		}
		for _, l := range letters {
			if err := w.redeliver(ctx, l); err != nil {
				return err
			}
		}
	}
}

// requested returns the partition's letters whose replay is requested.
func (w *worker[T]) requested(ctx context.Context) ([]deadletter.Letter, error) {
	var out []deadletter.Letter
	q := deadletter.Query{Source: w.source, States: []deadletter.State{deadletter.Requested}, Limit: deadletter.MaxLimit}
	for {
		page, err := w.r.s.DeadLetters.List(ctx, q)
		if err != nil {
			return nil, &storeError{err}
		}
		for _, l := range page {
			if PartitionOf(l.Key, w.partitions) == w.k.partition {
				out = append(out, l)
			}
		}
		if len(page) < q.Limit {
			return out, nil
		}
		q.After = page[len(page)-1].ID
	}
}

// redeliver delivers the requested letter l and records the outcome.
func (w *worker[T]) redeliver(ctx context.Context, l deadletter.Letter) error {
	var cause error
	if w.r.outside {
		cause = w.apply(ctx, *new(T), &l.Message, l.ID)
	}
	record := func(ctx context.Context, tx T, cause error) error {
		if cause != nil {
			return w.r.s.DeadLetters.FailedAgain(ctx, tx, l.ID, cause)
		}
		return w.r.s.DeadLetters.Delivered(ctx, tx, l.ID)
	}
	err := w.r.db.Tx(ctx, func(tx T) error {
		if err := w.begin(ctx, tx, w.at, false); err != nil {
			return err
		}
		if !w.r.outside {
			if err := w.apply(ctx, tx, &l.Message, l.ID); err != nil {
				return &handlerError{err}
			}
		}
		return record(ctx, tx, cause)
	})
	var he *handlerError
	if errors.As(err, &he) { // the delivery rolled back: record the failure alone
		cause = he.err
		err = w.r.db.Tx(ctx, func(tx T) error {
			if err := w.begin(ctx, tx, w.at, false); err != nil {
				return err
			}
			return record(ctx, tx, cause)
		})
	}
	if err != nil {
		return &storeError{err}
	}
	if cause != nil {
		w.r.o.Logger.Warn("projection: a replayed dead letter failed again", "projection", w.r.o.Name,
			"letter", l.ID, "stream", l.Key, "error", cause)
	}
	return nil
}

// swap makes the copy this worker builds the active one, if every
// partition of it has caught up with the log and none is behind the active
// copy, in a unit of work that calls Options.Swap. Until then it does
// nothing: the next caught-up batch, or the next tick, tries again.
func (w *worker[T]) swap(ctx context.Context) error {
	r := w.r
	cps, err := r.s.Checkpoints.Checkpoints(ctx, r.o.Name, w.k.copy)
	if err != nil {
		return err
	}
	for _, c := range cps {
		if !c.CaughtUp {
			return nil
		}
	}
	var old uint64
	err = r.db.Tx(ctx, func(tx T) error {
		if err := r.s.Leases.Guard(ctx, tx, w.lease); err != nil {
			return &storeError{err}
		}
		p, err := r.s.Checkpoints.Swap(ctx, tx, r.o.Name, w.k.copy)
		if err != nil {
			return &storeError{err}
		}
		old = p.Retiring
		return r.o.Swap(ctx, tx, p.Retiring, p.Active.Number)
	})
	var se *storeError
	switch {
	case err == nil:
		w.role = checkpoint.Active
		r.o.Logger.Info("projection: rebuilt copy is now active", "projection", r.o.Name, "copy", w.k.copy, "old", old)
		return nil
	case errors.As(err, &se) && (errors.Is(err, checkpoint.ErrNotReady) || errors.Is(err, checkpoint.ErrRetired)):
		return nil // not yet, or another partition swapped it
	case errors.As(err, &se):
		return se.err
	}
	r.o.Logger.Error("projection: Options.Swap failed; the rebuilt copy is not active yet", "projection", r.o.Name,
		"copy", w.k.copy, "error", err)
	return nil
}
