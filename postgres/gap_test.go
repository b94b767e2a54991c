package postgres

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

// guard is a hang guard for the tests that wait on a subscriber: never a
// measure of speed.
const guard = 60 * time.Second

// delivery is what a subscriber saw: every event in order, and the position
// of every message (its checkpoints).
type delivery struct {
	mu          sync.Mutex
	events      []recado.Event
	checkpoint  recado.Position
	changed     chan struct{}
	subscribeNo int
}

func newDelivery() *delivery { return &delivery{changed: make(chan struct{}, 1)} }

func (d *delivery) see(m eventstore.Message) {
	d.mu.Lock()
	if m.Kind == eventstore.KindEvent {
		d.events = append(d.events, m.Event)
	}
	d.checkpoint = m.Position
	d.mu.Unlock()
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

func (d *delivery) snapshot() ([]recado.Event, recado.Position) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]recado.Event(nil), d.events...), d.checkpoint
}

// follow subscribes to s after `after` with opts until ctx ends, recording
// into d; when the subscription fails (a dropped connection, say) it
// subscribes again after its checkpoint, as an application would.
func follow(ctx context.Context, s *eventstore.Store, after recado.Position, d *delivery, opts ...eventstore.SubscribeOption) {
	d.mu.Lock()
	d.checkpoint = after
	d.mu.Unlock()
	for ctx.Err() == nil {
		_, from := d.snapshot()
		d.mu.Lock()
		d.subscribeNo++
		d.mu.Unlock()
		for m, err := range s.Subscribe(ctx, from, opts...) {
			if err != nil {
				break
			}
			d.see(m)
		}
	}
}

// waitFor waits until d has delivered every event of want, or the guard
// passes.
func (d *delivery) waitFor(t *testing.T, want map[string]bool) {
	t.Helper()
	deadline := time.After(guard)
	for {
		events, _ := d.snapshot()
		seen := 0
		for _, e := range events {
			if want[e.ID] {
				seen++
			}
		}
		if seen >= len(want) {
			return
		}
		select {
		case <-d.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("subscriber delivered %d of %d events within %s: events were skipped or never delivered", seen, len(want), guard)
		}
	}
}

// checkLog fails t unless events hold every event of want exactly once and
// nothing else, with positions increasing and each stream's versions
// consecutive from its first delivered version.
func checkLog(t *testing.T, who string, events []recado.Event, want map[string]bool) {
	t.Helper()
	seen := map[string]int{}
	versions := map[string]uint64{}
	var last recado.Position
	for _, e := range events {
		seen[e.ID]++
		if seen[e.ID] == 2 {
			t.Errorf("%s: event %s (stream %q version %d) delivered twice", who, e.ID, e.Stream, e.Version)
		}
		if !want[e.ID] {
			t.Errorf("%s: event %s delivered, never committed", who, e.ID)
		}
		if !last.Before(e.Position) {
			t.Errorf("%s: position %s after %s", who, e.Position, last)
		}
		last = e.Position
		if v, ok := versions[e.Stream]; ok && e.Version != v+1 {
			t.Errorf("%s: stream %q version %d delivered after version %d", who, e.Stream, e.Version, v)
		}
		versions[e.Stream] = e.Version
	}
	for id := range want {
		if seen[id] == 0 {
			t.Errorf("%s: committed event %s never delivered", who, id)
		}
	}
}

// TestGapTorture: a slow transaction takes its transaction id, appends and
// waits while writers in two pools (two processes) append and commit many
// events to shared streams; it then appends to a shared stream too (carrying
// a smaller transaction id than the stream's earlier versions) and commits.
// A subscriber running the whole time, and one resumed from a checkpoint taken
// during the wait, deliver every event exactly once, each stream in order.
func TestGapTorture(t *testing.T) {
	for _, exact := range []bool{false, true} {
		name := "Any"
		if exact {
			name = "Exact"
		}
		t.Run(name, func(t *testing.T) { testGapTorture(t, exact) })
	}
}

func testGapTorture(t *testing.T, exact bool) {
	schema := newSchema(t)
	procA := openOn(t, newPool(t, ""), Options{Schema: schema})
	procB := openOn(t, newPool(t, ""), Options{Schema: schema})
	reader := openOn(t, newPool(t, ""), Options{Schema: schema})
	poll := eventstore.WithPollInterval(50 * time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var mu sync.Mutex
	committed := map[string]bool{}
	record := func(events []recado.Event) {
		mu.Lock()
		for _, e := range events {
			committed[e.ID] = true
		}
		mu.Unlock()
	}
	appendShared := func(s *eventstore.Store, stream string, events []recado.Event) error {
		for {
			var opt eventstore.AppendOption = eventstore.Expect(eventstore.Any)
			if exact {
				v, err := lastVersion(ctx, s, stream)
				if err != nil {
					return err
				}
				opt = eventstore.ExpectVersion(v)
			}
			_, err := s.Append(ctx, stream, events, opt)
			if errors.Is(err, eventstore.ErrConflict) {
				continue
			}
			if err == nil {
				record(events)
			}
			return err
		}
	}

	// Some history, delivered before the slow transaction starts.
	first := testEvents("Before", 5)
	if err := appendShared(procA.Events(), "shared-0", first); err != nil {
		t.Fatal(err)
	}
	live := newDelivery()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { follow(ctx, reader.Events(), recado.Position{}, live, poll) })
	live.waitFor(t, map[string]bool{first[0].ID: true, first[4].ID: true})

	// The slow transaction.
	opened, release := make(chan struct{}), make(chan struct{})
	slowOwn, slowShared := testEvents("SlowOwn", 2), testEvents("SlowShared", 2)
	slowDone := make(chan error, 1)
	go func() {
		slowDone <- procA.Tx(ctx, func(tx *Tx) error {
			if _, err := procA.Events().Append(ctx, "slow", slowOwn, eventstore.InTx(tx)); err != nil {
				return err
			}
			close(opened)
			select {
			case <-release:
			case <-ctx.Done(): // the test failed: end the transaction
				return ctx.Err()
			}
			var opt eventstore.AppendOption = eventstore.Expect(eventstore.Any)
			if exact {
				v, err := lastVersion(ctx, procA.Events(), "shared-1")
				if err != nil {
					return err
				}
				opt = eventstore.ExpectVersion(v)
			}
			_, err := procA.Events().Append(ctx, "shared-1", slowShared, opt, eventstore.InTx(tx))
			return err
		})
	}()
	select {
	case <-opened:
	case err := <-slowDone:
		t.Fatalf("slow transaction: %v", err)
	}

	// Many writers in two pools commit after it.
	var writers sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		s := procA.Events()
		if g%2 == 1 {
			s = procB.Events()
		}
		writers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			for i := range 25 {
				stream := fmt.Sprintf("shared-%d", rng.IntN(4))
				if i%5 == 0 {
					stream = fmt.Sprintf("own-%d", g)
				}
				if err := appendShared(s, stream, testEvents(fmt.Sprintf("W%d", g), 1+rng.IntN(3))); err != nil {
					errs <- fmt.Errorf("writer %d: %w", g, err)
					return
				}
			}
		})
	}
	writers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// During the wait: readers are held back, and say so.
	h, err := reader.Horizon(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.HeldBack == 0 || h.Age <= 0 || h.PID == 0 {
		t.Errorf("Horizon while the slow transaction is open = %+v, want events held back by an open transaction", h)
	}
	_, checkpoint := live.snapshot()

	close(release)
	if err := <-slowDone; err != nil {
		t.Fatalf("slow transaction: %v", err)
	}
	record(slowOwn)
	record(slowShared)

	mu.Lock()
	want := map[string]bool{}
	for id := range committed {
		want[id] = true
	}
	mu.Unlock()
	live.waitFor(t, want)
	events, _ := live.snapshot()
	checkLog(t, "subscriber running throughout", events, want)

	// A subscriber resuming from the checkpoint taken during the wait.
	resumed := newDelivery()
	var afterCheckpoint map[string]bool = map[string]bool{}
	for _, e := range events {
		if checkpoint.Before(e.Position) {
			afterCheckpoint[e.ID] = true
		}
	}
	for _, e := range append(slowOwn, slowShared...) {
		if !afterCheckpoint[e.ID] {
			t.Errorf("slow event %s lies before the checkpoint %s taken while it was uncommitted", e.ID, checkpoint)
		}
	}
	ctx2, cancel2 := context.WithCancel(ctx)
	wg.Go(func() { follow(ctx2, reader.Events(), checkpoint, resumed, poll) })
	resumed.waitFor(t, afterCheckpoint)
	cancel2()
	got, _ := resumed.snapshot()
	checkLog(t, "subscriber resumed from the checkpoint", got, afterCheckpoint)

	// And a plain read of the whole log agrees.
	var all []recado.Event
	for e, err := range reader.Events().ReadAll(ctx, recado.Position{}) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, e)
	}
	checkLog(t, "ReadAll", all, want)
}

// lastVersion returns the stream's last version, 0 if it never had events.
func lastVersion(ctx context.Context, s *eventstore.Store, stream string) (uint64, error) {
	st, err := s.State(ctx, stream)
	return st.Version, err
}

func testEvents(typ string, n int) []recado.Event {
	events := make([]recado.Event, n)
	for i := range events {
		events[i] = recado.NewEvent(typ, fmt.Appendf(nil, `{"i":%d}`, i))
	}
	return events
}
