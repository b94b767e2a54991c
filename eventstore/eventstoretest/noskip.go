package eventstoretest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// logChecker follows what a reader of the global log sees and records every
// broken promise: an event seen twice, positions not increasing, a stream's
// versions out of order or with a hole.
type logChecker struct {
	seen     map[string]int // event ID → times seen
	last     recado.Position
	versions map[string]uint64 // stream → last version seen
	problems []string
}

func newLogChecker() *logChecker {
	return &logChecker{seen: map[string]int{}, versions: map[string]uint64{}}
}

func (c *logChecker) problem(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *logChecker) see(e recado.Event) {
	c.seen[e.ID]++
	if c.seen[e.ID] > 1 {
		c.problem("event %s (stream %q version %d, position %s) delivered %d times", e.ID, e.Stream, e.Version, e.Position, c.seen[e.ID])
	}
	if !c.last.Before(e.Position) {
		c.problem("event %s at position %s delivered after position %s: positions must increase", e.ID, e.Position, c.last)
	}
	c.last = e.Position
	if want := c.versions[e.Stream] + 1; e.Version != want {
		c.problem("stream %q: version %d delivered after version %d (a skipped, repeated or reordered event)", e.Stream, e.Version, want-1)
	}
	c.versions[e.Stream] = e.Version
}

// report fails tb with the problems seen, and with every committed event that
// was not delivered or event delivered that was not committed.
func (c *logChecker) report(tb testing.TB, committed map[string]bool) {
	tb.Helper()
	for id := range committed {
		if c.seen[id] == 0 {
			c.problem("committed event %s was never delivered (skipped)", id)
		}
	}
	for id := range c.seen {
		if !committed[id] {
			c.problem("event %s was delivered but no append reported committing it", id)
		}
	}
	const most = 10
	for i, p := range c.problems {
		if i == most {
			tb.Errorf("... and %d more problems", len(c.problems)-most)
			break
		}
		tb.Error(p)
	}
	if len(c.problems) > 0 {
		tb.Errorf("reader saw %d events, %d committed", len(c.seen), len(committed))
	}
}

// writers appends concurrently to a store, to streams of their own with exact
// expected versions and to shared streams with Any or exact versions (some of
// which conflict), and, with units of work, in units that append to a stream
// of their own and a shared one and that roll back one time in three. It
// records every event that was committed.
type writers struct {
	mu        sync.Mutex
	committed map[string]bool
	head      recado.Position // the last position committed
	done      chan struct{}   // closed when every writer has finished
}

func startWriters(t *testing.T, b Backend, units bool, n, appends int) *writers {
	w := &writers{committed: map[string]bool{}, done: make(chan struct{})}
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() { w.write(t, b, units, g, appends) })
	}
	go func() {
		wg.Wait()
		close(w.done)
	}()
	return w
}

func (w *writers) write(t *testing.T, b Backend, units bool, g, appends int) {
	ctx := t.Context()
	s := b.Store
	rng := rand.New(rand.NewPCG(uint64(g), 7))
	own := fmt.Sprintf("writer-%d", g)
	var ownVersion uint64
	for i := range appends {
		events := newEvents(fmt.Sprintf("W%d", g), 1+rng.IntN(3))
		var (
			stream string
			res    eventstore.AppendResult
			err    error
		)
		switch {
		case i%4 == 0:
			stream = own
			res, err = s.Append(ctx, stream, events, eventstore.ExpectVersion(ownVersion))
			ownVersion = res.LastVersion
		case i%4 == 1 || i%4 == 3 && !units:
			stream = fmt.Sprintf("shared-%d", rng.IntN(4))
			res, err = s.Append(ctx, stream, events, eventstore.Expect(eventstore.Any))
		case i%4 == 2:
			stream = fmt.Sprintf("shared-%d", rng.IntN(4))
			version := uint64(0)
			if last, rerr := readStream(ctx, s, stream, eventstore.Backwards(), eventstore.Limit(1)); rerr == nil && len(last) == 1 {
				version = last[0].Version
			} else if rerr != nil && !errors.Is(rerr, eventstore.ErrStreamNotFound) {
				t.Errorf("writer %d: ReadStream(%q): %v", g, stream, rerr)
				return
			}
			res, err = s.Append(ctx, stream, events, eventstore.ExpectVersion(version))
			if errors.Is(err, eventstore.ErrConflict) {
				continue // another writer got there first: nothing stored
			}
		default: // a unit of work
			stream = own + " and a shared stream, in a unit of work"
			shared := fmt.Sprintf("shared-%d", rng.IntN(4))
			more := newEvents(fmt.Sprintf("W%d", g), 1)
			rollback := rng.IntN(3) == 0
			var res2 eventstore.AppendResult
			err = b.Tx(ctx, func(tx recado.Tx) error {
				var err error
				if res, err = s.Append(ctx, own, events, eventstore.ExpectVersion(ownVersion), eventstore.InTx(tx)); err != nil {
					return err
				}
				if res2, err = s.Append(ctx, shared, more, eventstore.InTx(tx)); err != nil {
					return err
				}
				if rollback {
					return errRollback
				}
				return nil
			})
			if rollback && err == errRollback {
				continue // nothing committed
			}
			if err == nil {
				ownVersion = res.LastVersion
				events = append(events, more...)
				if res.LastPosition.Before(res2.LastPosition) {
					res = res2
				}
			}
		}
		if err != nil {
			t.Errorf("writer %d: Append(%q): %v", g, stream, err)
			return
		}
		w.mu.Lock()
		for _, e := range events {
			w.committed[e.ID] = true
		}
		if w.head.Before(res.LastPosition) {
			w.head = res.LastPosition
		}
		w.mu.Unlock()
	}
}

// finished reports whether the writers are done, and then the last position
// they committed.
func (w *writers) finished() (recado.Position, bool) {
	select {
	case <-w.done:
		return w.head, true // written before done was closed
	default:
		return recado.Position{}, false
	}
}

// stuckAfter is how long a reader may take to catch up once the writers are done.
const stuckAfter = 10 * time.Second

var errStuck = fmt.Errorf("the reader had not reached the writers' head %s after they finished: events were skipped or never delivered", stuckAfter)

// stuckGuard returns a context that ends, with errStuck as its cause, once
// stuckAfter has passed since done was closed: once writers have finished,
// a reader still short of their head has lost events. It guards against
// hanging; it does not measure speed.
func stuckGuard(t *testing.T, done <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancelCause(t.Context())
	t.Cleanup(func() { cancel(nil) })
	go func() {
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
		timer := time.NewTimer(stuckAfter)
		defer timer.Stop()
		select {
		case <-timer.C:
			cancel(errStuck)
		case <-ctx.Done():
		}
	}()
	return ctx
}

// testNoSkippedEvents: while many writers commit, a reader that checkpoints its
// position, stops several times and resumes after the checkpoint sees every
// committed event exactly once, each stream in order, positions increasing.
// The reader is a subscription or a ReadAll loop. With units, some writers
// append in units of work, some of which roll back: a reader never sees their
// events.
func testNoSkippedEvents(t *testing.T, nb factory, subscribe, units bool) {
	var b Backend
	if units {
		b = withUnitOfWork(t, nb)
	} else {
		b = leakChecked(t, nb)
	}
	s := b.Store
	w := startWriters(t, b, units, scale(16, 8), scale(30, 12))
	defer func() { <-w.done }() // the writers use t; do not let the test end under them
	ctx := stuckGuard(t, w.done)
	check := newLogChecker()
	rng := rand.New(rand.NewPCG(1, 2))
	var (
		checkpoint recado.Position
		sessions   int
		done       bool
	)
	for !done {
		if _, finished := w.finished(); len(check.problems) >= 10 || finished && len(check.problems) > 0 {
			break // enough to fail the test; waiting longer may hang
		}
		sessions++
		if subscribe {
			done = subscribeSession(ctx, t, s, w, check, &checkpoint, 1+rng.IntN(60), sessions%2 == 0)
		} else {
			done = readAllSession(ctx, t, s, w, check, &checkpoint, 1+rng.IntN(60))
		}
		if t.Failed() {
			return
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	check.report(t, w.committed)
	if sessions < 3 {
		t.Logf("only %d reader sessions: the writers finished early", sessions)
	}
}

// subscribeSession subscribes after *checkpoint and handles messages until it
// has seen stopAfter events (then it stops, by breaking out of the loop or by
// cancelling its context) or until the writers have finished and it has caught
// up with them, which it reports.
func subscribeSession(ctx context.Context, t *testing.T, s *eventstore.Store, w *writers, check *logChecker, checkpoint *recado.Position, stopAfter int, byBreak bool) bool {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, finished := w.finished(); !finished {
		// The writers may finish while the subscription waits, caught up but
		// short of their head: end this session then, and let the next one
		// read to the head and see that they are done.
		go func() {
			select {
			case <-w.done:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	seen, cancelled, ended := 0, false, false
	for m, err := range s.Subscribe(ctx, *checkpoint, eventstore.WithBatchSize(7), eventstore.WithPollInterval(50*time.Millisecond)) {
		if err != nil {
			ended = true
			head, _ := w.finished()
			if cause := context.Cause(parent); cause != nil {
				t.Fatalf("subscription at %s: %v (writers' head %s, %d events seen)", *checkpoint, cause, head, len(check.seen))
			}
			if errors.Is(err, context.Canceled) && ctx.Err() != nil { // this session's own cancel
				return false
			}
			t.Fatalf("subscription after %s ended with %v (writers' head %s, %d events seen)", *checkpoint, err, head, len(check.seen))
		}
		switch m.Kind {
		case eventstore.KindEvent:
			check.see(m.Event)
			seen++
			if len(check.problems) > 0 {
				return false // let the caller decide whether to go on
			}
		case eventstore.KindProgress, eventstore.KindCaughtUp:
			if m.Position.Before(*checkpoint) {
				t.Fatalf("%s message at position %s, before the checkpoint %s", m.Kind, m.Position, *checkpoint)
			}
		default:
			t.Fatalf("message of kind %s", m.Kind)
		}
		*checkpoint = m.Position
		if m.Kind == eventstore.KindCaughtUp {
			if head, ok := w.finished(); ok && !m.Position.Before(head) {
				return true
			}
		}
		if seen >= stopAfter && !cancelled {
			if byBreak {
				return false
			}
			cancel() // the subscription must now end with ctx's error
			cancelled = true
		}
	}
	if !ended {
		t.Fatalf("subscription ended without an error and without the loop breaking")
	}
	return false
}

// readAllSession reads the log after *checkpoint in small batches until it has
// seen stopAfter events, or until the writers have finished and it has read
// up to them, which it reports.
func readAllSession(ctx context.Context, t *testing.T, s *eventstore.Store, w *writers, check *logChecker, checkpoint *recado.Position, stopAfter int) bool {
	seen := 0
	for {
		head, finished := w.finished() // before reading: all of it must then be read
		n := 0
		for e, err := range s.ReadAll(ctx, *checkpoint, eventstore.Limit(5)) {
			if err != nil {
				if cause := context.Cause(ctx); cause != nil {
					err = cause
				}
				t.Fatalf("ReadAll(%s): %v (%d events seen)", *checkpoint, err, len(check.seen))
			}
			check.see(e)
			*checkpoint = e.Position
			n++
			if len(check.problems) > 0 {
				return false // let the caller decide whether to go on
			}
			if seen++; seen >= stopAfter {
				return false // stop in the middle of a batch, and resume after the checkpoint
			}
		}
		if n == 0 {
			if finished && !checkpoint.Before(head) {
				return true
			}
			if finished {
				t.Fatalf("ReadAll(%s) read nothing, but the writers committed up to %s", *checkpoint, head)
			}
			select {
			case <-ctx.Done():
				t.Fatalf("reading the log at %s: %v (%d events seen)", *checkpoint, context.Cause(ctx), len(check.seen))
			case <-time.After(time.Millisecond):
			}
		}
	}
}
