// Package checkpointtest is the conformance suite every backend of package
// checkpoint runs from its own tests.
//
//	func TestCheckpoints(t *testing.T) {
//		checkpointtest.Run(t, func(tb testing.TB, cfg checkpoint.Config) checkpointtest.Backend {
//			db := memory.New()
//			tb.Cleanup(func() { db.Close() })
//			return checkpointtest.Backend{Store: db.Checkpoints(cfg), Tx: ...}
//		})
//	}
//
// The suite drives the Store's clock through the [checkpoint.Config] it
// passes to the factory. It proves: registering keeps the first copy;
// checkpoints per partition, never moving back, with CaughtUp kept once set;
// a retired or unknown copy refused; rebuilds requested once, and swapped in
// only when every partition has caught up and is not behind the active
// copy, with the old copy's checkpoints gone; saves and swaps commit with
// their unit of work or not at all; Changed wakes after a commit; saves of
// many partitions side by side; bad input; and, for backends that keep
// data, that a restart loses nothing.
package checkpointtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// Backend is a backend under test.
type Backend struct {
	// Store is a Store of a fresh, empty DB, made with the Config the
	// factory was given.
	Store *checkpoint.Store
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
type Factory func(tb testing.TB, cfg checkpoint.Config) Backend

// T0 is the time the suite's clock starts at.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

// Run runs the suite as subtests of t, each with its own backend.
func Run(t *testing.T, newBackend Factory) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := resiliencetest.NewClock(T0)
			cfg := checkpoint.Config{Now: clock.Now}
			tc.run(t, &env{Backend: newBackend(t, cfg), clock: clock, cfg: cfg, newBackend: newBackend})
		})
	}
}

type env struct {
	Backend
	clock      *resiliencetest.Clock
	cfg        checkpoint.Config
	newBackend Factory
}

var tests = []struct {
	name string
	run  func(t *testing.T, e *env)
}{
	{"Register", testRegister},
	{"Save", testSave},
	{"NeverBackwards", testBackwards},
	{"CaughtUpStays", testCaughtUpStays},
	{"RetiredCopy", testRetiredCopy},
	{"RebuildOnce", testRebuildOnce},
	{"SwapWhenReady", testSwap},
	{"Retired", testRetired},
	{"SaveInTx", testSaveInTx},
	{"SwapInTx", testSwapInTx},
	{"ForeignTx", testForeignTx},
	{"Changed", testChanged},
	{"ConcurrentSaves", testConcurrentSaves},
	{"ConcurrentRebuilds", testConcurrentRebuilds},
	{"Invalid", testInvalid},
	{"Restart", testRestart},
}

func pos(n uint64) recado.Position { return recado.NewPosition(n, 0) }

func now(e *env) time.Time { return e.clock.Now().UTC().Truncate(time.Microsecond) }

func register(t *testing.T, s *checkpoint.Store, name string, partitions int) checkpoint.Projection {
	t.Helper()
	p, err := s.Register(t.Context(), name, partitions)
	if err != nil {
		t.Fatalf("Register(%q, %d): %v", name, partitions, err)
	}
	return p
}

func save(t *testing.T, s *checkpoint.Store, tx recado.Tx, c checkpoint.Checkpoint) checkpoint.Role {
	t.Helper()
	r, err := s.Save(t.Context(), tx, c)
	if err != nil {
		t.Fatalf("Save(%+v): %v", c, err)
	}
	return r
}

func get(t *testing.T, s *checkpoint.Store, name string) checkpoint.Projection {
	t.Helper()
	p, err := s.Get(t.Context(), name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	return p
}

// positions returns the positions of the committed checkpoints of copy.
func positions(t *testing.T, s *checkpoint.Store, name string, copy uint64) []string {
	t.Helper()
	cps, err := s.Checkpoints(t.Context(), name, copy)
	if err != nil {
		t.Fatalf("Checkpoints(%q, %d): %v", name, copy, err)
	}
	out := make([]string, len(cps))
	for i, c := range cps {
		if c.Name != name || c.Copy != copy || c.Partition != i {
			t.Errorf("Checkpoints(%q, %d)[%d] = %+v: wrong name, copy or partition", name, copy, i, c)
		}
		out[i] = c.Position.String()
	}
	return out
}

func same(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func needTx(t *testing.T, e *env) {
	t.Helper()
	if e.Tx == nil {
		t.Skip("backend has no unit of work")
	}
}

func testRegister(t *testing.T, e *env) {
	p := register(t, e.Store, "orders", 4)
	if p.Name != "orders" || p.Active != (checkpoint.Copy{Number: 1, Partitions: 4}) || p.Building != (checkpoint.Copy{}) || p.Retiring != 0 {
		t.Fatalf("Register = %+v, want active copy 1 of 4 partitions, nothing building or retiring", p)
	}
	if !p.Updated.Equal(now(e)) {
		t.Errorf("Updated = %v, want %v", p.Updated, now(e))
	}
	e.clock.Advance(time.Second)
	again := register(t, e.Store, "orders", 8)
	if again.Active != p.Active || !again.Updated.Equal(p.Updated) {
		t.Errorf("Register again with 8 partitions = %+v, want the first record %+v unchanged", again, p)
	}
	if got := get(t, e.Store, "orders"); got.Active != p.Active || got.Updated.Location() != time.UTC {
		t.Errorf("Get = %+v, want %+v in UTC", got, p)
	}
	register(t, e.Store, "billing", 1)
	names, err := e.Store.Names(t.Context())
	if err != nil || strings.Join(names, ",") != "billing,orders" {
		t.Errorf("Names = %v, %v; want [billing orders]", names, err)
	}
	if _, err := e.Store.Get(t.Context(), "nope"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("Get of an unknown projection = %v, want ErrNotFound", err)
	}
	if got := positions(t, e.Store, "orders", 1); !same(got, []string{"0", "0", "0", "0"}) {
		t.Errorf("Checkpoints before any save = %v, want four zero positions", got)
	}
}

func testSave(t *testing.T, e *env) {
	register(t, e.Store, "orders", 3)
	if r := save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Partition: 1, Position: pos(7)}); r != checkpoint.Active {
		t.Errorf("Save on the active copy = %v, want Active", r)
	}
	e.clock.Advance(time.Second)
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Partition: 2, Position: recado.NewPosition(9, 3)})
	if got := positions(t, e.Store, "orders", 1); !same(got, []string{"0", "7", "9:3"}) {
		t.Errorf("Checkpoints = %v, want [0 7 9:3]", got)
	}
	cps, _ := e.Store.Checkpoints(t.Context(), "orders", 1)
	if !cps[2].Updated.Equal(now(e)) || !cps[1].Updated.Equal(now(e).Add(-time.Second)) || !cps[0].Updated.IsZero() {
		t.Errorf("Updated times = %v, %v, %v; want zero, %v, %v", cps[0].Updated, cps[1].Updated, cps[2].Updated,
			now(e).Add(-time.Second), now(e))
	}
}

func testBackwards(t *testing.T, e *env) {
	register(t, e.Store, "orders", 1)
	c := checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: pos(10)}
	save(t, e.Store, nil, c)
	save(t, e.Store, nil, c) // the same position again is no move
	c.Position = recado.NewPosition(9, 99)
	if _, err := e.Store.Save(t.Context(), nil, c); !errors.Is(err, checkpoint.ErrBackwards) {
		t.Errorf("Save at 9:99 after 10 = %v, want ErrBackwards", err)
	}
	if got := positions(t, e.Store, "orders", 1); !same(got, []string{"10"}) {
		t.Errorf("Checkpoints = %v, want [10]", got)
	}
}

func testCaughtUpStays(t *testing.T, e *env) {
	register(t, e.Store, "orders", 1)
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: pos(3), CaughtUp: true})
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: pos(4)})
	cps, err := e.Store.Checkpoints(t.Context(), "orders", 1)
	if err != nil || !cps[0].CaughtUp || cps[0].Position != pos(4) {
		t.Errorf("Checkpoints = %+v, %v; want position 4 still caught up", cps, err)
	}
}

func testRetiredCopy(t *testing.T, e *env) {
	register(t, e.Store, "orders", 1)
	for _, c := range []uint64{0, 2, 7} {
		_, err := e.Store.Save(t.Context(), nil, checkpoint.Checkpoint{Name: "orders", Copy: c, Position: pos(1)})
		if !errors.Is(err, checkpoint.ErrRetired) {
			t.Errorf("Save on copy %d of a projection whose only copy is 1 = %v, want ErrRetired", c, err)
		}
		if _, err := e.Store.Checkpoints(t.Context(), "orders", c); !errors.Is(err, checkpoint.ErrRetired) {
			t.Errorf("Checkpoints of copy %d = %v, want ErrRetired", c, err)
		}
	}
	_, err := e.Store.Save(t.Context(), nil, checkpoint.Checkpoint{Name: "nope", Copy: 1, Position: pos(1)})
	if !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("Save on an unregistered projection = %v, want ErrNotFound", err)
	}
	if _, err := e.Store.Get(t.Context(), "nope"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("a refused Save registered the projection: Get = %v", err)
	}
}

func testRebuildOnce(t *testing.T, e *env) {
	register(t, e.Store, "orders", 2)
	e.clock.Advance(time.Minute)
	p, err := e.Store.Rebuild(t.Context(), "orders", 3)
	if err != nil {
		t.Fatal(err)
	}
	if p.Building != (checkpoint.Copy{Number: 2, Partitions: 3}) || p.Active.Number != 1 || !p.Updated.Equal(now(e)) {
		t.Fatalf("Rebuild = %+v, want copy 2 of 3 partitions building beside copy 1, updated now", p)
	}
	again, err := e.Store.Rebuild(t.Context(), "orders", 5)
	if err != nil || again.Building != p.Building {
		t.Errorf("Rebuild while one is under way = %+v, %v; want the record unchanged", again, err)
	}
	if r := save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 2, Partition: 2, Position: pos(1)}); r != checkpoint.Building {
		t.Errorf("Save on the building copy = %v, want Building", r)
	}
	if got := positions(t, e.Store, "orders", 2); !same(got, []string{"0", "0", "1"}) {
		t.Errorf("Checkpoints of copy 2 = %v, want [0 0 1]", got)
	}
	if _, err := e.Store.Rebuild(t.Context(), "nope", 1); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("Rebuild of an unregistered projection = %v, want ErrNotFound", err)
	}
}

func testSwap(t *testing.T, e *env) {
	ctx := t.Context()
	register(t, e.Store, "orders", 2)
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Partition: 0, Position: pos(10)})
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Partition: 1, Position: pos(12)})
	if _, err := e.Store.Swap(ctx, nil, "orders", 2); !errors.Is(err, checkpoint.ErrRetired) {
		t.Errorf("Swap with no rebuild under way = %v, want ErrRetired", err)
	}
	if _, err := e.Store.Rebuild(ctx, "orders", 2); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		partition int
		at        uint64
		caughtUp  bool
	}{
		{0, 12, true},  // partition 1 has not caught up
		{1, 11, false}, // not caught up
		{1, 11, true},  // caught up, but behind the active copy's 12
	}
	for _, s := range steps {
		save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 2, Partition: s.partition, Position: pos(s.at), CaughtUp: s.caughtUp})
		if _, err := e.Store.Swap(ctx, nil, "orders", 2); !errors.Is(err, checkpoint.ErrNotReady) {
			t.Fatalf("Swap after partition %d saved %d (caught up %v) = %v, want ErrNotReady", s.partition, s.at, s.caughtUp, err)
		}
	}
	if p := get(t, e.Store, "orders"); p.Active.Number != 1 || p.Building.Number != 2 {
		t.Fatalf("a refused Swap changed the record: %+v", p)
	}
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 2, Partition: 1, Position: pos(12)})
	e.clock.Advance(time.Second)
	p, err := e.Store.Swap(ctx, nil, "orders", 2)
	if err != nil {
		t.Fatalf("Swap when every partition has caught up and none is behind: %v", err)
	}
	want := checkpoint.Projection{Name: "orders", Active: checkpoint.Copy{Number: 2, Partitions: 2}, Retiring: 1, Updated: now(e)}
	if p != want {
		t.Errorf("Swap = %+v, want %+v", p, want)
	}
	if got := get(t, e.Store, "orders"); got != want {
		t.Errorf("Get after Swap = %+v, want %+v", got, want)
	}
	if got := positions(t, e.Store, "orders", 2); !same(got, []string{"12", "12"}) {
		t.Errorf("Checkpoints of the new active copy = %v, want [12 12]", got)
	}
	if _, err := e.Store.Save(ctx, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: pos(13)}); !errors.Is(err, checkpoint.ErrRetired) {
		t.Errorf("Save on the replaced copy = %v, want ErrRetired", err)
	}
	// The replaced copy's checkpoints are gone: a copy with its number would
	// start from nothing.
	if _, err := e.Store.Rebuild(ctx, "orders", 1); err != nil {
		t.Fatal(err)
	}
	if got := positions(t, e.Store, "orders", 3); !same(got, []string{"0"}) {
		t.Errorf("Checkpoints of the next copy = %v, want [0]", got)
	}
}

func testRetired(t *testing.T, e *env) {
	ctx := t.Context()
	register(t, e.Store, "orders", 1)
	if _, err := e.Store.Rebuild(ctx, "orders", 1); err != nil {
		t.Fatal(err)
	}
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 2, Position: pos(1), CaughtUp: true})
	if _, err := e.Store.Swap(ctx, nil, "orders", 2); err != nil {
		t.Fatal(err)
	}
	if err := e.Store.Retired(ctx, "orders", 5); err != nil {
		t.Fatal(err)
	}
	if p := get(t, e.Store, "orders"); p.Retiring != 1 {
		t.Errorf("Retired of another copy changed Retiring to %d, want 1", p.Retiring)
	}
	if err := e.Store.Retired(ctx, "orders", 1); err != nil {
		t.Fatal(err)
	}
	if p := get(t, e.Store, "orders"); p.Retiring != 0 {
		t.Errorf("Retiring after Retired = %d, want 0", p.Retiring)
	}
	if err := e.Store.Retired(ctx, "nope", 1); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("Retired of an unregistered projection = %v, want ErrNotFound", err)
	}
}

var errRollback = errors.New("roll back")

func testSaveInTx(t *testing.T, e *env) {
	needTx(t, e)
	register(t, e.Store, "orders", 1)
	c := checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: pos(5)}
	err := e.Tx(t.Context(), func(tx recado.Tx) error {
		save(t, e.Store, tx, c)
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx = %v, want the function's error", err)
	}
	if got := positions(t, e.Store, "orders", 1); !same(got, []string{"0"}) {
		t.Errorf("Checkpoints after a rollback = %v, want [0]", got)
	}
	err = e.Tx(t.Context(), func(tx recado.Tx) error {
		save(t, e.Store, tx, c)
		c.Position = pos(6)
		save(t, e.Store, tx, c) // the unit sees its own write
		c.Position = pos(5)
		if _, err := e.Store.Save(t.Context(), tx, c); !errors.Is(err, checkpoint.ErrBackwards) {
			t.Errorf("Save at 5 after 6 in one unit of work = %v, want ErrBackwards", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := positions(t, e.Store, "orders", 1); !same(got, []string{"6"}) {
		t.Errorf("Checkpoints after the commit = %v, want [6]", got)
	}
}

func testSwapInTx(t *testing.T, e *env) {
	needTx(t, e)
	ctx := t.Context()
	register(t, e.Store, "orders", 1)
	if _, err := e.Store.Rebuild(ctx, "orders", 1); err != nil {
		t.Fatal(err)
	}
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 2, Position: pos(1), CaughtUp: true})
	err := e.Tx(ctx, func(tx recado.Tx) error {
		if _, err := e.Store.Swap(ctx, tx, "orders", 2); err != nil {
			t.Errorf("Swap in a unit of work: %v", err)
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx = %v, want the function's error", err)
	}
	if p := get(t, e.Store, "orders"); p.Active.Number != 1 || p.Building.Number != 2 {
		t.Errorf("after a rolled-back Swap: %+v, want copy 1 active and copy 2 building", p)
	}
	if got := positions(t, e.Store, "orders", 2); !same(got, []string{"1"}) {
		t.Errorf("Checkpoints of copy 2 after a rolled-back Swap = %v, want [1]", got)
	}
	err = e.Tx(ctx, func(tx recado.Tx) error {
		_, err := e.Store.Swap(ctx, tx, "orders", 2)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := get(t, e.Store, "orders"); p.Active.Number != 2 || p.Retiring != 1 {
		t.Errorf("after Swap commits: %+v, want copy 2 active, copy 1 retiring", p)
	}
}

func testForeignTx(t *testing.T, e *env) {
	needTx(t, e)
	register(t, e.Store, "orders", 1)
	c := checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: pos(5)}
	other := e.newBackend(t, e.cfg)
	err := other.Tx(t.Context(), func(tx recado.Tx) error {
		_, err := e.Store.Save(t.Context(), tx, c)
		return err
	})
	if !errors.Is(err, checkpoint.ErrInvalid) {
		t.Errorf("Save in a unit of work of another DB = %v, want ErrInvalid", err)
	}
	var ended recado.Tx
	if err := e.Tx(t.Context(), func(tx recado.Tx) error { ended = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Store.Save(t.Context(), ended, c); !errors.Is(err, checkpoint.ErrInvalid) {
		t.Errorf("Save in a unit of work that has ended = %v, want ErrInvalid", err)
	}
	if got := positions(t, e.Store, "orders", 1); !same(got, []string{"0"}) {
		t.Errorf("a refused Save was stored: %v", got)
	}
}

func testChanged(t *testing.T, e *env) {
	register(t, e.Store, "orders", 1)
	changed := e.Store.Changed()
	select {
	case <-changed:
		t.Fatal("Changed is closed before anything changed")
	default:
	}
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: pos(5)})
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed was not closed after a Save committed")
	}
}

func testConcurrentSaves(t *testing.T, e *env) {
	const partitions, saves = 8, 25
	register(t, e.Store, "orders", partitions)
	var wg sync.WaitGroup
	errs := make(chan error, partitions)
	for p := range partitions {
		wg.Go(func() {
			for i := 1; i <= saves; i++ {
				c := checkpoint.Checkpoint{Name: "orders", Copy: 1, Partition: p, Position: pos(uint64(i * (p + 1)))}
				if _, err := e.Store.Save(t.Context(), nil, c); err != nil {
					errs <- fmt.Errorf("partition %d save %d: %w", p, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := make([]string, partitions)
	for p := range want {
		want[p] = pos(uint64(saves * (p + 1))).String()
	}
	if got := positions(t, e.Store, "orders", 1); !same(got, want) {
		t.Errorf("Checkpoints = %v, want %v", got, want)
	}
}

func testConcurrentRebuilds(t *testing.T, e *env) {
	register(t, e.Store, "orders", 1)
	const n = 8
	copies := make(chan uint64, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			p, err := e.Store.Rebuild(t.Context(), "orders", 2)
			if err != nil {
				t.Error(err)
				return
			}
			copies <- p.Building.Number
		})
	}
	wg.Wait()
	close(copies)
	for c := range copies {
		if c != 2 {
			t.Errorf("a concurrent Rebuild answered copy %d, want 2 for all", c)
		}
	}
}

func testInvalid(t *testing.T, e *env) {
	ctx := t.Context()
	register(t, e.Store, "orders", 2)
	names := []struct{ what, name string }{
		{"empty", ""},
		{"long", strings.Repeat("n", checkpoint.MaxNameLen+1)},
		{"not UTF-8", "orders\xff"},
		{"with NUL", "ord\x00ers"},
	}
	for _, n := range names {
		_, err := e.Store.Register(ctx, n.name, 1)
		var ce *checkpoint.Error
		if !errors.Is(err, checkpoint.ErrInvalid) || !errors.As(err, &ce) {
			t.Errorf("Register with a name %s = %v, want an *Error wrapping ErrInvalid", n.what, err)
		}
		if _, err := e.Store.Get(ctx, n.name); !errors.Is(err, checkpoint.ErrInvalid) {
			t.Errorf("Get with a name %s = %v, want ErrInvalid", n.what, err)
		}
		if _, err := e.Store.Save(ctx, nil, checkpoint.Checkpoint{Name: n.name, Copy: 1}); !errors.Is(err, checkpoint.ErrInvalid) {
			t.Errorf("Save with a name %s = %v, want ErrInvalid", n.what, err)
		}
	}
	if _, err := e.Store.Register(ctx, strings.Repeat("n", checkpoint.MaxNameLen), 1); err != nil {
		t.Errorf("Register with a name of MaxNameLen bytes: %v", err)
	}
	for _, n := range []int{-1, 0, checkpoint.MaxPartitions + 1} {
		if _, err := e.Store.Register(ctx, "billing", n); !errors.Is(err, checkpoint.ErrInvalid) {
			t.Errorf("Register with %d partitions = %v, want ErrInvalid", n, err)
		}
		if _, err := e.Store.Rebuild(ctx, "orders", n); !errors.Is(err, checkpoint.ErrInvalid) {
			t.Errorf("Rebuild with %d partitions = %v, want ErrInvalid", n, err)
		}
	}
	for _, p := range []int{-1, 2} {
		c := checkpoint.Checkpoint{Name: "orders", Copy: 1, Partition: p, Position: pos(1)}
		if _, err := e.Store.Save(ctx, nil, c); !errors.Is(err, checkpoint.ErrInvalid) {
			t.Errorf("Save on partition %d of 2 = %v, want ErrInvalid", p, err)
		}
	}
	if _, err := e.Store.Get(ctx, "billing"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("a refused Register stored the projection: Get = %v", err)
	}
	if p := get(t, e.Store, "orders"); p.Building.Number != 0 {
		t.Errorf("a refused Rebuild stored a copy: %+v", p)
	}
	if got := positions(t, e.Store, "orders", 1); !same(got, []string{"0", "0"}) {
		t.Errorf("a refused Save was stored: %v", got)
	}
}

func testRestart(t *testing.T, e *env) {
	if e.Reopen == nil {
		t.Skip("backend keeps nothing across a restart")
	}
	register(t, e.Store, "orders", 2)
	save(t, e.Store, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Partition: 1, Position: recado.NewPosition(4, 2), CaughtUp: true})
	if _, err := e.Store.Rebuild(t.Context(), "orders", 1); err != nil {
		t.Fatal(err)
	}
	b := e.Reopen()
	p := get(t, b.Store, "orders")
	if p.Active != (checkpoint.Copy{Number: 1, Partitions: 2}) || p.Building != (checkpoint.Copy{Number: 2, Partitions: 1}) {
		t.Errorf("after a restart: %+v, want copy 1 of 2 partitions active and copy 2 of 1 building", p)
	}
	cps, err := b.Store.Checkpoints(t.Context(), "orders", 1)
	if err != nil || cps[1].Position != recado.NewPosition(4, 2) || !cps[1].CaughtUp {
		t.Errorf("Checkpoints after a restart = %+v, %v; want partition 1 at 4:2, caught up", cps, err)
	}
}
