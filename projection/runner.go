package projection

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// Runner runs one projection: it reads the event store's global log from
// the projection's checkpoints, applies the events with the handler, and
// saves the checkpoints, partition by partition. See the package
// documentation.
type Runner[T recado.Tx] struct {
	db       recado.UnitOfWork[T]
	s        Stores
	o        Options[T]
	outside  bool // the handler is AtLeastOnce's
	batcher  BatchHandler[T]
	pipeline *resilience.Pipeline
	running  atomic.Bool

	mu    sync.Mutex
	local map[part]localState // the partitions this runner runs
	sig   signal              // notified when local changes
}

// part names one partition of one copy.
type part struct {
	copy      uint64
	partition int
}

// localState is what a runner knows of a partition it runs.
type localState struct {
	applied  recado.Position // the checkpoint last committed, once its unit's OnCommit functions ran
	caughtUp bool
}

// NewRunner returns a runner of the projection o describes, over the units
// of work of db and the stores s of the same DB.
func NewRunner[T recado.Tx](db recado.UnitOfWork[T], s Stores, o Options[T]) (*Runner[T], error) {
	fail := func(err error) (*Runner[T], error) {
		return nil, &Error{Op: "new", Projection: o.Name, Err: fmt.Errorf("%w: %v", ErrInvalid, err)}
	}
	if db == nil {
		return fail(errors.New("no DB"))
	}
	if err := s.check(); err != nil {
		return fail(err)
	}
	if err := o.Validate(); err != nil {
		return fail(err)
	}
	o = o.withDefaults()
	_, isOutside := o.Handler.(outside[T])
	r := &Runner[T]{db: db, s: s, o: o, outside: isOutside, local: make(map[part]localState)}
	r.batcher, _ = o.Handler.(BatchHandler[T])
	retry := o.Retry
	classify := retry.Classify
	if classify == nil {
		classify = resilience.Classify
	}
	retry.Classify = func(err error) resilience.Class {
		var se *storeError
		if errors.As(err, &se) {
			return resilience.ClassPermanent // the stores failed: no retry, no letter
		}
		return classify(err)
	}
	rt, err := resilience.NewRetry(retry)
	if err != nil {
		return fail(err)
	}
	r.pipeline = &resilience.Pipeline{Retry: rt, Clock: o.Clock}
	return r, nil
}

// Name returns the projection's name.
func (r *Runner[T]) Name() string { return r.o.Name }

// Run runs the projection until ctx ends, then returns nil; or until a
// store fails, then returns the error (run it again to resume from the
// checkpoints).
//
// Run registers the projection (its first copy gets Options.Partitions
// partitions) and takes the lease of every partition of the active copy,
// and of a copy being rebuilt, that no other runner holds: each partition
// runs in this runner only while it holds the lease, and every unit of
// work checks it. The partitions held elsewhere are taken over when their
// leases expire or are released: start several runners of one projection,
// in one process or many, and they share its partitions and stand by for
// each other.
//
// When ctx ends, the units of work in progress roll back (their events are
// applied again by the next runner: exactly once in transactional mode),
// the leases are released so that a standby takes over at once, and Run
// returns nil. A runner runs once at a time: a second Run while one is
// running fails with [ErrRunning].
func (r *Runner[T]) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return r.fail("run", ErrRunning)
	}
	defer r.running.Store(false)
	p, err := r.s.Checkpoints.Register(ctx, r.o.Name, r.o.Partitions)
	if err != nil {
		return r.stopped(ctx, err)
	}
	if p.Active.Partitions != r.o.Partitions && p.Building.Partitions != r.o.Partitions {
		return r.fail("run", fmt.Errorf("%w: copy %d has %d partitions and Options.Partitions is %d: call Rebuild to change it",
			ErrInvalid, p.Active.Number, p.Active.Partitions, r.o.Partitions))
	}
	s := &supervisor[T]{r: r, workers: make(map[part]context.CancelCauseFunc), exits: make(chan exit)}
	return s.run(ctx)
}

// Rebuild asks for a new copy of the read model with Options.Partitions
// partitions, built from the start of the log beside the active copy, and
// returns its number. The runners of the projection build it (each event
// has Replay set) and, once each of its partitions has caught up with the
// log, make it the active copy in a unit of work that calls Options.Swap;
// then they retire the replaced copy and its dead letters. If a rebuild is
// under way already, Rebuild returns the number of the copy being built.
func (r *Runner[T]) Rebuild(ctx context.Context) (uint64, error) {
	if r.o.Swap == nil {
		return 0, r.fail("rebuild", fmt.Errorf("%w: Options.Swap is required to rebuild", ErrInvalid))
	}
	if _, err := r.s.Checkpoints.Register(ctx, r.o.Name, r.o.Partitions); err != nil {
		return 0, r.fail("rebuild", err)
	}
	p, err := r.s.Checkpoints.Rebuild(ctx, r.o.Name, r.o.Partitions)
	if err != nil {
		return 0, r.fail("rebuild", err)
	}
	return p.Building.Number, nil
}

func (r *Runner[T]) fail(op string, err error) error {
	return &Error{Op: op, Projection: r.o.Name, Err: err}
}

// stopped returns nil if err comes from ctx ending, else err as Run's error.
func (r *Runner[T]) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return r.fail("run", err)
}

// setLocal records what the runner knows of k; ok false forgets k.
func (r *Runner[T]) setLocal(k part, st localState, ok bool) {
	r.mu.Lock()
	if ok {
		r.local[k] = st
	} else {
		delete(r.local, k)
	}
	r.mu.Unlock()
	r.sig.notify()
}

// localOf returns what the runner knows of k, if it runs it.
func (r *Runner[T]) localOf(k part) (localState, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.local[k]
	return st, ok
}

// supervisor is one Run: it keeps a worker running for each partition whose
// lease it holds, and tries to take the others over.
type supervisor[T recado.Tx] struct {
	r       *Runner[T]
	workers map[part]context.CancelCauseFunc
	exits   chan exit
	warned  bool // that the runner cannot build a copy without Swap
}

// exit is a worker's end.
type exit struct {
	k   part
	err error
}

// errStopped is the cause given to the workers of a copy that a rebuild
// replaced.
var errStopped = fmt.Errorf("%w: a rebuild replaced the copy", checkpoint.ErrRetired)

func (s *supervisor[T]) run(ctx context.Context) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		for len(s.workers) > 0 {
			e := <-s.exits
			delete(s.workers, e.k)
		}
	}()
	tick := time.NewTicker(s.r.o.PollInterval)
	defer tick.Stop()
	for {
		if err := s.step(ctx); err != nil {
			return s.r.stopped(ctx, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case e := <-s.exits:
			delete(s.workers, e.k)
			if fatal(e.err) {
				return s.r.stopped(ctx, e.err)
			}
		case <-tick.C:
		}
	}
}

// fatal reports whether a worker's end must end Run.
func fatal(err error) bool {
	return err != nil && !errors.Is(err, lease.ErrLost) && !errors.Is(err, checkpoint.ErrRetired) &&
		!errors.Is(err, context.Canceled)
}

// step reads the projection's record, stops the workers of copies that
// are gone, starts workers for the partitions whose leases it can take, and
// retires a replaced copy's letters.
func (s *supervisor[T]) step(ctx context.Context) error {
	r := s.r
	p, err := r.s.Checkpoints.Get(ctx, r.o.Name)
	if err != nil {
		return err
	}
	want := make(map[part]int) // partition → partitions of its copy
	for i := range p.Active.Partitions {
		want[part{p.Active.Number, i}] = p.Active.Partitions
	}
	if p.Building.Number != 0 {
		if r.o.Swap != nil {
			for i := range p.Building.Partitions {
				want[part{p.Building.Number, i}] = p.Building.Partitions
			}
		} else if !s.warned {
			s.warned = true
			r.o.Logger.Warn("projection: a rebuild is requested, but this runner has no Options.Swap and builds no copy",
				"projection", r.o.Name, "copy", p.Building.Number)
		}
	}
	for k, stop := range s.workers {
		if _, ok := want[k]; !ok {
			stop(errStopped)
		}
	}
	for k, partitions := range want {
		if _, ok := s.workers[k]; ok {
			continue
		}
		l, err := r.s.Leases.Acquire(ctx, LeaseName(r.o.Name, k.copy, k.partition), r.o.Holder, r.o.LeaseTTL)
		if errors.Is(err, lease.ErrHeld) {
			continue // another runner has it: stand by
		}
		if err != nil {
			return err
		}
		s.start(ctx, k, partitions, l)
	}
	if p.Retiring != 0 {
		if _, ok := s.workers[part{p.Active.Number, 0}]; ok {
			return r.retire(ctx, p.Retiring)
		}
	}
	return nil
}

// start runs a worker for k, whose lease l the runner holds.
func (s *supervisor[T]) start(ctx context.Context, k part, partitions int, l lease.Lease) {
	wctx, stop := context.WithCancelCause(ctx)
	s.workers[k] = stop
	w := &worker[T]{r: s.r, k: k, partitions: partitions, lease: l, source: Source(s.r.o.Name, k.copy)}
	go func() {
		err := w.run(wctx)
		stop(nil)
		s.exits <- exit{k, err}
	}()
}

// retire discards the open dead letters of copy, a copy that a rebuild
// replaced, then records that it is retired.
func (r *Runner[T]) retire(ctx context.Context, copy uint64) error {
	source := Source(r.o.Name, copy)
	reason := fmt.Sprintf("projection %q: copy %d was replaced by a rebuild", r.o.Name, copy)
	for range 100 {
		letters, err := r.s.DeadLetters.List(ctx, deadletter.Query{Source: source, Limit: deadletter.MaxLimit})
		if err != nil {
			return err
		}
		if len(letters) == 0 {
			return r.s.Checkpoints.Retired(ctx, r.o.Name, copy)
		}
		// The last letters of each stream's queue first, so that discarding
		// the head of a queue finds nothing behind it to request.
		for i := len(letters) - 1; i >= 0; i-- {
			l := letters[i]
			if l.State == deadletter.Requested {
				err = r.s.DeadLetters.FailedAgain(ctx, nil, l.ID, errors.New(reason))
			}
			if err == nil {
				err = r.s.DeadLetters.Discard(ctx, l.ID, reason)
			}
			// Someone else handled the letter meanwhile: the next round
			// sees what is left.
			if err != nil && !errors.Is(err, deadletter.ErrHandled) && !errors.Is(err, deadletter.ErrState) &&
				!errors.Is(err, deadletter.ErrNotFound) {
				return err
			}
			err = nil
		}
	}
	return fmt.Errorf("the dead letters of copy %d keep changing while they are retired", copy)
}

// signal wakes any number of waiters; the zero value is ready.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed by the next notify.
func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) notify() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}
