package eventstoretest

import (
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

var stateTests = []test{
	{"Lifecycle", testStateLifecycle},
	{"InUnitOfWork", testStateInUnitOfWork},
}

// wantState fails the test unless stream's state is want.
func wantState(tb testing.TB, s *eventstore.Store, stream string, want eventstore.StreamState, why string, opts ...eventstore.AppendOption) {
	tb.Helper()
	st, err := s.State(tb.Context(), stream, opts...)
	if err != nil {
		tb.Errorf("%s: State(%q): %v", why, stream, err)
		return
	}
	if st != want {
		tb.Errorf("%s: State(%q) = %+v, want %+v", why, stream, st, want)
	}
}

// testStateLifecycle: a stream never written is the zero state; one with
// events has its version and exists; a soft-deleted one keeps its version and
// is Deleted; appended again, it exists from the next version; a tombstoned
// one is Tombstoned, also a name never written.
func testStateLifecycle(t *testing.T, nb factory) {
	b := nb(t)
	s := b.Store
	wantState(t, s, "s", eventstore.StreamState{}, "never written")
	mustAppend(t, s, "s", newEvents("E", 3))
	mustAppend(t, s, "other", newEvents("E", 1))
	wantState(t, s, "s", eventstore.StreamState{Version: 3, Exists: true}, "with 3 events")
	wantState(t, s, "s-", eventstore.StreamState{}, "a name that extends an existing one")
	if !b.Features.Delete {
		return
	}
	if err := s.Delete(t.Context(), "s"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantState(t, s, "s", eventstore.StreamState{Version: 3, Deleted: true}, "soft-deleted")
	mustAppend(t, s, "s", newEvents("E", 1), eventstore.ExpectVersion(3))
	wantState(t, s, "s", eventstore.StreamState{Version: 4, Exists: true}, "appended again after a soft delete")
	if err := s.Tombstone(t.Context(), "s"); err != nil {
		t.Fatalf("Tombstone: %v", err)
	}
	wantState(t, s, "s", eventstore.StreamState{Version: 4, Tombstoned: true}, "tombstoned")
	if err := s.Tombstone(t.Context(), "reserved"); err != nil {
		t.Fatalf("Tombstone: %v", err)
	}
	wantState(t, s, "reserved", eventstore.StreamState{Tombstoned: true}, "a name tombstoned before it was written")
	wantState(t, s, "other", eventstore.StreamState{Version: 1, Exists: true}, "a stream next to deleted ones")
}

// testStateInUnitOfWork: State inside a unit of work sees what the unit
// wrote; outside the unit, nobody sees it before the commit, nor ever if the
// unit rolls back.
func testStateInUnitOfWork(t *testing.T, nb factory) {
	b := withUnitOfWork(t, nb)
	s, ctx := b.Store, guard(t)
	mustAppend(t, s, "s", newEvents("Before", 2))
	before := eventstore.StreamState{Version: 2, Exists: true}
	inside := eventstore.StreamState{Version: 3, Exists: true}
	for _, commit := range []bool{false, true} {
		outside := make(chan eventstore.StreamState, 1)
		early := false // whether the outside read returned while the unit was open
		err := b.Tx(ctx, func(tx recado.Tx) error {
			if _, err := s.Append(ctx, "s", newEvents("Inside", 1), eventstore.ExpectVersion(2), eventstore.InTx(tx)); err != nil {
				return err
			}
			if _, err := s.Append(ctx, "new", newEvents("Inside", 2), eventstore.InTx(tx)); err != nil {
				return err
			}
			wantState(t, s, "s", inside, "inside the unit, after its append", eventstore.InTx(tx))
			wantState(t, s, "new", eventstore.StreamState{Version: 2, Exists: true}, "inside the unit, a stream it created", eventstore.InTx(tx))
			// Outside the unit, on another goroutine: a backend may make the
			// read wait for the unit to end. Give it a moment to answer
			// while the unit is open; either way its answer is checked.
			go func() {
				st, err := s.State(ctx, "s")
				if err != nil {
					t.Errorf("State outside the unit: %v", err)
				}
				outside <- st
			}()
			select {
			case st := <-outside:
				early = true
				outside <- st
			case <-time.After(50 * time.Millisecond):
			}
			if !commit {
				return errRollback
			}
			return nil
		})
		if commit && err != nil || !commit && err != errRollback {
			t.Fatalf("Tx (commit %v) = %v", commit, err)
		}
		switch st := <-outside; {
		case early && st != before:
			t.Errorf("State outside an open unit of work = %+v, want %+v: it saw the unit's uncommitted append", st, before)
		case !commit && st != before:
			t.Errorf("State outside a unit of work that rolled back = %+v, want %+v", st, before)
		case commit && st != before && st != inside:
			t.Errorf("State outside a unit of work as it committed = %+v, want %+v or %+v", st, before, inside)
		}
		if commit {
			wantState(t, s, "s", inside, "after the commit")
			wantState(t, s, "new", eventstore.StreamState{Version: 2, Exists: true}, "after the commit")
		} else {
			wantState(t, s, "s", before, "after the rollback")
			wantState(t, s, "new", eventstore.StreamState{}, "after the rollback")
		}
	}
}
