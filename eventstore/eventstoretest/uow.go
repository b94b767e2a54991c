package eventstoretest

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

var unitOfWorkTests = []test{
	{"Commit", testUnitCommit},
	{"CommitWakesSubscription", testUnitWakesSubscription},
	{"RollbackOnError", func(t *testing.T, nb factory) { testUnitRollback(t, nb, false) }},
	{"RollbackOnPanic", func(t *testing.T, nb factory) { testUnitRollback(t, nb, true) }},
	{"RefusedAppendInside", testUnitRefusedAppend},
	{"OtherBackendsTx", testUnitOtherBackend},
	{"TxAfterEnd", testUnitTxAfterEnd},
	{"OnCommit", testUnitOnCommit},
}

// errRollback is what units of work that must roll back return.
var errRollback = errors.New("eventstoretest: roll back")

// testUnitCommit: appends (and a delete) in a unit of work are visible once
// it commits, where their results said, and the unit's error is nil.
func testUnitCommit(t *testing.T, nb factory) {
	b := withUnitOfWork(t, nb)
	s, ctx := b.Store, t.Context()
	if b.Features.Delete {
		mustAppend(t, s, "old", newEvents("Old", 1))
	}
	a, c := newEvents("A", 2), newEvents("C", 1)
	var resA, resC eventstore.AppendResult
	err := b.Tx(ctx, func(tx recado.Tx) error {
		var err error
		if resA, err = s.Append(ctx, "a", cloneEvents(a), eventstore.Expect(eventstore.NoStream), eventstore.InTx(tx)); err != nil {
			return err
		}
		if resC, err = s.Append(ctx, "c", cloneEvents(c), eventstore.InTx(tx)); err != nil {
			return err
		}
		if b.Features.Delete {
			return s.Delete(ctx, "old", eventstore.InTx(tx))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	checkResult(t, "a", 2, resA)
	checkResult(t, "c", 1, resC)
	for _, w := range []struct {
		stream string
		events []recado.Event
		res    eventstore.AppendResult
	}{{"a", a, resA}, {"c", c, resC}} {
		got := mustReadStream(t, s, w.stream)
		if len(got) != len(w.events) {
			t.Fatalf("after the commit, stream %q has %d events, want %d", w.stream, len(got), len(w.events))
		}
		for i := range got {
			if d := sameEvent(got[i], w.events[i]); d != "" {
				t.Errorf("stream %q event %d: %s", w.stream, i, d)
			}
		}
		if got[0].Position != w.res.FirstPosition || got[len(got)-1].Position != w.res.LastPosition {
			t.Errorf("stream %q: events at %s..%s, but the append in the unit reported %s..%s", w.stream,
				got[0].Position, got[len(got)-1].Position, w.res.FirstPosition, w.res.LastPosition)
		}
	}
	if b.Features.Delete {
		if _, err := readStream(ctx, s, "old"); !errors.Is(err, eventstore.ErrStreamNotFound) {
			t.Errorf("after a committed Delete in the unit, ReadStream = %v, want ErrStreamNotFound", err)
		}
	}
}

// testUnitWakesSubscription: a subscription waiting for events (polling once
// an hour) is woken by a unit of work's commit.
func testUnitWakesSubscription(t *testing.T, nb factory) {
	b := leakChecked(t, nb)
	if !b.Features.UnitOfWork {
		t.Skip("the backend does not have Features.UnitOfWork")
	}
	s := b.Store
	ctx := guard(t)
	next, stop := iter.Pull2(s.Subscribe(ctx, recado.Position{}, eventstore.WithPollInterval(time.Hour)))
	defer stop()
	if m, err, _ := next(); err != nil || m.Kind != eventstore.KindCaughtUp {
		t.Fatalf("first message of a subscription to an empty store: %v, %v; want caught up", m.Kind, err)
	}
	events := newEvents("InUnit", 2)
	if err := b.Tx(ctx, func(tx recado.Tx) error {
		_, err := s.Append(ctx, "woken", cloneEvents(events), eventstore.InTx(tx))
		return err
	}); err != nil {
		t.Fatalf("Tx: %v", err)
	}
	var got []string
	for len(got) < len(events) {
		m, err, _ := next()
		if err != nil {
			t.Fatalf("after the unit committed, the subscription ended with %v (%d of %d events delivered): the commit did not wake it", err, len(got), len(events))
		}
		if m.Kind == eventstore.KindEvent {
			got = append(got, m.Event.ID)
		}
	}
	if !slices.Equal(got, ids(events)) {
		t.Errorf("subscription delivered %v, want %v", got, ids(events))
	}
}

// testUnitRollback: a unit of work that returns an error, or panics, stores
// nothing, returns the error as it is (or panics on), and leaves no hole a
// reader could fall into: a reader checkpointed before it sees the next
// committed event, and the unit's event IDs are free again.
func testUnitRollback(t *testing.T, nb factory, panics bool) {
	b := withUnitOfWork(t, nb)
	s, ctx := b.Store, guard(t)
	before := mustAppend(t, s, "before", newEvents("Before", 1))
	next, stop := iter.Pull2(s.Subscribe(ctx, before.LastPosition, eventstore.WithPollInterval(10*time.Millisecond)))
	defer stop()
	if m, err, _ := next(); err != nil || m.Kind != eventstore.KindCaughtUp {
		t.Fatalf("first message of a subscription after the head: %v, %v; want caught up", m.Kind, err)
	}
	gone := newEvents("Gone", 2)
	panicValue := fmt.Sprintf("eventstoretest: panic in a unit of work %p", &gone)
	var recovered any
	reading := make(chan []recado.Event, 1) // a ReadAll that runs while the unit is open
	err := func() error {
		defer func() {
			if panics {
				recovered = recover()
			}
		}()
		return b.Tx(ctx, func(tx recado.Tx) error {
			if _, err := s.Append(ctx, "gone", cloneEvents(gone), eventstore.InTx(tx)); err != nil {
				t.Errorf("Append in the unit: %v", err)
			}
			if _, err := s.Append(ctx, "before", newEvents("Gone", 1), eventstore.ExpectVersion(1), eventstore.InTx(tx)); err != nil {
				t.Errorf("Append in the unit: %v", err)
			}
			go func() {
				got, err := readAll(ctx, s, before.LastPosition)
				if err != nil {
					t.Errorf("ReadAll while a unit of work was open: %v", err)
				}
				reading <- got
			}()
			if panics {
				panic(panicValue)
			}
			return errRollback
		})
	}()
	if got := <-reading; len(got) > 0 {
		t.Errorf("ReadAll started while a unit of work was open read %v, events of the unit that rolled back", ids(got))
	}
	switch {
	case panics && recovered != panicValue:
		t.Errorf("a unit of work that panicked: Tx recovered %v (error %v), want the panic to go on with its value", recovered, err)
	case !panics && err != errRollback:
		t.Errorf("Tx = %v, want the unit's own error as it is", err)
	}
	wantNothingStored(t, s, "gone", 1, "after a rollback")
	if got := mustReadStream(t, s, "before"); len(got) != 1 {
		t.Errorf("after a rollback, stream %q has %d events, want 1", "before", len(got))
	}
	if st, err := s.State(ctx, "gone"); err != nil || st != (eventstore.StreamState{}) {
		t.Errorf("State after a rollback = %+v, %v; want the zero state", st, err)
	}
	after := newEvents("After", 1)
	mustAppend(t, s, "after", slices.Clone(after))
	if got := mustReadAll(t, s, before.LastPosition); !slices.Equal(ids(got), ids(after)) {
		t.Errorf("ReadAll after the last event before the rollback = %v, want the next committed event %v", ids(got), ids(after))
	}
	for {
		m, err, _ := next()
		if err != nil {
			t.Fatalf("subscription checkpointed before the rollback: %v before it saw the next committed event", err)
		}
		if m.Kind == eventstore.KindEvent {
			if m.Event.ID != after[0].ID {
				t.Errorf("subscription checkpointed before the rollback delivered %s (stream %q), want the next committed event", m.Event.ID, m.Event.Stream)
			}
			break
		}
	}
	res, err := s.Append(ctx, "gone", cloneEvents(gone))
	if err != nil || res.Duplicate || res.FirstVersion != 1 {
		t.Errorf("appending the rolled-back events again = %+v, %v; want them stored anew from version 1", res, err)
	}
}

// testUnitRefusedAppend: an append refused inside a unit of work (a wrong
// expected version, a stored ID) reports its error, and the unit goes on and
// commits the rest of its work.
func testUnitRefusedAppend(t *testing.T, nb factory) {
	b := withUnitOfWork(t, nb)
	s, ctx := b.Store, t.Context()
	stored := newEvents("Stored", 2)
	mustAppend(t, s, "c", slices.Clone(stored))
	err := b.Tx(ctx, func(tx recado.Tx) error {
		if _, err := s.Append(ctx, "a", newEvents("A", 1), eventstore.InTx(tx)); err != nil {
			return err
		}
		_, err := s.Append(ctx, "c", newEvents("Late", 1), eventstore.ExpectVersion(1), eventstore.InTx(tx))
		wantConflict(t, err, "c", eventstore.Exact(1), 2)
		_, err = s.Append(ctx, "d", newEvents("D", 1), eventstore.Expect(eventstore.StreamExists), eventstore.InTx(tx))
		wantConflict(t, err, "d", eventstore.StreamExists, 0)
		_, err = s.Append(ctx, "e", []recado.Event{newEvent("New", 0), stored[1]}, eventstore.InTx(tx))
		wantDuplicateID(t, err, stored[1].ID)
		if _, err := s.Append(ctx, "b", newEvents("B", 1), eventstore.InTx(tx)); err != nil {
			return fmt.Errorf("append after refused ones: %w", err)
		}
		if _, err := s.Append(ctx, "c", newEvents("OnTime", 1), eventstore.ExpectVersion(2), eventstore.InTx(tx)); err != nil {
			return fmt.Errorf("append after refused ones: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Tx with refused appends inside: %v, want it to commit the rest", err)
	}
	for stream, n := range map[string]int{"a": 1, "b": 1, "c": 3} {
		if got := mustReadStream(t, s, stream); len(got) != n {
			t.Errorf("after the commit, stream %q has %d events, want %d", stream, len(got), n)
		}
	}
	for _, stream := range []string{"d", "e"} {
		if _, err := readStream(ctx, s, stream); !errors.Is(err, eventstore.ErrStreamNotFound) {
			t.Errorf("stream %q of a refused append: %v, want ErrStreamNotFound", stream, err)
		}
	}
	wantLogLen(t, s, 5, "after a unit with refused appends")
}

// testUnitOtherBackend: a unit of work of another backend instance is
// invalid for the store, and stays usable for its own.
func testUnitOtherBackend(t *testing.T, nb factory) {
	b := withUnitOfWork(t, nb)
	other := nb(t)
	ctx := t.Context()
	mustAppend(t, other.Store, "s", newEvents("Other", 1))
	err := b.Tx(ctx, func(tx recado.Tx) error {
		if _, err := other.Store.Append(ctx, "s", newEvents("Foreign", 1), eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Append in another backend's unit of work: %v, want ErrInvalid", err)
		}
		if _, err := other.Store.State(ctx, "s", eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("State in another backend's unit of work: %v, want ErrInvalid", err)
		}
		if other.Features.Delete {
			if err := other.Store.Delete(ctx, "s", eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("Delete in another backend's unit of work: %v, want ErrInvalid", err)
			}
		}
		_, err := b.Store.Append(ctx, "mine", newEvents("Mine", 1), eventstore.InTx(tx))
		return err
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if got := mustReadStream(t, other.Store, "s"); len(got) != 1 {
		t.Errorf("the other backend's stream has %d events, want 1", len(got))
	}
	wantLogLen(t, other.Store, 1, "the other backend, after calls in a foreign unit of work")
	wantLogLen(t, b.Store, 1, "after the unit of work")
}

// testUnitTxAfterEnd: a unit of work kept after its function returned
// (committed or rolled back) is invalid.
func testUnitTxAfterEnd(t *testing.T, nb factory) {
	b := withUnitOfWork(t, nb)
	s, ctx := b.Store, t.Context()
	for _, end := range []error{nil, errRollback} {
		var kept recado.Tx
		err := b.Tx(ctx, func(tx recado.Tx) error {
			kept = tx
			if _, err := s.Append(ctx, "a", newEvents("A", 1), eventstore.InTx(tx)); err != nil {
				return err
			}
			return end
		})
		if err != end {
			t.Fatalf("Tx = %v, want %v", err, end)
		}
		if _, err := s.Append(ctx, "late", newEvents("Late", 1), eventstore.InTx(kept)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Append in a unit of work that ended (%v): %v, want ErrInvalid", end, err)
		}
		if _, err := s.State(ctx, "a", eventstore.InTx(kept)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("State in a unit of work that ended (%v): %v, want ErrInvalid", end, err)
		}
		if b.Features.Delete {
			if err := s.Delete(ctx, "a", eventstore.InTx(kept)); !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("Delete in a unit of work that ended (%v): %v, want ErrInvalid", end, err)
			}
		}
	}
	wantNothingStored(t, s, "late", 1, "after calls in units of work that ended")
}

// testUnitOnCommit: functions given to OnCommit run once each, after the
// commit (what the unit wrote is then visible outside it) and before Tx
// returns; never when the unit rolls back.
func testUnitOnCommit(t *testing.T, nb factory) {
	b := withUnitOfWork(t, nb)
	s, ctx := b.Store, guard(t)
	for _, end := range []string{"commit", "error", "panic"} {
		stream := "on-commit-" + end
		ran := 0
		var visible error
		func() {
			defer func() {
				if r := recover(); r != nil && end != "panic" {
					panic(r)
				}
			}()
			err := b.Tx(ctx, func(tx recado.Tx) error {
				if _, err := s.Append(ctx, stream, newEvents("E", 1), eventstore.InTx(tx)); err != nil {
					return err
				}
				tx.OnCommit(func() { ran++ })
				tx.OnCommit(func() {
					ran++
					visible = visibleOutside(ctx, s, stream)
				})
				if ran > 0 {
					t.Errorf("%s: OnCommit functions ran before the unit ended", end)
				}
				switch end {
				case "error":
					return errRollback
				case "panic":
					panic("eventstoretest: rolled back by a panic")
				}
				return nil
			})
			if end == "commit" && err != nil {
				t.Fatalf("Tx: %v", err)
			}
		}()
		switch {
		case end == "commit" && ran != 2:
			t.Errorf("after a commit, %d OnCommit functions ran, want both, once", ran)
		case end == "commit" && visible != nil:
			t.Errorf("in OnCommit: %v", visible)
		case end != "commit" && ran != 0:
			t.Errorf("after a rollback by %s, %d OnCommit functions ran, want none", end, ran)
		}
	}
}

// visibleOutside reports whether stream's one event can be read outside any
// unit of work, without waiting for the caller (which may hold locks).
func visibleOutside(ctx context.Context, s *eventstore.Store, stream string) error {
	done := make(chan error, 1)
	go func() {
		events, err := readStream(ctx, s, stream)
		if err == nil && len(events) != 1 {
			err = fmt.Errorf("stream %q has %d events", stream, len(events))
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("reading what the unit committed: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("reading the store from OnCommit did not return: %w", context.Cause(ctx))
	}
}
