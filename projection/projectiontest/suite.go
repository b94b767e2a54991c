// Package projectiontest runs package projection's runner against a
// backend, as every backend's tests do: the runner's promises hold only if
// the backend's units of work, checkpoints, leases and dead letters hold
// theirs together.
//
//	func TestProjections(t *testing.T) {
//		projectiontest.Run(t, func(tb testing.TB, now func() time.Time) projectiontest.Backend {
//			db := memory.New()
//			tb.Cleanup(func() { db.Close() })
//			return projectiontest.Backend{Stores: ..., Tx: eventstoretest.UnitOfWork(db)}
//		})
//	}
//
// The handlers of the suite write their read model as events appended in
// the runner's unit of work, each with the version it expects: a lost
// event, an event applied twice or out of order shows as a missing or
// conflicting append. The suite proves: catching up and following the log;
// resuming after crashes in the middle of a batch without loss or double
// effect; the order of each stream with several partitions; a failing event
// parks only its stream, and a replay releases it in order; two runners of
// one projection never write at once (a runner whose lease was taken over
// is refused) and a standby takes over; a filtered projection's checkpoint
// moves when nothing matches; waiting for a position, also a parked one;
// rebuilds that swap a complete copy in and retire the old one's letters;
// at-least-once handlers; and a graceful stop that releases the leases.
// [Bench] measures catching up and lag.
package projectiontest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// Backend is a backend under test: the stores of one fresh, empty DB and
// its units of work.
type Backend struct {
	// Stores are the DB's stores, made with the clock the factory was given
	// (Checkpoints, Leases and DeadLetters).
	Stores projection.Stores
	// Tx runs fn in a unit of work of the DB (eventstoretest.UnitOfWork
	// adapts a DB's Tx).
	Tx func(ctx context.Context, fn func(tx recado.Tx) error) error
}

// Factory returns a fresh backend whose stores read the clock now. It
// registers its own cleanup with tb.
type Factory func(tb testing.TB, now func() time.Time) Backend

// T0 is the time the suite's lease clock starts at.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// UnitOfWork is a Backend's Tx as a recado.UnitOfWork, the DB a Runner
// takes.
type UnitOfWork func(ctx context.Context, fn func(tx recado.Tx) error) error

// Tx calls u.
func (u UnitOfWork) Tx(ctx context.Context, fn func(tx recado.Tx) error) error { return u(ctx, fn) }

// Run runs the suite as subtests of t, each with its own backend.
func Run(t *testing.T, newBackend Factory) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := resiliencetest.NewClock(T0)
			tc.run(t, &env{t: t, Backend: newBackend(t, clock.Now), clock: clock})
		})
	}
}

var tests = []struct {
	name string
	run  func(t *testing.T, e *env)
}{
	{"CatchUpAndFollow", testCatchUpAndFollow},
	{"ResumeAfterCrash", testResumeAfterCrash},
	{"OrderWithinStream", testOrderWithinStream},
	{"PoisonParksItsStream", testPoison},
	{"FencedRunner", testFenced},
	{"StandbyTakesOver", testStandby},
	{"FilteredCheckpointMoves", testFiltered},
	{"WaitFor", testWaitFor},
	{"Rebuild", testRebuild},
	{"AtLeastOnce", testAtLeastOnce},
	{"GracefulStopAndRepartition", testGracefulStop},
}

type env struct {
	t *testing.T
	Backend
	clock *resiliencetest.Clock
}

// wait bounds every wait of the suite; reaching it fails the test.
const wait = 20 * time.Second

// ctx returns a context that ends after the suite's bound.
func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(e.t.Context(), wait)
	e.t.Cleanup(cancel)
	return ctx
}

// appendTo appends events of the types given to stream.
func (e *env) appendTo(stream string, types ...string) eventstore.AppendResult {
	e.t.Helper()
	events := make([]recado.Event, len(types))
	for i, typ := range types {
		events[i] = recado.NewEvent(typ, []byte(`{}`))
	}
	res, err := e.Stores.Events.Append(e.t.Context(), stream, events)
	if err != nil {
		e.t.Fatalf("Append(%q): %v", stream, err)
	}
	return res
}

// options returns the suite's usual options: fast polling, back-off on a
// clock that does not sleep, two attempts, leases on the suite's clock.
func (e *env) options(name string, h projection.Handler[recado.Tx]) projection.Options[recado.Tx] {
	return projection.Options[recado.Tx]{
		Name:         name,
		Handler:      h,
		Filter:       eventstore.Filter{StreamPrefixes: []string{"order-"}},
		PollInterval: 5 * time.Millisecond,
		LeaseTTL:     10 * time.Second,
		Retry:        resilience.RetryConfig{MaxAttempts: 2},
		Clock:        resiliencetest.NewAutoClock(T0),
		Holder:       "runner-" + name,
	}
}

func (e *env) runner(o projection.Options[recado.Tx]) *projection.Runner[recado.Tx] {
	e.t.Helper()
	r, err := projection.NewRunner(UnitOfWork(e.Tx), e.Stores, o)
	if err != nil {
		e.t.Fatalf("NewRunner: %v", err)
	}
	return r
}

// running is a Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs r until the test ends or stop is called.
func (e *env) start(r *projection.Runner[recado.Tx]) *running {
	ctx, cancel := context.WithCancel(context.Background())
	x := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { x.done <- r.Run(ctx) }()
	e.t.Cleanup(func() { x.stop(e.t) })
	return x
}

// stop stops the Run and returns its error.
func (x *running) stop(t *testing.T) error {
	x.cancel()
	select {
	case err, ok := <-x.done:
		if ok {
			close(x.done)
		}
		return err
	case <-time.After(wait):
		t.Fatal("Run did not return after its context ended")
		return nil
	}
}

// waitFor waits for r to reach pos and fails the test if it does not.
func (e *env) waitFor(r *projection.Runner[recado.Tx], pos recado.Position) {
	e.t.Helper()
	if err := r.WaitFor(e.ctx(), pos); err != nil {
		e.t.Fatalf("WaitFor(%s): %v", pos, err)
	}
}

// eventually waits until f reports true, failing the test after the
// suite's bound.
func (e *env) eventually(what string, f func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(wait)
	for !f() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// applied is an effect of the suite's handlers: one event applied.
type applied struct {
	V      uint64 `json:"v"`
	P      string `json:"p"`
	Part   int    `json:"part"`
	Replay bool   `json:"replay"`
	Letter uint64 `json:"letter"`
}

// effectStream is where the suite's handlers record what copy applied of
// stream.
func effectStream(copy uint64, stream string) string { return fmt.Sprintf("fx-%d-%s", copy, stream) }

// effects is the suite's transactional handler: it appends an effect to
// effectStream(e.Copy, e.Stream) in the unit of work, expecting the
// version before e's, so that a lost, repeated or reordered event fails.
// fail, if not nil, is called first and its error returned.
func (e *env) effects(fail func(ev projection.Event) error) projection.Handler[recado.Tx] {
	return projection.HandlerFunc[recado.Tx](func(ctx context.Context, tx recado.Tx, ev projection.Event) error {
		if fail != nil {
			if err := fail(ev); err != nil {
				return err
			}
		}
		data, _ := json.Marshal(applied{V: ev.Version, P: ev.Position.String(), Part: ev.Partition, Replay: ev.Replay, Letter: ev.Letter})
		_, err := e.Stores.Events.Append(ctx, effectStream(ev.Copy, ev.Stream), []recado.Event{recado.NewEvent("Applied", data)},
			eventstore.InTx(tx), eventstore.ExpectVersion(ev.Version-1))
		return err
	})
}

// effectsOf reads what copy applied of stream.
func (e *env) effectsOf(copy uint64, stream string) []applied {
	e.t.Helper()
	var out []applied
	for ev, err := range e.Stores.Events.ReadStream(e.t.Context(), effectStream(copy, stream)) {
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			e.t.Fatal(err)
		}
		var a applied
		if err := json.Unmarshal(ev.Data, &a); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// mirrors checks that copy applied each event of each stream once, in
// order: versions 1 to want[stream].
func (e *env) mirrors(copy uint64, want map[string]uint64) {
	e.t.Helper()
	for stream, n := range want {
		got := e.effectsOf(copy, stream)
		ok := uint64(len(got)) == n
		for i := 0; ok && i < len(got); i++ {
			ok = got[i].V == uint64(i+1)
		}
		if !ok {
			vs := make([]uint64, len(got))
			for i, a := range got {
				vs[i] = a.V
			}
			e.t.Errorf("copy %d applied versions %v of %s, want 1 to %d once each, in order", copy, vs, stream, n)
		}
	}
}

func types(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "OrderNoted"
	}
	return out
}

func testCatchUpAndFollow(t *testing.T, e *env) {
	e.appendTo("order-1", types(5)...)
	e.appendTo("order-2", types(3)...)
	var commits atomic.Int64
	o := e.options("summary", e.effects(nil))
	o.Batch = 2
	o.Hooks.Committed = func(b projection.Batch) { commits.Add(1) }
	r := e.runner(o)
	e.start(r)
	last := e.appendTo("order-1", types(2)...)
	e.waitFor(r, last.LastPosition)
	res := e.appendTo("order-3", "OrderNoted")
	e.waitFor(r, res.LastPosition)
	e.mirrors(1, map[string]uint64{"order-1": 7, "order-2": 3, "order-3": 1})
	if commits.Load() < 5 {
		t.Errorf("%d units of work committed for 11 events in batches of 2, want at least 6", commits.Load())
	}
	e.eventually("Status says live", func() bool {
		st, err := r.Status(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		return st.State == projection.Live
	})
	st, err := r.Status(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if st.LagEvents != 0 || st.LagTime != 0 || st.Active.Number != 1 || len(st.Active.Partitions) != 1 ||
		st.Active.Partitions[0].Holder != "runner-summary" || st.Active.Position.Before(res.LastPosition) || st.DeadLetters != 0 {
		t.Errorf("Status = %+v, want live at the head with no lag, held by runner-summary, no dead letters", st)
	}
}

func testResumeAfterCrash(t *testing.T, e *env) {
	want := map[string]uint64{}
	var last recado.Position
	for i := range 6 {
		stream := fmt.Sprintf("order-%d", i)
		last = e.appendTo(stream, types(10)...).LastPosition
		want[stream] = 10
	}
	// Each runner crashes (its Run's context is cancelled from the handler)
	// in the middle of a batch, after applying some of its events in the
	// unit of work; the next runner resumes over the same DB.
	var seen atomic.Int64
	crashes := []int64{3, 11, 12, 30, 47}
	for _, at := range crashes {
		ctx, cancel := context.WithCancel(context.Background())
		h := e.effects(func(projection.Event) error {
			if seen.Add(1) == at {
				cancel()
				return ctx.Err()
			}
			return nil
		})
		o := e.options("crashy", h)
		o.Batch = 7
		r := e.runner(o)
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run after a crash at event %d = %v, want nil", at, err)
			}
		case <-time.After(wait):
			t.Fatalf("the runner did not crash at event %d", at)
		}
		cancel()
	}
	r := e.runner(e.options("crashy", e.effects(nil)))
	e.start(r)
	e.waitFor(r, last)
	e.mirrors(1, want)
}

func testOrderWithinStream(t *testing.T, e *env) {
	const partitions, streams, perStream = 4, 16, 20
	o := e.options("ordered", e.effects(nil))
	o.Partitions, o.Batch = partitions, 5
	r := e.runner(o)
	e.start(r)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last recado.Position
	for s := range streams {
		wg.Go(func() {
			for range perStream / 4 {
				res := e.appendTo(fmt.Sprintf("order-%d", s), types(4)...)
				mu.Lock()
				if last.Before(res.LastPosition) {
					last = res.LastPosition
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	e.waitFor(r, last)
	want := map[string]uint64{}
	used := map[int]bool{}
	for s := range streams {
		stream := fmt.Sprintf("order-%d", s)
		want[stream] = perStream
		for _, a := range e.effectsOf(1, stream) {
			used[a.Part] = true
			if p := projection.PartitionOf(stream, partitions); a.Part != p {
				t.Errorf("%s v%d applied by partition %d, want %d", stream, a.V, a.Part, p)
			}
		}
	}
	e.mirrors(1, want)
	if len(used) < 2 {
		t.Errorf("the streams ran in partitions %v, want several", used)
	}
}

// poison is a handler that fails every event of one stream and version
// while broken is set.
type poison struct {
	stream  string
	version uint64
	broken  atomic.Bool
}

var errPoison = errors.New("cannot apply: bad amount")

func (p *poison) fail(ev projection.Event) error {
	if p.broken.Load() && ev.Stream == p.stream && ev.Version == p.version {
		return errPoison
	}
	return nil
}

func testPoison(t *testing.T, e *env) {
	ctx := e.ctx()
	p := &poison{stream: "order-2", version: 2}
	p.broken.Store(true)
	e.appendTo("order-1", types(2)...)
	e.appendTo("order-2", "OrderNoted")
	bad := e.appendTo("order-2", "OrderNoted")
	e.appendTo("order-3", types(2)...)
	behind := e.appendTo("order-2", types(2)...)
	var lettered atomic.Int64
	o := e.options("poisoned", e.effects(p.fail))
	o.Partitions = 2
	o.Hooks.DeadLettered = func(deadletter.Letter) { lettered.Add(1) }
	r := e.runner(o)
	e.start(r)
	more := e.appendTo("order-1", types(2)...)
	e.waitFor(r, more.LastPosition) // other streams flow
	e.mirrors(1, map[string]uint64{"order-1": 4, "order-3": 2})
	e.mirrors(1, map[string]uint64{"order-2": 1})

	var pe *projection.ParkedError
	err := r.WaitFor(ctx, bad.LastPosition)
	if !errors.As(err, &pe) || !errors.Is(err, projection.ErrParked) {
		t.Fatalf("WaitFor the failed event = %v, want a *ParkedError", err)
	}
	head := pe.Head
	if pe.Letter.ID != head.ID || head.State != deadletter.Failed || head.Attempts != 2 ||
		head.Error != errPoison.Error() || head.Source != projection.Source("poisoned", 1) || head.Key != "order-2" ||
		head.Message.Version != 2 || !strings.Contains(err.Error(), fmt.Sprint(head.ID)) {
		t.Errorf("the failed event's letter = %+v (%v), want failed after 2 attempts, keyed by its stream", head, err)
	}
	err = r.WaitFor(ctx, behind.LastPosition)
	if !errors.As(err, &pe) || pe.Letter.State != deadletter.Parked || pe.Head.ID != head.ID || pe.Letter.Message.Version != 4 {
		t.Fatalf("WaitFor an event behind the failed one = %v, want a *ParkedError naming the parked letter and the head", err)
	}
	if n := lettered.Load(); n != 1 {
		t.Errorf("DeadLettered called %d times, want 1", n)
	}
	later := e.appendTo("order-2", "OrderNoted") // parked too, in order
	e.eventually("the later event is parked", func() bool {
		return errors.Is(r.WaitFor(ctx, later.LastPosition), projection.ErrParked)
	})

	p.broken.Store(false) // the bug is fixed
	if _, err := e.Stores.DeadLetters.Replay(ctx, head.ID); err != nil {
		t.Fatal(err)
	}
	e.eventually("the replay releases the stream", func() bool { return r.WaitFor(ctx, later.LastPosition) == nil })
	e.mirrors(1, map[string]uint64{"order-2": 5})
	fx := e.effectsOf(1, "order-2")
	if fx[1].Letter != head.ID || fx[2].Letter == 0 || fx[2].Letter <= head.ID {
		t.Errorf("the replayed events' letters = %d, %d; want %d then a later letter", fx[1].Letter, fx[2].Letter, head.ID)
	}
	after := e.appendTo("order-2", "OrderNoted") // the stream flows again
	e.waitFor(r, after.LastPosition)
	e.mirrors(1, map[string]uint64{"order-2": 6, "order-1": 4, "order-3": 2})
	left, err := e.Stores.DeadLetters.List(ctx, deadletter.Query{Source: projection.Source("poisoned", 1)})
	if err != nil || len(left) != 0 {
		t.Errorf("open letters after the replay = %v, %v; want none", left, err)
	}
}

func testFenced(t *testing.T, e *env) {
	res := e.appendTo("order-1", types(6)...)
	gate, paused := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var stopped atomic.Value // A's partition's end
	oa := e.options("fenced", e.effects(nil))
	oa.Batch, oa.Holder = 1, "node-a"
	oa.Hooks.Committed = func(projection.Batch) { // A stalls after its first unit of work
		once.Do(func() { close(paused); <-gate })
	}
	oa.Hooks.Partition = func(c projection.PartitionChange) {
		if !c.Running {
			stopped.Store(fmt.Sprint(c.Err))
			if errors.Is(c.Err, lease.ErrLost) {
				stopped.Store("lost")
			}
		}
	}
	a := e.start(e.runner(oa))
	select {
	case <-paused:
	case <-time.After(wait):
		t.Fatal("runner A did not commit its first batch")
	}
	e.clock.Advance(11 * time.Second) // A's lease expires while it stalls
	ob := e.options("fenced", e.effects(nil))
	ob.Holder = "node-b"
	rb := e.runner(ob)
	e.start(rb)
	e.waitFor(rb, res.LastPosition) // B took over and applied the rest
	close(gate)                     // A wakes up and tries its next unit of work
	e.eventually("runner A's partition stops", func() bool { return stopped.Load() != nil })
	if got := stopped.Load(); got != "lost" {
		t.Errorf("runner A's partition stopped with %v, want an error wrapping lease.ErrLost", got)
	}
	more := e.appendTo("order-1", types(2)...)
	e.waitFor(rb, more.LastPosition)
	e.mirrors(1, map[string]uint64{"order-1": 8}) // each event applied once: A wrote nothing after B took over
	if err := a.stop(t); err != nil {
		t.Errorf("runner A's Run = %v, want nil", err)
	}
}

func testStandby(t *testing.T, e *env) {
	res := e.appendTo("order-1", types(3)...)
	oa := e.options("standby", e.effects(nil))
	oa.Holder = "node-a"
	ra := e.runner(oa)
	a := e.start(ra)
	e.waitFor(ra, res.LastPosition)
	ob := e.options("standby", e.effects(nil))
	ob.Holder = "node-b"
	rb := e.runner(ob)
	e.start(rb)
	holder := func() string {
		st, err := rb.Status(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		return st.Active.Partitions[0].Holder
	}
	if h := holder(); h != "node-a" {
		t.Fatalf("holder with two runners = %q, want the first, node-a", h)
	}
	if err := a.stop(t); err != nil { // A stops and releases its lease
		t.Fatal(err)
	}
	e.eventually("node-b takes over", func() bool { return holder() == "node-b" })
	more := e.appendTo("order-1", types(2)...)
	e.waitFor(rb, more.LastPosition)
	e.mirrors(1, map[string]uint64{"order-1": 5})
}

func testFiltered(t *testing.T, e *env) {
	var calls atomic.Int64
	o := e.options("placed", e.effects(func(projection.Event) error { calls.Add(1); return nil }))
	o.Filter = eventstore.Filter{Types: []string{"OrderPlaced"}}
	r := e.runner(o)
	e.start(r)
	var last recado.Position
	for i := range 30 {
		last = e.appendTo(fmt.Sprintf("cart-%d", i), "ItemAdded", "ItemRemoved").LastPosition
	}
	e.waitFor(r, last)
	cps, err := e.Stores.Checkpoints.Checkpoints(e.ctx(), "placed", 1)
	if err != nil {
		t.Fatal(err)
	}
	if cps[0].Position.Before(last) {
		t.Errorf("checkpoint = %s after 60 events that do not match, want it at %s", cps[0].Position, last)
	}
	if calls.Load() != 0 {
		t.Errorf("the handler ran %d times, want 0", calls.Load())
	}
}

func testWaitFor(t *testing.T, e *env) {
	res := e.appendTo("order-1", types(3)...)
	m, err := projection.NewMonitor(e.Stores, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(e.t.Context(), 30*time.Millisecond)
	defer cancel()
	err = m.WaitFor(short, "waited", res.LastPosition) // no runner yet
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("WaitFor with no runner = %v, want the context's deadline, saying the projection is not registered", err)
	}
	done := make(chan error, 1)
	go func() { done <- m.WaitFor(e.ctx(), "waited", res.LastPosition) }()
	r := e.runner(e.options("waited", e.effects(nil)))
	e.start(r)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Monitor.WaitFor = %v, want nil once the runner has caught up", err)
		}
	case <-time.After(wait):
		t.Fatal("Monitor.WaitFor did not return after the runner caught up")
	}
	e.mirrors(1, map[string]uint64{"order-1": 3}) // reached means applied
	if err := m.Waiter("waited").WaitFor(e.ctx(), res.FirstPosition); err != nil {
		t.Errorf("Waiter.WaitFor a position reached = %v", err)
	}
	st, err := m.Status(e.ctx(), "waited")
	if err != nil || st.Name != "waited" || st.Head.Before(res.LastPosition) {
		t.Errorf("Monitor.Status = %+v, %v; want the head at or after %s", st, err, res.LastPosition)
	}
}

// copies is the read model of the rebuild test: which copy queries read.
type copies struct {
	mu     sync.Mutex
	active uint64
	swaps  [][2]uint64
}

func testRebuild(t *testing.T, e *env) {
	ctx := e.ctx()
	p := &poison{stream: "order-2", version: 1}
	p.broken.Store(true)
	fail := func(ev projection.Event) error {
		if ev.Copy == 1 {
			return p.fail(ev) // only copy 1 has the bug
		}
		return nil
	}
	model := &copies{active: 1}
	o := e.options("rebuilt", e.effects(fail))
	o.Swap = func(ctx context.Context, tx recado.Tx, old, new uint64) error {
		tx.OnCommit(func() {
			model.mu.Lock()
			model.active = new
			model.swaps = append(model.swaps, [2]uint64{old, new})
			model.mu.Unlock()
		})
		return nil
	}
	want := map[string]uint64{}
	for i := range 5 {
		stream := fmt.Sprintf("order-%d", i)
		e.appendTo(stream, types(6)...)
		want[stream] = 6
	}
	r := e.runner(o)
	e.start(r)
	e.waitFor(r, e.appendTo("order-9", "OrderNoted").LastPosition)
	want["order-9"] = 1
	letters, err := e.Stores.DeadLetters.List(ctx, deadletter.Query{Source: projection.Source("rebuilt", 1)})
	if err != nil || len(letters) != 6 {
		t.Fatalf("copy 1's open letters = %d, %v; want order-2's 6 events", len(letters), err)
	}

	// Queries read the active copy: while copy 2 is built, every read sees a
	// complete copy.
	var violations atomic.Int64
	stopReading := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stopReading:
				return
			default:
			}
			pr, err := e.Stores.Checkpoints.Get(ctx, "rebuilt")
			if err != nil {
				t.Error(err)
				return
			}
			if pr.Active.Number == 2 && len(e.effectsOf(2, "order-4")) != 6 {
				violations.Add(1)
			}
		}
	})
	n, err := r.Rebuild(ctx) // while the runner runs
	if err != nil || n != 2 {
		t.Fatalf("Rebuild = %d, %v; want copy 2", n, err)
	}
	e.eventually("copy 2 is swapped in", func() bool {
		model.mu.Lock()
		defer model.mu.Unlock()
		return model.active == 2
	})
	close(stopReading)
	readers.Wait()
	if v := violations.Load(); v != 0 {
		t.Errorf("%d reads saw copy 2 active but incomplete", v)
	}
	if len(model.swaps) != 1 || model.swaps[0] != [2]uint64{1, 2} {
		t.Errorf("Swap calls = %v, want one, from copy 1 to 2", model.swaps)
	}
	want["order-2"] = 6
	e.mirrors(2, want)
	for _, a := range e.effectsOf(2, "order-1") {
		if !a.Replay {
			t.Errorf("copy 2 applied order-1 v%d with Replay false, want true while it was rebuilt", a.V)
		}
	}
	live := e.appendTo("order-1", "OrderNoted")
	e.waitFor(r, live.LastPosition)
	if fx := e.effectsOf(2, "order-1"); len(fx) != 7 || fx[6].Replay {
		t.Errorf("copy 2 after the swap applied %+v, want a 7th event with Replay false", fx)
	}
	e.eventually("copy 1's letters are retired", func() bool {
		pr, err := e.Stores.Checkpoints.Get(ctx, "rebuilt")
		return err == nil && pr.Retiring == 0
	})
	for _, l := range letters {
		got, err := e.Stores.DeadLetters.Get(ctx, l.ID)
		if err != nil || got.State != deadletter.Discarded || !strings.Contains(got.Reason, "replaced") {
			t.Errorf("copy 1's letter %d after the rebuild = %+v, %v; want discarded as replaced", l.ID, got, err)
		}
	}
	if _, err := e.Stores.Checkpoints.Checkpoints(ctx, "rebuilt", 1); !errors.Is(err, checkpoint.ErrRetired) {
		t.Errorf("copy 1's checkpoints after the swap: %v, want ErrRetired", err)
	}
}

func testAtLeastOnce(t *testing.T, e *env) {
	var mu sync.Mutex
	count := map[string]int{} // event ID → applications
	var seen atomic.Int64
	want := map[string]bool{}
	var last recado.Position
	for i := range 4 {
		res := e.appendTo(fmt.Sprintf("order-%d", i), types(5)...)
		last = res.LastPosition
	}
	for ev, err := range e.Stores.Events.ReadAll(e.ctx(), recado.Position{}) {
		if err != nil {
			t.Fatal(err)
		}
		want[ev.ID] = true
	}
	for _, crashAt := range []int64{4, 9, -1} {
		ctx, cancel := context.WithCancel(context.Background())
		h := projection.AtLeastOnce[recado.Tx](func(_ context.Context, ev projection.Event) error {
			mu.Lock()
			count[ev.ID]++
			mu.Unlock()
			if seen.Add(1) == crashAt { // crash after the effect, before the checkpoint
				cancel()
			}
			return nil
		})
		o := e.options("outside", h)
		o.Batch = 3
		r := e.runner(o)
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		if crashAt < 0 {
			e.waitFor(r, last)
			cancel()
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	mu.Lock()
	defer mu.Unlock()
	for id := range want {
		if count[id] < 1 {
			t.Errorf("event %s was never applied", id)
		}
	}
	if len(count) != len(want) {
		t.Errorf("%d events applied, want %d", len(count), len(want))
	}
}

func testGracefulStop(t *testing.T, e *env) {
	o := e.options("stopping", e.effects(nil))
	o.Partitions = 3
	r := e.runner(o)
	run := e.start(r)
	res := e.appendTo("order-1", types(2)...)
	e.waitFor(r, res.LastPosition)
	if err := run.stop(t); err != nil {
		t.Fatalf("Run after its context ended = %v, want nil", err)
	}
	for i := range 3 {
		l, err := e.Stores.Leases.Get(e.ctx(), projection.LeaseName("stopping", 1, i))
		if err != nil || l.HeldAt(e.Stores.Leases.Now()) {
			t.Errorf("lease of partition %d after the stop = %+v, %v; want released", i, l, err)
		}
	}
	o.Partitions = 5
	err := e.runner(o).Run(e.ctx())
	if !errors.Is(err, projection.ErrInvalid) || !strings.Contains(err.Error(), "Rebuild") {
		t.Errorf("Run with 5 partitions for a copy of 3 = %v, want ErrInvalid telling to rebuild", err)
	}

	// A rebuild changes the partitions: the runner with 5 runs the copy of
	// 3 until the copy of 5 replaces it.
	o.Swap = func(context.Context, recado.Tx, uint64, uint64) error { return nil }
	r5 := e.runner(o)
	if n, err := r5.Rebuild(e.ctx()); err != nil || n != 2 {
		t.Fatalf("Rebuild with 5 partitions = %d, %v; want copy 2", n, err)
	}
	e.start(r5)
	e.eventually("the copy of 5 partitions is active", func() bool {
		p, err := e.Stores.Checkpoints.Get(e.ctx(), "stopping")
		return err == nil && p.Active == checkpoint.Copy{Number: 2, Partitions: 5}
	})
	e.waitFor(r5, e.appendTo("order-1", "OrderNoted").LastPosition)
	e.mirrors(2, map[string]uint64{"order-1": 3})
}
