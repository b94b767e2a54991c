package commandtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// RunSnapshots runs the snapshot store's part of the suite as subtests of
// t, each with its own backend: saving and loading, which snapshot replaces
// which, schemas, units of work, bad input, and that a repository folds the
// same state and version with snapshots as without, also when a snapshot
// does not fit its stream any more.
func RunSnapshots(t *testing.T, newBackend Factory) {
	for _, tc := range snapshotTests {
		t.Run(tc.name, func(t *testing.T) {
			clock := resiliencetest.NewClock(T0)
			tc.run(t, newBackend(t, command.StoreConfig{Now: clock.Now}))
		})
	}
}

var snapshotTests = []struct {
	name string
	run  func(t *testing.T, b Backend)
}{
	{"SaveLoad", testSnapshotSaveLoad},
	{"Replaces", testSnapshotReplaces},
	{"UnitOfWork", testSnapshotTx},
	{"Invalid", testSnapshotInvalid},
	{"SameStateWithAndWithout", testSnapshotSameState},
	{"StaleSnapshotIgnored", testSnapshotStale},
}

func snap(stream string, version uint64, data string) command.Snapshot {
	return command.Snapshot{Stream: stream, Schema: "order/v1", Version: version, EventID: fmt.Sprint("ev-", version), Data: []byte(data)}
}

func testSnapshotSaveLoad(t *testing.T, b Backend) {
	s := b.Snapshots
	if _, found, err := s.Load(t.Context(), "order-1", "order/v1"); err != nil || found {
		t.Fatalf("Load of a stream with no snapshot = %v, %v; want not found", found, err)
	}
	want := snap("order-1", 3, `{"lines":3}`)
	if stored, err := s.Save(t.Context(), nil, want); err != nil || !stored {
		t.Fatalf("Save = %v, %v", stored, err)
	}
	got, found, err := s.Load(t.Context(), "order-1", "order/v1")
	if err != nil || !found {
		t.Fatalf("Load = %v, %v", found, err)
	}
	if got.Stream != want.Stream || got.Schema != want.Schema || got.Version != 3 || got.EventID != want.EventID ||
		string(got.Data) != string(want.Data) || !got.Time.Equal(T0) {
		t.Errorf("Load = %+v, want %+v taken at %v", got, want, T0)
	}
	if _, found, _ := s.Load(t.Context(), "order-1", "order/v2"); found {
		t.Errorf("Load with another schema found the snapshot: a changed state shape must ignore it")
	}
	if err := s.Delete(t.Context(), "order-1"); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := s.Load(t.Context(), "order-1", "order/v1"); found {
		t.Errorf("Load after Delete found the snapshot")
	}
	if err := s.Delete(t.Context(), "order-1"); err != nil {
		t.Errorf("Delete of no snapshot = %v, want nil", err)
	}
}

func testSnapshotReplaces(t *testing.T, b Backend) {
	s := b.Snapshots
	steps := []struct {
		snap   command.Snapshot
		stored bool
		want   uint64 // the version loaded after the step
		schema string
	}{
		{snap("s", 5, "5"), true, 5, "order/v1"},
		{snap("s", 4, "4"), false, 5, "order/v1"}, // older: kept out
		{snap("s", 5, "5b"), false, 5, "order/v1"},
		{snap("s", 8, "8"), true, 8, "order/v1"},
		{command.Snapshot{Stream: "s", Schema: "order/v2", Version: 2, EventID: "ev-2", Data: []byte("v2")}, true, 2, "order/v2"},
	}
	for i, st := range steps {
		stored, err := s.Save(t.Context(), nil, st.snap)
		if err != nil || stored != st.stored {
			t.Errorf("step %d: Save(version %d, %s) = %v, %v; want %v", i, st.snap.Version, st.snap.Schema, stored, err, st.stored)
		}
		got, found, err := s.Load(t.Context(), "s", st.schema)
		if err != nil || !found || got.Version != st.want {
			t.Errorf("step %d: Load = version %d, %v, %v; want %d", i, got.Version, found, err, st.want)
		}
	}
	if _, found, _ := s.Load(t.Context(), "s", "order/v1"); found {
		t.Errorf("a snapshot of the new schema must replace the old schema's")
	}
}

func testSnapshotTx(t *testing.T, b Backend) {
	errRollback := errors.New("roll back")
	err := b.Tx(t.Context(), func(tx recado.Tx) error {
		if _, err := b.Snapshots.Save(t.Context(), tx, snap("s", 1, "1")); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx = %v", err)
	}
	if _, found, _ := b.Snapshots.Load(t.Context(), "s", "order/v1"); found {
		t.Errorf("a snapshot saved in a unit of work that rolled back was kept")
	}
	if err := b.Tx(t.Context(), func(tx recado.Tx) error {
		_, err := b.Snapshots.Save(t.Context(), tx, snap("s", 1, "1"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := b.Snapshots.Load(t.Context(), "s", "order/v1"); !found {
		t.Errorf("a snapshot saved in a unit of work that committed is missing")
	}
}

func testSnapshotInvalid(t *testing.T, b Backend) {
	for _, tc := range []struct {
		what string
		snap command.Snapshot
		want error
	}{
		{"no stream", command.Snapshot{Schema: "x", Version: 1, EventID: "e"}, command.ErrInvalid},
		{"no schema", command.Snapshot{Stream: "s", Version: 1, EventID: "e"}, command.ErrInvalid},
		{"no event", command.Snapshot{Stream: "s", Schema: "x", Version: 1}, command.ErrInvalid},
		{"version 0", command.Snapshot{Stream: "s", Schema: "x", EventID: "e"}, command.ErrInvalid},
		{"stream not UTF-8", command.Snapshot{Stream: "s\xff", Schema: "x", Version: 1, EventID: "e"}, command.ErrInvalid},
		{"too large", command.Snapshot{Stream: "s", Schema: "x", Version: 1, EventID: "e", Data: make([]byte, command.DefaultMaxSnapshot+1)}, command.ErrTooLarge},
	} {
		if _, err := b.Snapshots.Save(t.Context(), nil, tc.snap); !errors.Is(err, tc.want) {
			t.Errorf("%s: Save = %v, want %v", tc.what, err, tc.want)
		}
	}
	if _, _, err := b.Snapshots.Load(t.Context(), strings.Repeat("s", command.MaxStreamLen+1), "x"); !errors.Is(err, command.ErrInvalid) {
		t.Errorf("Load of an oversized stream name = %v, want ErrInvalid", err)
	}
}

// testSnapshotSameState drives one sequence of random commands through two
// repositories of the same stream, one with a snapshot every 3 events and
// one without, and compares what each loads after every step.
func testSnapshotSameState(t *testing.T, b Backend) {
	with, err := NewOrderRepository(b.Events, b.Snapshots, 3)
	if err != nil {
		t.Fatal(err)
	}
	without, err := NewOrderRepository(b.Events, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	stream := OrderStream("1")
	for step := range 60 {
		repo := with
		if rng.IntN(2) == 0 {
			repo = without
		}
		_, _ = repo.Update(t.Context(), stream, func(o Order) ([]OrderEvent, error) {
			return Orders.Decide(o, randomCommand(rng, o))
		})
		s1, v1, err1 := with.Load(t.Context(), stream)
		s2, v2, err2 := without.Load(t.Context(), stream)
		if err1 != nil || err2 != nil {
			t.Fatalf("step %d: Load: %v, %v", step, err1, err2)
		}
		if v1 != v2 || !reflect.DeepEqual(s1, s2) {
			t.Fatalf("step %d: with snapshots %+v at %d, without %+v at %d", step, s1, v1, s2, v2)
		}
	}
	got, found, err := b.Snapshots.Load(t.Context(), stream, "order/v1")
	if err != nil || !found || got.Version < 3 {
		t.Errorf("after 60 steps the latest snapshot is %+v, %v, %v; want one", got, found, err)
	}
}

// randomCommand returns a command for o, most often a valid one.
func randomCommand(rng *rand.Rand, o Order) OrderCommand {
	switch n := rng.IntN(10); {
	case !o.Placed || n == 0:
		return PlaceOrder{OrderID: "1", Items: []string{"tea"}, Total: rng.IntN(1000)}
	case n == 1:
		return AddLine{OrderID: "1", Line: o.Lines + 2, Item: "late"} // refused
	default:
		return AddLine{OrderID: "1", Line: o.Lines + 1, Item: fmt.Sprint("item-", o.Lines+1)}
	}
}

// testSnapshotStale checks that a load ignores a snapshot that does not fit
// its stream: of a stream deleted and written again, or undecodable.
func testSnapshotStale(t *testing.T, b Backend) {
	repo, err := NewOrderRepository(b.Events, b.Snapshots, 2)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := NewOrderRepository(b.Events, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	stream := OrderStream("1")
	update := func(c OrderCommand) {
		t.Helper()
		if _, err := repo.Update(t.Context(), stream, func(o Order) ([]OrderEvent, error) { return Orders.Decide(o, c) }); err != nil {
			t.Fatalf("Update(%+v): %v", c, err)
		}
	}
	update(PlaceOrder{OrderID: "1", Items: []string{"tea"}})
	update(AddLine{OrderID: "1", Line: 1, Item: "cup"})
	update(AddLine{OrderID: "1", Line: 2, Item: "pot"})
	if s, found, _ := b.Snapshots.Load(t.Context(), stream, "order/v1"); !found || s.Version != 2 {
		t.Fatalf("no snapshot at version 2 (found %v, version %d)", found, s.Version)
	}
	check := func(what string) {
		t.Helper()
		s1, v1, err1 := repo.Load(t.Context(), stream)
		s2, v2, err2 := plain.Load(t.Context(), stream)
		if err1 != nil || err2 != nil || v1 != v2 || !reflect.DeepEqual(s1, s2) {
			t.Errorf("%s: with snapshots %+v at %d (%v), without %+v at %d (%v)", what, s1, v1, err1, s2, v2, err2)
		}
	}
	check("after 3 events")

	// The stream is deleted and written again: its versions go on, but the
	// events after the snapshot's version are not the ones it folded.
	if err := b.Events.Delete(t.Context(), stream); err != nil {
		t.Fatal(err)
	}
	check("after the delete")
	update(PlaceOrder{OrderID: "1", Items: []string{"mug"}, Total: 7})
	check("after the stream was written again")

	// A snapshot whose data cannot be decoded is ignored too.
	if _, err := b.Snapshots.Save(t.Context(), nil, command.Snapshot{Stream: stream, Schema: "order/v1", Version: 99,
		EventID: "x", Data: []byte("{not json")}); err != nil {
		t.Fatal(err)
	}
	check("with an undecodable snapshot")
	// And one whose event is not the stream's event at its version.
	var last recado.Event
	for e, err := range b.Events.ReadStream(t.Context(), stream, eventstore.Backwards(), eventstore.Limit(1)) {
		if err != nil {
			t.Fatal(err)
		}
		last = e
	}
	if err := b.Snapshots.Delete(t.Context(), stream); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Snapshots.Save(t.Context(), nil, command.Snapshot{Stream: stream, Schema: "order/v1", Version: last.Version,
		EventID: "not-" + last.ID, Data: []byte(`{"placed":true,"lines":40}`)}); err != nil {
		t.Fatal(err)
	}
	check("with a snapshot of another event")
}
