package memory_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newDB(tb testing.TB) *memory.DB {
	db := memory.New()
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

func ev(typ string) recado.Event { return recado.NewEvent(typ, []byte(`{"n":1}`)) }

// logTypes returns the types of the committed events of the global log, in
// order.
func logTypes(t *testing.T, s *eventstore.Store) []string {
	t.Helper()
	var types []string
	for e, err := range s.ReadAll(context.Background(), recado.Position{}) {
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		types = append(types, e.Type)
	}
	return types
}

func mustAppend(t *testing.T, s *eventstore.Store, stream string, events []recado.Event, opts ...eventstore.AppendOption) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), stream, events, opts...)
	if err != nil {
		t.Fatalf("Append(%q): %v", stream, err)
	}
	return res
}

func state(t *testing.T, s *eventstore.Store, stream string, opts ...eventstore.AppendOption) eventstore.StreamState {
	t.Helper()
	st, err := s.State(context.Background(), stream, opts...)
	if err != nil {
		t.Fatalf("State(%q): %v", stream, err)
	}
	return st
}

func TestTxCommits(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	s := db.Events()
	mustAppend(t, s, "gone", []recado.Event{ev("A")})
	mustAppend(t, s, "reserved", []recado.Event{ev("B")})

	err := db.Tx(ctx, func(tx *memory.Tx) error {
		mustAppend(t, s, "order-1", []recado.Event{ev("C"), ev("D")}, eventstore.Expect(eventstore.NoStream), eventstore.InTx(tx))
		mustAppend(t, s, "order-2", []recado.Event{ev("E")}, eventstore.InTx(tx))
		if err := s.Delete(ctx, "gone", eventstore.InTx(tx)); err != nil {
			return err
		}
		return s.Tombstone(ctx, "reserved", eventstore.InTx(tx))
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if got, want := logTypes(t, s), []string{"A", "B", "C", "D", "E"}; !slices.Equal(got, want) {
		t.Errorf("log after commit: got %v, want %v", got, want)
	}
	if got, want := state(t, s, "order-1"), (eventstore.StreamState{Version: 2, Exists: true}); got != want {
		t.Errorf("order-1: got %+v, want %+v", got, want)
	}
	if got, want := state(t, s, "gone"), (eventstore.StreamState{Version: 1, Deleted: true}); got != want {
		t.Errorf("gone: got %+v, want %+v", got, want)
	}
	if got, want := state(t, s, "reserved"), (eventstore.StreamState{Version: 1, Tombstoned: true}); got != want {
		t.Errorf("reserved: got %+v, want %+v", got, want)
	}
}

// rollbacks are the failures a unit of work can end with: an error, which Tx
// returns as it is, and a panic, which goes on after the rollback.
var rollbacks = []struct {
	name string
	end  func() error
}{
	{"error", func() error { return errFn }},
	{"panic", func() error { panic(errFn) }},
}

var errFn = errors.New("fn failed")

// txFails runs db.Tx(fn), recovering a panic, and checks that it ended with errFn.
func txFails(t *testing.T, db *memory.DB, fn func(tx *memory.Tx) error) {
	t.Helper()
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %w", p.(error))
			}
		}()
		err = db.Tx(context.Background(), fn)
	}()
	if !errors.Is(err, errFn) {
		t.Fatalf("Tx: got %v, want %v", err, errFn)
	}
}

func TestTxRollsBack(t *testing.T) {
	for _, rb := range rollbacks {
		t.Run(rb.name, func(t *testing.T) {
			ctx := context.Background()
			db := newDB(t)
			s := db.Events()
			mustAppend(t, s, "kept", []recado.Event{ev("A")})
			mustAppend(t, s, "soft", []recado.Event{ev("B")})
			mustAppend(t, s, "tomb", []recado.Event{ev("C")})
			retried := ev("R")

			txFails(t, db, func(tx *memory.Tx) error {
				in := eventstore.InTx(tx)
				mustAppend(t, s, "kept", []recado.Event{ev("X")}, in)
				mustAppend(t, s, "new", []recado.Event{retried, ev("Y")}, in)
				if err := s.Delete(ctx, "soft", in); err != nil {
					t.Fatalf("Delete: %v", err)
				}
				if err := s.Tombstone(ctx, "tomb", in); err != nil {
					t.Fatalf("Tombstone: %v", err)
				}
				if err := s.Tombstone(ctx, "never", in); err != nil {
					t.Fatalf("Tombstone: %v", err)
				}
				return rb.end()
			})

			if got, want := logTypes(t, s), []string{"A", "B", "C"}; !slices.Equal(got, want) {
				t.Errorf("log after rollback: got %v, want %v", got, want)
			}
			for stream, want := range map[string]eventstore.StreamState{
				"kept":  {Version: 1, Exists: true},
				"soft":  {Version: 1, Exists: true},
				"tomb":  {Version: 1, Exists: true},
				"new":   {},
				"never": {},
			} {
				if got := state(t, s, stream); got != want {
					t.Errorf("%s after rollback: got %+v, want %+v", stream, got, want)
				}
			}
			// The rolled-back event's ID is free again, and its position is
			// taken by the next append: the log has no gap.
			res := mustAppend(t, s, "new", []recado.Event{retried}, eventstore.Expect(eventstore.NoStream))
			if res.Duplicate || res.FirstVersion != 1 || res.FirstPosition != recado.NewPosition(4, 0) {
				t.Errorf("append after rollback: got %+v, want version 1 at position 4, not a duplicate", res)
			}
			mustAppend(t, s, "kept", []recado.Event{ev("D")}, eventstore.ExpectVersion(1))
		})
	}
}

func TestTxIsolation(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	s := db.Events()
	mustAppend(t, s, "a", []recado.Event{ev("A")})
	mustAppend(t, s, "b", []recado.Event{ev("B")})

	err := db.Tx(ctx, func(tx *memory.Tx) error {
		in := eventstore.InTx(tx)
		mustAppend(t, s, "a", []recado.Event{ev("A2")}, in)
		mustAppend(t, s, "c", []recado.Event{ev("C")}, in)
		if err := s.Delete(ctx, "b", in); err != nil {
			return err
		}

		// Readers outside the unit see only what has committed; they do not
		// wait for the writer.
		if got, want := logTypes(t, s), []string{"A", "B"}; !slices.Equal(got, want) {
			t.Errorf("ReadAll outside: got %v, want %v", got, want)
		}
		var back []string
		for e, err := range s.ReadAll(ctx, recado.Position{}, eventstore.Backwards()) {
			if err != nil {
				return err
			}
			back = append(back, e.Type)
		}
		if want := []string{"B", "A"}; !slices.Equal(back, want) {
			t.Errorf("ReadAll backwards outside: got %v, want %v", back, want)
		}
		if got, want := readStream(t, s, "a"), []string{"A"}; !slices.Equal(got, want) {
			t.Errorf("ReadStream(a) outside: got %v, want %v", got, want)
		}
		if got, want := readStream(t, s, "b"), []string{"B"}; !slices.Equal(got, want) {
			t.Errorf("ReadStream(b) outside: got %v, want %v", got, want)
		}
		for _, err := range s.ReadStream(ctx, "c") {
			if !errors.Is(err, eventstore.ErrStreamNotFound) {
				t.Errorf("ReadStream(c) outside: got %v, want %v", err, eventstore.ErrStreamNotFound)
			}
		}
		if got, want := state(t, s, "a"), (eventstore.StreamState{Version: 1, Exists: true}); got != want {
			t.Errorf("State(a) outside: got %+v, want %+v", got, want)
		}
		if got, want := state(t, s, "c"), (eventstore.StreamState{}); got != want {
			t.Errorf("State(c) outside: got %+v, want %+v", got, want)
		}

		// Inside, State and the expected versions see the unit's writes.
		if got, want := state(t, s, "a", in), (eventstore.StreamState{Version: 2, Exists: true}); got != want {
			t.Errorf("State(a) inside: got %+v, want %+v", got, want)
		}
		if got, want := state(t, s, "b", in), (eventstore.StreamState{Version: 1, Deleted: true}); got != want {
			t.Errorf("State(b) inside: got %+v, want %+v", got, want)
		}
		if got, want := state(t, s, "c", in), (eventstore.StreamState{Version: 1, Exists: true}); got != want {
			t.Errorf("State(c) inside: got %+v, want %+v", got, want)
		}
		_, err := s.Append(ctx, "a", []recado.Event{ev("stale")}, eventstore.ExpectVersion(1), in)
		if !errors.Is(err, eventstore.ErrConflict) {
			t.Errorf("append expecting the committed version inside: got %v, want %v", err, eventstore.ErrConflict)
		}
		mustAppend(t, s, "a", []recado.Event{ev("A3")}, eventstore.ExpectVersion(2), in)
		mustAppend(t, s, "b", []recado.Event{ev("B2")}, eventstore.Expect(eventstore.NoStream), in)
		return nil
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if got, want := logTypes(t, s), []string{"A", "B", "A2", "C", "A3", "B2"}; !slices.Equal(got, want) {
		t.Errorf("log after commit: got %v, want %v", got, want)
	}
	if got, want := readStream(t, s, "b"), []string{"B2"}; !slices.Equal(got, want) {
		t.Errorf("ReadStream(b) after commit: got %v, want %v", got, want)
	}
}

func readStream(t *testing.T, s *eventstore.Store, stream string) []string {
	t.Helper()
	var types []string
	for e, err := range s.ReadStream(context.Background(), stream) {
		if err != nil {
			t.Fatalf("ReadStream(%q): %v", stream, err)
		}
		types = append(types, e.Type)
	}
	return types
}

func TestTxOnCommit(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	s := db.Events()
	var calls []string
	err := db.Tx(ctx, func(tx *memory.Tx) error {
		tx.OnCommit(func() { calls = append(calls, "first") })
		tx.OnCommit(func() {
			calls = append(calls, "second")
			// The writer is free by now: a write here does not wait for the unit.
			mustAppend(t, s, "after", []recado.Event{ev("A")})
		})
		if len(calls) != 0 {
			t.Errorf("OnCommit ran before the commit: %v", calls)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if want := []string{"first", "second"}; !slices.Equal(calls, want) {
		t.Errorf("OnCommit calls when Tx returned: got %v, want %v", calls, want)
	}

	for _, rb := range rollbacks {
		ran := false
		txFails(t, db, func(tx *memory.Tx) error {
			tx.OnCommit(func() { ran = true })
			return rb.end()
		})
		if ran {
			t.Errorf("OnCommit ran after a rollback on %s", rb.name)
		}
	}
}

// otherTx is a unit of work of no memory.DB.
type otherTx struct{}

func (otherTx) OnCommit(func()) {}

func TestTxForeign(t *testing.T) {
	ctx := context.Background()
	db, other := newDB(t), newDB(t)
	s := db.Events()
	mustAppend(t, s, "a", []recado.Event{ev("A")})

	var leaked *memory.Tx
	if err := db.Tx(ctx, func(tx *memory.Tx) error { leaked = tx; return nil }); err != nil {
		t.Fatalf("Tx: %v", err)
	}
	refused := func(name string, tx recado.Tx) {
		in := eventstore.InTx(tx)
		_, err := s.Append(ctx, "a", []recado.Event{ev("X")}, in)
		if !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Append with %s: got %v, want %v", name, err, eventstore.ErrInvalid)
		}
		if err := s.Delete(ctx, "a", in); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Delete with %s: got %v, want %v", name, err, eventstore.ErrInvalid)
		}
		if err := s.Tombstone(ctx, "a", in); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Tombstone with %s: got %v, want %v", name, err, eventstore.ErrInvalid)
		}
		if _, err := s.State(ctx, "a", in); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("State with %s: got %v, want %v", name, err, eventstore.ErrInvalid)
		}
	}
	refused("a finished unit", leaked)
	refused("another type of unit", otherTx{})
	refused("a nil *memory.Tx", (*memory.Tx)(nil))
	err := other.Tx(ctx, func(tx *memory.Tx) error {
		refused("a unit of another DB", tx)
		return nil
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if got, want := logTypes(t, s), []string{"A"}; !slices.Equal(got, want) {
		t.Errorf("log: got %v, want %v", got, want)
	}
	if got, want := state(t, s, "a"), (eventstore.StreamState{Version: 1, Exists: true}); got != want {
		t.Errorf("State(a): got %+v, want %+v", got, want)
	}
}

// Units of work run one at a time: each reads the stream's version in its
// unit and appends expecting it, and none conflicts. Appends outside units
// join in, expecting no version.
func TestTxSerializes(t *testing.T) {
	const units, appends = 8, 8
	ctx := context.Background()
	db := newDB(t)
	s := db.Events()
	var wg sync.WaitGroup
	errs := make(chan error, units+appends)
	for range units {
		wg.Go(func() {
			errs <- db.Tx(ctx, func(tx *memory.Tx) error {
				in := eventstore.InTx(tx)
				st, err := s.State(ctx, "counter", in)
				if err != nil {
					return err
				}
				_, err = s.Append(ctx, "counter", []recado.Event{ev("Unit")}, eventstore.ExpectVersion(st.Version), in)
				if err != nil {
					return err
				}
				_, err = s.Append(ctx, "counter", []recado.Event{ev("Unit2")}, eventstore.ExpectVersion(st.Version+1), in)
				return err
			})
		})
	}
	for range appends {
		wg.Go(func() {
			_, err := s.Append(ctx, "counter", []recado.Event{ev("Plain")})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent write: %v", err)
		}
	}
	if got, want := state(t, s, "counter").Version, uint64(2*units+appends); got != want {
		t.Errorf("version after %d units and %d appends: got %d, want %d", units, appends, got, want)
	}
	// Each unit's two events are next to each other in the stream.
	types := readStream(t, s, "counter")
	for i, typ := range types {
		if typ == "Unit" && (i+1 == len(types) || types[i+1] != "Unit2") {
			t.Errorf("a unit's events were interleaved: %v", types)
			break
		}
	}
}

// A write outside the unit waits for the writer the unit holds, until its
// context ends.
func TestWriteWaitsForTx(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	s := db.Events()
	err := db.Tx(ctx, func(tx *memory.Tx) error {
		wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		defer cancel()
		_, err := s.Append(wctx, "a", []recado.Event{ev("A")})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("append outside the unit while it runs: got %v, want %v", err, context.DeadlineExceeded)
		}
		if err := db.Tx(wctx, func(*memory.Tx) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("second unit while the first runs: got %v, want %v", err, context.DeadlineExceeded)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if got := logTypes(t, s); len(got) != 0 {
		t.Errorf("log: got %v, want it empty", got)
	}
}

// A subscriber sees a unit's events once it commits, and never the events of
// a unit that rolled back, whose positions the next unit takes.
func TestTxSubscription(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := newDB(t)
	s := db.Events()
	caughtUp := make(chan struct{}, 1)
	got := make(chan recado.Event)
	done := make(chan error)
	go func() {
		for m, err := range s.Subscribe(ctx, recado.Position{}) {
			if err != nil {
				done <- err
				return
			}
			switch m.Kind {
			case eventstore.KindCaughtUp:
				select {
				case caughtUp <- struct{}{}:
				default:
				}
			case eventstore.KindEvent:
				select {
				case got <- m.Event:
				case <-ctx.Done():
				}
			}
		}
	}()
	<-caughtUp
	txFails(t, db, func(tx *memory.Tx) error {
		mustAppend(t, s, "a", []recado.Event{ev("RolledBack")}, eventstore.InTx(tx))
		return errFn
	})
	err := db.Tx(ctx, func(tx *memory.Tx) error {
		mustAppend(t, s, "a", []recado.Event{ev("Committed")}, eventstore.InTx(tx))
		return nil
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	e := <-got
	if e.Type != "Committed" || e.Position != recado.NewPosition(1, 0) {
		t.Errorf("first event delivered: got %s at %v, want Committed at 1", e.Type, e.Position)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("subscription ended with %v, want %v", err, context.Canceled)
	}
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	s := db.Events()
	mustAppend(t, s, "a", []recado.Event{ev("A")})

	// A unit of work in progress when the DB closes rolls back.
	err := db.Tx(ctx, func(tx *memory.Tx) error {
		mustAppend(t, s, "a", []recado.Event{ev("B")}, eventstore.InTx(tx))
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		_, err := s.Append(ctx, "a", []recado.Event{ev("C")}, eventstore.InTx(tx))
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("append in the unit after Close: got %v, want %v", err, eventstore.ErrClosed)
		}
		return nil
	})
	if !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Tx across Close: got %v, want %v", err, eventstore.ErrClosed)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := db.Tx(ctx, func(*memory.Tx) error { return nil }); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Tx after Close: got %v, want %v", err, eventstore.ErrClosed)
	}
	if _, err := s.Append(ctx, "a", []recado.Event{ev("D")}); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Append after Close: got %v, want %v", err, eventstore.ErrClosed)
	}
	if _, err := s.State(ctx, "a"); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("State after Close: got %v, want %v", err, eventstore.ErrClosed)
	}
	for _, err := range s.ReadAll(ctx, recado.Position{}) {
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("ReadAll after Close: got %v, want %v", err, eventstore.ErrClosed)
		}
	}
}

// A write waiting for the writer ends when the DB closes.
func TestCloseWakesWaitingWriter(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	s := db.Events()
	waiting := make(chan error)
	err := db.Tx(ctx, func(tx *memory.Tx) error {
		go func() {
			_, err := s.Append(ctx, "a", []recado.Event{ev("A")})
			waiting <- err
		}()
		return db.Close()
	})
	if !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Tx across Close: got %v, want %v", err, eventstore.ErrClosed)
	}
	if err := <-waiting; !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("append waiting for the writer: got %v, want %v", err, eventstore.ErrClosed)
	}
}

// Events yielded by reads are the reader's: changing them changes nothing
// stored.
func TestReadsAreDetached(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	s := db.Events()
	e := ev("A")
	e.Metadata.Fields = map[string]string{"k": "v"}
	mustAppend(t, s, "a", []recado.Event{e})
	scribble := func(seq func(yield func(recado.Event, error) bool)) {
		for e, err := range seq {
			if err != nil {
				t.Fatal(err)
			}
			clear(e.Data)
			e.Metadata.Fields["k"] = "changed"
		}
	}
	scribble(s.ReadAll(ctx, recado.Position{}))
	scribble(s.ReadStream(ctx, "a"))
	for got, err := range s.ReadStream(ctx, "a") {
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Data) != `{"n":1}` || got.Metadata.Fields["k"] != "v" {
			t.Errorf("stored event changed by a reader: data %q, fields %v", got.Data, got.Metadata.Fields)
		}
	}
}
