// Package deadlettertest is the conformance suite every backend of package
// deadletter runs from its own tests: the Store's contract, and the
// operators' HTTP handler over the backend's Store.
//
//	func TestDeadLetters(t *testing.T) {
//		deadlettertest.Run(t, func(tb testing.TB, cfg deadletter.Config) deadlettertest.Backend {
//			db := memory.New()
//			tb.Cleanup(func() { db.Close() })
//			return deadlettertest.Backend{Store: db.DeadLetters(cfg), Tx: ...}
//		})
//	}
//
// The suite drives the Store's clock through the [deadletter.Config] it
// passes to the factory. It proves: letters keep the message, the error and
// its class, the attempts and the failure times; bad input is refused and
// stores nothing; keys block and unblock; replays are delivered in the
// key's order and stop at the first failure; replay and discard of letters
// that do not exist, were handled, or are under way are errors, also under
// concurrency; groups and group replays; list filters and pages; adding,
// parking and delivering commit with their unit of work or not at all;
// retention of audit records; and, for backends that keep data, that a
// restart loses nothing.
package deadlettertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// Backend is a backend under test.
type Backend struct {
	// Store is a Store of a fresh, empty DB, made with the Config the
	// factory was given.
	Store *deadletter.Store
	// Tx runs fn in a unit of work of the same DB; nil if the backend has
	// none (the unit-of-work tests are then skipped).
	Tx func(ctx context.Context, fn func(tx recado.Tx) error) error
	// Reopen closes the DB and opens it again on the same storage, with the
	// same Config, as a process restart would; nil if the backend keeps
	// nothing across a restart (memory).
	Reopen func() Backend
}

// Factory returns a fresh backend whose Store uses cfg. It registers its own
// cleanup with tb.
type Factory func(tb testing.TB, cfg deadletter.Config) Backend

// T0 is the time the suite's clock starts at.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

// The settings the suite configures.
const (
	Retention    = time.Hour
	CleanupBatch = 2
)

// Run runs the suite as subtests of t, each with its own backend.
func Run(t *testing.T, newBackend Factory) {
	groups := []struct {
		name  string
		tests []test
	}{
		{"Store", storeTests},
		{"HTTP", httpTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					clock := resiliencetest.NewClock(T0)
					cfg := deadletter.Config{Now: clock.Now, Retention: Retention, CleanupBatch: CleanupBatch}
					tc.run(t, &env{Backend: newBackend(t, cfg), clock: clock, cfg: cfg, newBackend: newBackend})
				})
			}
		})
	}
}

type test struct {
	name string
	run  func(t *testing.T, e *env)
}

type env struct {
	Backend
	clock      *resiliencetest.Clock
	cfg        deadletter.Config
	newBackend Factory
}

var storeTests = []test{
	{"AddAndGet", testAddAndGet},
	{"ErrorText", testErrorText},
	{"Invalid", testInvalid},
	{"Blocking", testBlocking},
	{"ReplayInOrder", testReplayInOrder},
	{"ReplayStopsAtFailure", testReplayStopsAtFailure},
	{"ReplayErrors", testReplayErrors},
	{"Discard", testDiscard},
	{"DeliveredNeedsRequest", testDeliveredNeedsRequest},
	{"ConcurrentReplay", testConcurrentReplay},
	{"List", testList},
	{"Groups", testGroups},
	{"ReplayGroup", testReplayGroup},
	{"UnitOfWork", testUnitOfWork},
	{"ForeignTx", testForeignTx},
	{"Cleanup", testCleanup},
	{"Restart", testRestart},
}

const src = "projection:orders"

var errBoom = errors.New("orders: column \"total\" does not exist")

func msg(i int) recado.Event {
	return recado.Event{ID: fmt.Sprintf("m-%d", i), Stream: "order-1", Version: uint64(i), Position: recado.NewPosition(uint64(100+i), 0),
		Type: "OrderPlaced", Data: fmt.Appendf(nil, `{"i":%d}`, i), Time: T0.Add(-time.Hour).Truncate(time.Microsecond),
		Metadata: recado.Metadata{CorrelationID: "corr", Fields: map[string]string{"tenant": "acme"}}}
}

func add(t *testing.T, e *env, tx recado.Tx, key string, i int, cause error) deadletter.Letter {
	t.Helper()
	l, err := e.Store.Add(t.Context(), tx, deadletter.Failure{Source: src, Key: key, Message: msg(i), Err: cause, Attempts: 3})
	if err != nil {
		t.Fatalf("Add(key %q, message %d): %v", key, i, err)
	}
	return l
}

func park(t *testing.T, e *env, tx recado.Tx, key string, i int) deadletter.Letter {
	t.Helper()
	l, err := e.Store.Park(t.Context(), tx, src, key, msg(i))
	if err != nil {
		t.Fatalf("Park(key %q, message %d): %v", key, i, err)
	}
	return l
}

func get(t *testing.T, e *env, id uint64) deadletter.Letter {
	t.Helper()
	l, err := e.Store.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%d): %v", id, err)
	}
	return l
}

func wantState(t *testing.T, e *env, id uint64, want deadletter.State) deadletter.Letter {
	t.Helper()
	l := get(t, e, id)
	if l.State != want {
		t.Fatalf("letter %d is %v, want %v", id, l.State, want)
	}
	return l
}

func blocked(t *testing.T, e *env, source string) []string {
	t.Helper()
	keys, err := e.Store.Blocked(t.Context(), source)
	if err != nil {
		t.Fatalf("Blocked(%q): %v", source, err)
	}
	return keys
}

func replay(t *testing.T, e *env, ids ...uint64) {
	t.Helper()
	if n, err := e.Store.Replay(t.Context(), ids...); err != nil || n != len(ids) {
		t.Fatalf("Replay(%v) = %d, %v", ids, n, err)
	}
}

// redeliver runs Redeliver, failing the messages whose ID is in failOn, and
// returns the IDs of the messages it was given, in order.
func redeliver(t *testing.T, e *env, failOn ...string) []string {
	t.Helper()
	var got []string
	_, err := e.Store.Redeliver(t.Context(), src, func(ctx context.Context, l deadletter.Letter) error {
		got = append(got, l.Message.ID)
		if slices.Contains(failOn, l.Message.ID) {
			return resilience.MarkPermanent(fmt.Errorf("still failing: %s", l.Message.ID))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Redeliver: %v", err)
	}
	return got
}

func now(e *env) time.Time { return e.clock.Now().UTC().Truncate(time.Microsecond) }

func needTx(t *testing.T, e *env) {
	if e.Tx == nil {
		t.Skip("backend has no unit of work")
	}
}

// sameMessage compares two messages field by field.
func sameMessage(a, b recado.Event) bool {
	return a.ID == b.ID && a.Stream == b.Stream && a.Version == b.Version && a.Position == b.Position &&
		a.Type == b.Type && bytes.Equal(a.Data, b.Data) && a.Time.Equal(b.Time) &&
		a.Metadata.CorrelationID == b.Metadata.CorrelationID && a.Metadata.CausationID == b.Metadata.CausationID &&
		a.Metadata.IdempotencyKey == b.Metadata.IdempotencyKey && a.Metadata.TraceParent == b.Metadata.TraceParent &&
		a.Metadata.TraceState == b.Metadata.TraceState && maps.Equal(a.Metadata.Fields, b.Metadata.Fields)
}

func testAddAndGet(t *testing.T, e *env) {
	m := msg(1)
	m.Time = m.Time.Add(789 * time.Nanosecond) // kept to the microsecond
	first := T0.Add(-10 * time.Minute)
	l, err := e.Store.Add(t.Context(), nil, deadletter.Failure{Source: src, Key: "order-1", Message: m,
		Err: resilience.MarkPermanent(errBoom), Attempts: 5, FirstFailure: first})
	if err != nil {
		t.Fatal(err)
	}
	m.Data[0] = 'X' // the letter keeps its own copy
	m.Metadata.Fields["tenant"] = "changed"
	got := get(t, e, l.ID)
	if got.ID == 0 || got.Source != src || got.Key != "order-1" || got.State != deadletter.Failed ||
		got.Error != errBoom.Error() || got.Class != resilience.ClassPermanent || got.Attempts != 5 {
		t.Errorf("Get = %+v", got)
	}
	if !got.FirstFailure.Equal(first.Truncate(time.Microsecond)) || !got.LastFailure.Equal(now(e)) || !got.Added.Equal(now(e)) ||
		!got.Requested.IsZero() || !got.Handled.IsZero() || got.Reason != "" {
		t.Errorf("Get times = added %v first %v last %v requested %v handled %v; want added and last %v, first %v",
			got.Added, got.FirstFailure, got.LastFailure, got.Requested, got.Handled, now(e), first)
	}
	if want := msg(1); !sameMessage(got.Message, want) {
		t.Errorf("Get message = %+v, want %+v", got.Message, want)
	}
	if got.Added.Location() != time.UTC || got.Message.Time.Location() != time.UTC {
		t.Error("times are not in UTC")
	}
	if !sameMessage(l.Message, got.Message) || l.ID != got.ID {
		t.Errorf("Add returned %+v, Get %+v", l, got)
	}
	// Defaults: one attempt, the first failure now; IDs grow.
	e.clock.Advance(time.Second)
	l2, err := e.Store.Add(t.Context(), nil, deadletter.Failure{Source: src, Message: recado.Event{Type: "Raw"}, Err: errBoom})
	if err != nil {
		t.Fatal(err)
	}
	got2 := get(t, e, l2.ID)
	if l2.ID <= l.ID || got2.Attempts != 1 || !got2.FirstFailure.Equal(now(e)) || got2.Class != resilience.ClassTransient {
		t.Errorf("second letter = %+v, want ID above %d, 1 attempt, first failure %v, transient", got2, l.ID, now(e))
	}
	if _, err := e.Store.Get(t.Context(), l2.ID+1000); !errors.Is(err, deadletter.ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
}

func testErrorText(t *testing.T, e *env) {
	bad := add(t, e, nil, "", 1, errors.New("bad \xff byte and \x00 NUL"))
	if got := get(t, e, bad.ID).Error; got != "bad \uFFFD byte and \uFFFD NUL" {
		t.Errorf("error text = %q, want invalid UTF-8 and NUL replaced", got)
	}
	long := add(t, e, nil, "", 2, errors.New(strings.Repeat("é", deadletter.MaxErrorLen)))
	if got := get(t, e, long.ID).Error; len(got) != deadletter.MaxErrorLen || got != strings.Repeat("é", deadletter.MaxErrorLen/2) {
		t.Errorf("a long error text was kept as %d bytes, want it cut to %d on a character boundary", len(got), deadletter.MaxErrorLen)
	}
}

func testInvalid(t *testing.T, e *env) {
	ctx := t.Context()
	good := deadletter.Failure{Source: src, Key: "k", Message: msg(1), Err: errBoom}
	with := func(f func(*deadletter.Failure)) deadletter.Failure { c := good; f(&c); return c }
	cases := []struct {
		name string
		f    deadletter.Failure
	}{
		{"no source", with(func(f *deadletter.Failure) { f.Source = "" })},
		{"long source", with(func(f *deadletter.Failure) { f.Source = strings.Repeat("s", deadletter.MaxSourceLen+1) })},
		{"source not UTF-8", with(func(f *deadletter.Failure) { f.Source = "s\xff" })},
		{"source with NUL", with(func(f *deadletter.Failure) { f.Source = "s\x00" })},
		{"long key", with(func(f *deadletter.Failure) { f.Key = strings.Repeat("k", deadletter.MaxKeyLen+1) })},
		{"key not UTF-8", with(func(f *deadletter.Failure) { f.Key = "\xff" })},
		{"no error", with(func(f *deadletter.Failure) { f.Err = nil })},
		{"negative attempts", with(func(f *deadletter.Failure) { f.Attempts = -1 })},
		{"message type not UTF-8", with(func(f *deadletter.Failure) { f.Message.Type = "T\xff" })},
		{"long message ID", with(func(f *deadletter.Failure) { f.Message.ID = strings.Repeat("i", deadletter.MaxIDLen+1) })},
		{"message stream with NUL", with(func(f *deadletter.Failure) { f.Message.Stream = "s\x00" })},
		{"bad metadata", with(func(f *deadletter.Failure) { f.Message.Metadata.Fields = map[string]string{"": "x"} })},
		{"first failure in year 10000", with(func(f *deadletter.Failure) { f.FirstFailure = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) })},
	}
	for _, c := range cases {
		_, err := e.Store.Add(ctx, nil, c.f)
		var de *deadletter.Error
		if !errors.Is(err, deadletter.ErrInvalid) || !errors.As(err, &de) {
			t.Errorf("Add with %s = %v, want an *Error wrapping ErrInvalid", c.name, err)
		}
	}
	if _, err := e.Store.Park(ctx, nil, src, "", msg(1)); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("Park without a key = %v, want ErrInvalid", err)
	}
	if _, err := e.Store.Blocked(ctx, ""); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("Blocked of no source = %v, want ErrInvalid", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Store.Add(cancelled, nil, good); !errors.Is(err, context.Canceled) {
		t.Errorf("Add with a cancelled context = %v, want context.Canceled", err)
	}
	letters, err := e.Store.List(ctx, deadletter.Query{States: allStates})
	if err != nil || len(letters) != 0 {
		t.Errorf("after refused input, List = %d letters, %v; want none", len(letters), err)
	}
	if keys := blocked(t, e, src); len(keys) != 0 {
		t.Errorf("after refused input, blocked keys %v", keys)
	}
	// The longest names are stored.
	longest := deadletter.Failure{Source: strings.Repeat("s", deadletter.MaxSourceLen), Key: strings.Repeat("k", deadletter.MaxKeyLen),
		Message: recado.Event{ID: strings.Repeat("i", deadletter.MaxIDLen), Type: strings.Repeat("t", deadletter.MaxTypeLen),
			Stream: strings.Repeat("s", deadletter.MaxStreamLen)}, Err: errBoom}
	l, err := e.Store.Add(ctx, nil, longest)
	if err != nil {
		t.Fatalf("Add with the longest names: %v", err)
	}
	if got := get(t, e, l.ID); got.Key != longest.Key || got.Message.Stream != longest.Message.Stream {
		t.Error("the longest names did not come back whole")
	}
}

var allStates = []deadletter.State{deadletter.Failed, deadletter.Parked, deadletter.Requested, deadletter.Replayed, deadletter.Discarded}

func testBlocking(t *testing.T, e *env) {
	if keys := blocked(t, e, src); len(keys) != 0 {
		t.Fatalf("Blocked of an empty queue = %v", keys)
	}
	add(t, e, nil, "order-2", 1, errBoom)
	add(t, e, nil, "order-1", 2, errBoom)
	add(t, e, nil, "", 3, errBoom) // no key: blocks nothing
	if _, err := e.Store.Add(t.Context(), nil, deadletter.Failure{Source: "other", Key: "order-9", Message: msg(4), Err: errBoom}); err != nil {
		t.Fatal(err)
	}
	if keys := blocked(t, e, src); !slices.Equal(keys, []string{"order-1", "order-2"}) {
		t.Errorf("Blocked = %v, want [order-1 order-2]", keys)
	}
	p := park(t, e, nil, "order-1", 5)
	if p.State != deadletter.Parked || p.Error != "" || p.Attempts != 0 || !p.FirstFailure.IsZero() || !p.Added.Equal(now(e)) {
		t.Errorf("parked letter = %+v", p)
	}
	_, err := e.Store.Park(t.Context(), nil, src, "order-3", msg(6))
	if !errors.Is(err, deadletter.ErrNotBlocked) {
		t.Errorf("Park on a key that is not blocked = %v, want ErrNotBlocked", err)
	}
	if _, err := e.Store.Park(t.Context(), nil, "other", "order-1", msg(6)); !errors.Is(err, deadletter.ErrNotBlocked) {
		t.Errorf("Park on a key blocked for another source = %v, want ErrNotBlocked", err)
	}
	if keys := blocked(t, e, "other"); !slices.Equal(keys, []string{"order-9"}) {
		t.Errorf("Blocked(other) = %v", keys)
	}
}

func testReplayInOrder(t *testing.T, e *env) {
	l1 := add(t, e, nil, "order-1", 1, errBoom)
	p2 := park(t, e, nil, "order-1", 2)
	p3 := park(t, e, nil, "order-1", 3)
	other := add(t, e, nil, "order-2", 4, errBoom)
	if got := redeliver(t, e); len(got) != 0 {
		t.Fatalf("Redeliver without requests delivered %v", got)
	}
	e.clock.Advance(time.Second)
	replay(t, e, l1.ID)
	if r := wantState(t, e, l1.ID, deadletter.Requested); !r.Requested.Equal(now(e)) {
		t.Errorf("Requested time %v, want %v", r.Requested, now(e))
	}
	reqs, err := e.Store.Requests(t.Context(), src, 0)
	if err != nil || len(reqs) != 1 || reqs[0].ID != l1.ID {
		t.Fatalf("Requests = %v, %v; want letter %d", reqs, err, l1.ID)
	}
	if got := redeliver(t, e); !slices.Equal(got, []string{"m-1", "m-2", "m-3"}) {
		t.Errorf("delivered %v, want [m-1 m-2 m-3]: the letter, then its parked messages in order", got)
	}
	for _, id := range []uint64{l1.ID, p2.ID, p3.ID} {
		if l := wantState(t, e, id, deadletter.Replayed); !l.Handled.Equal(now(e)) {
			t.Errorf("letter %d handled at %v, want %v", id, l.Handled, now(e))
		}
	}
	wantState(t, e, other.ID, deadletter.Failed)
	if keys := blocked(t, e, src); !slices.Equal(keys, []string{"order-2"}) {
		t.Errorf("Blocked after the replay = %v, want [order-2]", keys)
	}
	if _, err := e.Store.Park(t.Context(), nil, src, "order-1", msg(5)); !errors.Is(err, deadletter.ErrNotBlocked) {
		t.Errorf("Park after the key's queue emptied = %v, want ErrNotBlocked", err)
	}
}

func testReplayStopsAtFailure(t *testing.T, e *env) {
	l1 := add(t, e, nil, "order-1", 1, errBoom)
	p2 := park(t, e, nil, "order-1", 2)
	p3 := park(t, e, nil, "order-1", 3)
	p4 := park(t, e, nil, "order-1", 4)
	replay(t, e, l1.ID)
	e.clock.Advance(time.Second)
	if got := redeliver(t, e, "m-3"); !slices.Equal(got, []string{"m-1", "m-2", "m-3"}) {
		t.Fatalf("delivered %v, want [m-1 m-2 m-3] and a stop at m-3", got)
	}
	wantState(t, e, l1.ID, deadletter.Replayed)
	wantState(t, e, p2.ID, deadletter.Replayed)
	failed := wantState(t, e, p3.ID, deadletter.Failed)
	if failed.Attempts != 1 || failed.Error != "still failing: m-3" || failed.Class != resilience.ClassPermanent ||
		!failed.FirstFailure.Equal(now(e)) || !failed.LastFailure.Equal(now(e)) {
		t.Errorf("the parked message that failed = %+v", failed)
	}
	wantState(t, e, p4.ID, deadletter.Parked)
	if keys := blocked(t, e, src); !slices.Equal(keys, []string{"order-1"}) {
		t.Errorf("Blocked = %v, want the key still blocked", keys)
	}
	_, err := e.Store.Replay(t.Context(), p4.ID)
	var se *deadletter.StateError
	if !errors.Is(err, deadletter.ErrState) || !errors.As(err, &se) || se.Head != p3.ID {
		t.Errorf("Replay of a message behind the failed one = %v, want ErrState naming head %d", err, p3.ID)
	}
	// The letter that failed again is replayed again, and so on.
	replay(t, e, p3.ID)
	e.clock.Advance(time.Second)
	if got := redeliver(t, e, "m-3"); !slices.Equal(got, []string{"m-3"}) {
		t.Fatalf("second replay delivered %v, want [m-3]", got)
	}
	if l := wantState(t, e, p3.ID, deadletter.Failed); l.Attempts != 2 || !l.LastFailure.Equal(now(e)) || l.FirstFailure.Equal(now(e)) {
		t.Errorf("after failing twice: attempts %d, first %v, last %v", l.Attempts, l.FirstFailure, l.LastFailure)
	}
	replay(t, e, p3.ID)
	if got := redeliver(t, e); !slices.Equal(got, []string{"m-3", "m-4"}) {
		t.Errorf("third replay delivered %v, want [m-3 m-4]", got)
	}
	if keys := blocked(t, e, src); len(keys) != 0 {
		t.Errorf("Blocked = %v, want none", keys)
	}
}

func testReplayErrors(t *testing.T, e *env) {
	ctx := t.Context()
	l1 := add(t, e, nil, "order-1", 1, errBoom)
	p2 := park(t, e, nil, "order-1", 2)
	l3 := add(t, e, nil, "", 3, errBoom)
	l4 := add(t, e, nil, "order-4", 4, errBoom)
	if _, err := e.Store.Replay(ctx, 9999); !errors.Is(err, deadletter.ErrNotFound) {
		t.Errorf("Replay(missing) = %v, want ErrNotFound", err)
	}
	if _, err := e.Store.Replay(ctx, p2.ID); !errors.Is(err, deadletter.ErrState) {
		t.Errorf("Replay(parked) = %v, want ErrState", err)
	}
	if _, err := e.Store.Replay(ctx); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("Replay() = %v, want ErrInvalid", err)
	}
	if _, err := e.Store.Replay(ctx, l1.ID, l1.ID); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("Replay of one letter twice = %v, want ErrInvalid", err)
	}
	// All or none.
	n, err := e.Store.Replay(ctx, l3.ID, l4.ID, 9999)
	if !errors.Is(err, deadletter.ErrNotFound) || n != 0 {
		t.Errorf("Replay with a missing letter = %d, %v; want 0, ErrNotFound", n, err)
	}
	wantState(t, e, l3.ID, deadletter.Failed)
	wantState(t, e, l4.ID, deadletter.Failed)
	replay(t, e, l1.ID, l3.ID)
	// Never a second replay.
	if _, err := e.Store.Replay(ctx, l1.ID); !errors.Is(err, deadletter.ErrState) {
		t.Errorf("Replay of a letter whose replay is requested = %v, want ErrState", err)
	}
	redeliver(t, e)
	_, err = e.Store.Replay(ctx, l1.ID)
	var se *deadletter.StateError
	if !errors.Is(err, deadletter.ErrHandled) || !errors.As(err, &se) || se.State != deadletter.Replayed {
		t.Errorf("Replay of a replayed letter = %v, want ErrHandled", err)
	}
	if errors.Is(err, deadletter.ErrState) {
		t.Error("ErrHandled also matches ErrState")
	}
}

func testDiscard(t *testing.T, e *env) {
	ctx := t.Context()
	l1 := add(t, e, nil, "order-1", 1, errBoom)
	p2 := park(t, e, nil, "order-1", 2)
	p3 := park(t, e, nil, "order-1", 3)
	p4 := park(t, e, nil, "order-1", 4)
	if err := e.Store.Discard(ctx, l1.ID, ""); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("Discard without a reason = %v, want ErrInvalid", err)
	}
	if err := e.Store.Discard(ctx, l1.ID, strings.Repeat("r", deadletter.MaxReasonLen+1)); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("Discard with a long reason = %v, want ErrInvalid", err)
	}
	wantState(t, e, l1.ID, deadletter.Failed)
	// A parked message in the middle of the queue: gone, nothing else moves.
	if err := e.Store.Discard(ctx, p3.ID, "duplicate of m-2"); err != nil {
		t.Fatal(err)
	}
	wantState(t, e, p2.ID, deadletter.Parked)
	e.clock.Advance(time.Second)
	if err := e.Store.Discard(ctx, l1.ID, "bad data, fixed by hand"); err != nil {
		t.Fatal(err)
	}
	d := wantState(t, e, l1.ID, deadletter.Discarded)
	if d.Reason != "bad data, fixed by hand" || !d.Handled.Equal(now(e)) {
		t.Errorf("discarded letter = %+v", d)
	}
	// The head is gone: the next message is requested and flows.
	wantState(t, e, p2.ID, deadletter.Requested)
	if err := e.Store.Discard(ctx, p2.ID, "x"); !errors.Is(err, deadletter.ErrState) {
		t.Errorf("Discard of a letter whose delivery is requested = %v, want ErrState", err)
	}
	if got := redeliver(t, e); !slices.Equal(got, []string{"m-2", "m-4"}) {
		t.Errorf("after discarding the head, delivered %v, want [m-2 m-4]", got)
	}
	wantState(t, e, p4.ID, deadletter.Replayed)
	if err := e.Store.Discard(ctx, l1.ID, "again"); !errors.Is(err, deadletter.ErrHandled) {
		t.Errorf("second Discard = %v, want ErrHandled", err)
	}
	if err := e.Store.Discard(ctx, p4.ID, "late"); !errors.Is(err, deadletter.ErrHandled) {
		t.Errorf("Discard of a replayed letter = %v, want ErrHandled", err)
	}
	if err := e.Store.Discard(ctx, 9999, "x"); !errors.Is(err, deadletter.ErrNotFound) {
		t.Errorf("Discard(missing) = %v, want ErrNotFound", err)
	}
	if _, err := e.Store.Replay(ctx, l1.ID); !errors.Is(err, deadletter.ErrHandled) {
		t.Errorf("Replay of a discarded letter = %v, want ErrHandled", err)
	}
	if keys := blocked(t, e, src); len(keys) != 0 {
		t.Errorf("Blocked = %v, want none", keys)
	}
	// A failed letter behind another can be discarded too.
	a := add(t, e, nil, "order-5", 5, errBoom)
	b := add(t, e, nil, "order-5", 6, errBoom)
	if err := e.Store.Discard(ctx, b.ID, "obsolete"); err != nil {
		t.Fatal(err)
	}
	wantState(t, e, a.ID, deadletter.Failed)
}

func testDeliveredNeedsRequest(t *testing.T, e *env) {
	ctx := t.Context()
	l := add(t, e, nil, "order-1", 1, errBoom)
	if err := e.Store.Delivered(ctx, nil, l.ID); !errors.Is(err, deadletter.ErrState) {
		t.Errorf("Delivered of a letter not requested = %v, want ErrState", err)
	}
	if err := e.Store.FailedAgain(ctx, nil, l.ID, errBoom); !errors.Is(err, deadletter.ErrState) {
		t.Errorf("FailedAgain of a letter not requested = %v, want ErrState", err)
	}
	if err := e.Store.Delivered(ctx, nil, 9999); !errors.Is(err, deadletter.ErrNotFound) {
		t.Errorf("Delivered(missing) = %v, want ErrNotFound", err)
	}
	replay(t, e, l.ID)
	if err := e.Store.FailedAgain(ctx, nil, l.ID, nil); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("FailedAgain without an error = %v, want ErrInvalid", err)
	}
	if err := e.Store.Delivered(ctx, nil, l.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.Store.Delivered(ctx, nil, l.ID); !errors.Is(err, deadletter.ErrHandled) {
		t.Errorf("second Delivered = %v, want ErrHandled", err)
	}
}

func testConcurrentReplay(t *testing.T, e *env) {
	l := add(t, e, nil, "order-1", 1, errBoom)
	const n = 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range n {
		wg.Go(func() {
			var err error
			if i%3 == 0 {
				err = e.Store.Discard(t.Context(), l.ID, "racing")
			} else {
				_, err = e.Store.Replay(t.Context(), l.ID)
			}
			switch {
			case err == nil:
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, deadletter.ErrState) && !errors.Is(err, deadletter.ErrHandled):
				t.Errorf("concurrent replay or discard: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d of %d concurrent replays and discards of one letter succeeded, want exactly 1", wins, n)
	}
}

func testList(t *testing.T, e *env) {
	ctx := t.Context()
	var ids []uint64
	for i := range 5 {
		ids = append(ids, add(t, e, nil, fmt.Sprintf("k%d", i), i, fmt.Errorf("error %d", i%2)).ID)
		e.clock.Advance(time.Minute)
	}
	if _, err := e.Store.Add(ctx, nil, deadletter.Failure{Source: "other", Message: msg(9), Err: errBoom}); err != nil {
		t.Fatal(err)
	}
	replay(t, e, ids[0])
	redeliver(t, e) // ids[0] replayed: not open any more
	list := func(q deadletter.Query) []uint64 {
		t.Helper()
		letters, err := e.Store.List(ctx, q)
		if err != nil {
			t.Fatalf("List(%+v): %v", q, err)
		}
		var got []uint64
		for _, l := range letters {
			got = append(got, l.ID)
		}
		return got
	}
	cases := []struct {
		name string
		q    deadletter.Query
		want []uint64
	}{
		{"source, open by default", deadletter.Query{Source: src}, ids[1:]},
		{"replayed", deadletter.Query{Source: src, States: []deadletter.State{deadletter.Replayed}}, ids[:1]},
		{"all states", deadletter.Query{Source: src, States: allStates}, ids},
		{"error contains", deadletter.Query{Source: src, ErrorContains: "error 1"}, []uint64{ids[1], ids[3]}},
		{"since", deadletter.Query{Source: src, Since: T0.Add(3 * time.Minute)}, ids[3:]},
		{"until", deadletter.Query{Source: src, Until: T0.Add(2*time.Minute + time.Microsecond), States: allStates}, ids[:3]},
		{"page 1", deadletter.Query{Source: src, Limit: 2}, ids[1:3]},
		{"page 2", deadletter.Query{Source: src, Limit: 2, After: ids[2]}, ids[3:5]},
		{"page 3", deadletter.Query{Source: src, Limit: 2, After: ids[4]}, nil},
	}
	for _, c := range cases {
		if got := list(c.q); !slices.Equal(got, c.want) {
			t.Errorf("List %s = %v, want %v", c.name, got, c.want)
		}
	}
	if got := list(deadletter.Query{}); len(got) != 5 {
		t.Errorf("List of every source = %v, want 5 open letters", got)
	}
	for _, q := range []deadletter.Query{{Limit: -1}, {Limit: deadletter.MaxLimit + 1}, {Source: "\xff"},
		{States: []deadletter.State{42}}, {Since: T0, Until: T0}} {
		if _, err := e.Store.List(ctx, q); !errors.Is(err, deadletter.ErrInvalid) {
			t.Errorf("List(%+v) = %v, want ErrInvalid", q, err)
		}
	}
}

func testGroups(t *testing.T, e *env) {
	ctx := t.Context()
	errA, errB := errors.New("error A"), errors.New("error B")
	a1 := add(t, e, nil, "k1", 1, errA)
	e.clock.Advance(time.Minute)
	add(t, e, nil, "k2", 2, errB)
	e.clock.Advance(time.Minute)
	add(t, e, nil, "", 3, errA)
	if _, err := e.Store.Add(ctx, nil, deadletter.Failure{Source: "other", Message: msg(4), Err: errA}); err != nil {
		t.Fatal(err)
	}
	park(t, e, nil, "k1", 5) // parked: not in the failed groups
	groups, err := e.Store.Groups(ctx, deadletter.Query{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 2 {
		t.Fatalf("Groups = %+v, want 2", groups)
	}
	g := groups[0]
	if g.Source != src || g.Error != "error A" || g.Count != 2 || g.FirstID != a1.ID ||
		!g.FirstFailure.Equal(T0.Truncate(time.Microsecond)) || !g.LastFailure.Equal(now(e)) {
		t.Errorf("first group = %+v", g)
	}
	if g := groups[1]; g.Error != "error B" || g.Count != 1 {
		t.Errorf("second group = %+v", g)
	}
	all, err := e.Store.Groups(ctx, deadletter.Query{})
	if err != nil || len(all) != 3 || all[0].Count != 2 {
		t.Errorf("Groups of every source = %+v, %v", all, err)
	}
	if all[1].Source != "other" || all[2].Error != "error B" {
		t.Errorf("groups of equal counts are not ordered by source, then error: %+v", all)
	}
	one, err := e.Store.Groups(ctx, deadletter.Query{Limit: 1})
	if err != nil || len(one) != 1 {
		t.Errorf("Groups with limit 1 = %+v, %v", one, err)
	}
}

func testReplayGroup(t *testing.T, e *env) {
	ctx := t.Context()
	errA, errB := errors.New("error A"), errors.New("error A, longer")
	a1 := add(t, e, nil, "k1", 1, errA)
	a2 := add(t, e, nil, "k1", 2, errA) // behind a1
	a3 := add(t, e, nil, "k2", 3, errA)
	b := add(t, e, nil, "k3", 4, errB) // contains "error A" but is another group
	n, err := e.Store.ReplayGroup(ctx, src, "error A")
	if err != nil || n != 2 {
		t.Fatalf("ReplayGroup = %d, %v; want 2 (the heads of k1 and k2)", n, err)
	}
	wantState(t, e, a1.ID, deadletter.Requested)
	wantState(t, e, a2.ID, deadletter.Failed)
	wantState(t, e, a3.ID, deadletter.Requested)
	wantState(t, e, b.ID, deadletter.Failed)
	if got := redeliver(t, e); !slices.Equal(got, []string{"m-1", "m-3", "m-2"}) {
		t.Errorf("delivered %v, want [m-1 m-3 m-2]: a2 follows a1", got)
	}
	if n, err := e.Store.ReplayGroup(ctx, src, "error A"); err != nil || n != 0 {
		t.Errorf("second ReplayGroup = %d, %v; want 0", n, err)
	}
	if _, err := e.Store.ReplayGroup(ctx, "", "error A"); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("ReplayGroup without a source = %v, want ErrInvalid", err)
	}
	if _, err := e.Store.ReplayGroup(ctx, src, "error\x00"); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("ReplayGroup of an error text with NUL = %v, want ErrInvalid", err)
	}
}

var errRollback = errors.New("deadlettertest: roll back")

func testUnitOfWork(t *testing.T, e *env) {
	needTx(t, e)
	ctx := t.Context()
	err := e.Tx(ctx, func(tx recado.Tx) error {
		add(t, e, tx, "k1", 1, errBoom)
		park(t, e, tx, "k1", 2) // the unit sees its own letter
		if keys := blocked(t, e, src); len(keys) != 0 {
			t.Errorf("Blocked outside the unit of work, before it committed = %v", keys)
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx = %v", err)
	}
	if keys := blocked(t, e, src); len(keys) != 0 {
		t.Errorf("Blocked after a rollback = %v, want none", keys)
	}
	if letters, _ := e.Store.List(ctx, deadletter.Query{States: allStates}); len(letters) != 0 {
		t.Errorf("after a rollback, %d letters are stored", len(letters))
	}
	var l deadletter.Letter
	if err := e.Tx(ctx, func(tx recado.Tx) error {
		l = add(t, e, tx, "k1", 1, errBoom)
		park(t, e, tx, "k1", 2)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if keys := blocked(t, e, src); !slices.Equal(keys, []string{"k1"}) {
		t.Errorf("Blocked after the commit = %v", keys)
	}
	// A delivery recorded in a unit that rolls back is not recorded.
	replay(t, e, l.ID)
	err = e.Tx(ctx, func(tx recado.Tx) error {
		if err := e.Store.Delivered(ctx, tx, l.ID); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx = %v", err)
	}
	wantState(t, e, l.ID, deadletter.Requested)
	if err := e.Tx(ctx, func(tx recado.Tx) error { return e.Store.Delivered(ctx, tx, l.ID) }); err != nil {
		t.Fatal(err)
	}
	wantState(t, e, l.ID, deadletter.Replayed)
	reqs, err := e.Store.Requests(ctx, src, 0)
	if err != nil || len(reqs) != 1 || reqs[0].Message.ID != "m-2" {
		t.Errorf("Requests after the delivery committed = %v, %v; want the parked message", reqs, err)
	}
}

func testForeignTx(t *testing.T, e *env) {
	needTx(t, e)
	other := e.newBackend(t, e.cfg)
	err := other.Tx(t.Context(), func(tx recado.Tx) error {
		_, err := e.Store.Add(t.Context(), tx, deadletter.Failure{Source: src, Message: msg(1), Err: errBoom})
		return err
	})
	if !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("Add in a unit of work of another DB = %v, want ErrInvalid", err)
	}
	var ended recado.Tx
	if err := e.Tx(t.Context(), func(tx recado.Tx) error { ended = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Store.Add(t.Context(), ended, deadletter.Failure{Source: src, Message: msg(1), Err: errBoom}); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("Add in a unit of work that has ended = %v, want ErrInvalid", err)
	}
	if letters, _ := e.Store.List(t.Context(), deadletter.Query{}); len(letters) != 0 {
		t.Errorf("refused adds stored %d letters", len(letters))
	}
}

func testCleanup(t *testing.T, e *env) {
	ctx := t.Context()
	var handled []uint64
	for i := range 3 {
		l := add(t, e, nil, "", i, errBoom)
		replay(t, e, l.ID)
		handled = append(handled, l.ID)
	}
	redeliver(t, e)
	for i := 3; i < 5; i++ {
		l := add(t, e, nil, "", i, errBoom)
		if err := e.Store.Discard(ctx, l.ID, "obsolete"); err != nil {
			t.Fatal(err)
		}
		handled = append(handled, l.ID)
	}
	open := add(t, e, nil, "k", 9, errBoom)
	e.clock.Advance(Retention)
	if n, err := e.Store.Cleanup(ctx); err != nil || n != 0 {
		t.Fatalf("Cleanup at exactly the retention = %d, %v; want 0", n, err)
	}
	e.clock.Advance(time.Microsecond)
	if n, err := e.Store.Cleanup(ctx); err != nil || n != len(handled) {
		t.Fatalf("Cleanup = %d, %v; want %d (in batches of %d)", n, err, len(handled), CleanupBatch)
	}
	for _, id := range handled {
		if _, err := e.Store.Get(ctx, id); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("Get(%d) after cleanup = %v, want ErrNotFound", id, err)
		}
	}
	wantState(t, e, open.ID, deadletter.Failed) // open letters stay, however old
	b := e.newBackend(t, deadletter.Config{Now: e.clock.Now})
	l, err := b.Store.Add(ctx, nil, deadletter.Failure{Source: src, Message: msg(1), Err: errBoom})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Store.Discard(ctx, l.ID, "x"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(deadletter.DefaultRetention)
	if n, err := b.Store.Cleanup(ctx); err != nil || n != 0 {
		t.Errorf("Cleanup at exactly the default retention = %d, %v; want 0", n, err)
	}
	e.clock.Advance(time.Microsecond)
	if n, err := b.Store.Cleanup(ctx); err != nil || n != 1 {
		t.Errorf("Cleanup after the default retention = %d, %v; want 1", n, err)
	}
}

func testRestart(t *testing.T, e *env) {
	if e.Reopen == nil {
		t.Skip("backend keeps nothing across a restart")
	}
	l := add(t, e, nil, "k", 1, resilience.MarkPermanent(errBoom))
	p := park(t, e, nil, "k", 2)
	b := e.Reopen()
	got, err := b.Store.Get(t.Context(), l.ID)
	if err != nil || !sameMessage(got.Message, msg(1)) || got.Error != errBoom.Error() || got.Class != resilience.ClassPermanent ||
		!got.FirstFailure.Equal(l.FirstFailure) {
		t.Fatalf("Get after a restart = %+v, %v", got, err)
	}
	if keys, err := b.Store.Blocked(t.Context(), src); err != nil || !slices.Equal(keys, []string{"k"}) {
		t.Errorf("Blocked after a restart = %v, %v", keys, err)
	}
	if _, err := b.Store.Replay(t.Context(), l.ID); err != nil {
		t.Fatal(err)
	}
	var got2 []string
	if _, err := b.Store.Redeliver(t.Context(), src, func(ctx context.Context, l deadletter.Letter) error {
		got2 = append(got2, l.Message.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got2, []string{"m-1", "m-2"}) {
		t.Errorf("after a restart, delivered %v; want [m-1 m-2] (parked %d)", got2, p.ID)
	}
	l3, err := b.Store.Add(t.Context(), nil, deadletter.Failure{Source: src, Message: msg(3), Err: errBoom})
	if err != nil || l3.ID <= p.ID {
		t.Errorf("a letter added after a restart has ID %d, want above %d (%v)", l3.ID, p.ID, err)
	}
}
