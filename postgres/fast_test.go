package postgres

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// TestFastCommitWrongPredictions: two DBs on one schema, each predicting
// stream rows from its own commits. Whatever the other changed meanwhile (a
// stream's version, its deletion, an event ID), every append is decided as
// on the facts: the one-round-trip commit's guards refuse the stale
// prediction and the group is committed the usual way.
func TestFastCommitWrongPredictions(t *testing.T) {
	schema := newSchema(t)
	a := openOn(t, newPool(t, ""), Options{Schema: schema, Writers: 1})
	b := openOn(t, newPool(t, ""), Options{Schema: schema, Writers: 1})
	var committed, refused atomic.Int64
	a.events.hooks.fast = func(ok bool) {
		if ok {
			committed.Add(1)
		} else {
			refused.Add(1)
		}
	}
	sa, sb := a.Events(), b.Events()
	ctx := t.Context()
	step := func(name string, c, r int64) {
		t.Helper()
		if got, gotR := committed.Load(), refused.Load(); got != c || gotR != r {
			t.Errorf("%s: %d one-round-trip commits and %d refused, want %d and %d", name, got, gotR, c, r)
		}
	}

	if _, err := sa.Append(ctx, "s", testEvents("E", 2), eventstore.Expect(eventstore.NoStream)); err != nil {
		t.Fatal(err)
	}
	step("new stream", 1, 0)
	if _, err := sb.Append(ctx, "s", testEvents("E", 1)); err != nil {
		t.Fatal(err)
	}
	// a predicts version 2: the stream is at 3.
	_, err := sa.Append(ctx, "s", testEvents("E", 1), eventstore.ExpectVersion(2))
	var conflict *eventstore.ConflictError
	if !errors.As(err, &conflict) || conflict.Actual != 3 {
		t.Fatalf("Append expecting 2 at version 3 = %v, want a conflict naming version 3", err)
	}
	step("stale version", 1, 1)
	res, err := sa.Append(ctx, "s", testEvents("E", 1), eventstore.ExpectVersion(3))
	if err != nil || res.FirstVersion != 4 {
		t.Fatalf("Append expecting 3 = %+v, %v; want version 4", res, err)
	}
	step("after the conflict", 1, 1) // decided on read facts: no prediction
	// b soft-deletes s: a predicts it undeleted at 4.
	if err := sb.Delete(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Append(ctx, "s", testEvents("E", 1), eventstore.Expect(eventstore.StreamExists)); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("Append expecting a soft-deleted stream to exist = %v, want ErrConflict", err)
	}
	if res, err = sa.Append(ctx, "s", testEvents("E", 1), eventstore.ExpectVersion(4)); err != nil || res.FirstVersion != 5 {
		t.Fatalf("Append after a soft delete = %+v, %v; want version 5", res, err)
	}
	step("soft delete", 1, 2)
	if got := versions(t, sa, "s"); len(got) != 1 || got[0] != 5 {
		t.Errorf("stream after the soft delete and an append: versions %v, want [5]", got)
	}

	// An event b stored: appended by a again to its stream, a retry; to
	// another, a duplicate ID.
	events := testEvents("E", 3)
	first, err := sb.Append(ctx, "t", events)
	if err != nil {
		t.Fatal(err)
	}
	again, err := sa.Append(ctx, "t", events)
	if err != nil || !again.Duplicate || again.FirstPosition != first.FirstPosition {
		t.Errorf("retry of b's append through a = %+v, %v; want the original %+v as a duplicate", again, err, first)
	}
	if _, err := sa.Append(ctx, "u", events[1:]); !errors.Is(err, eventstore.ErrDuplicateID) {
		t.Errorf("b's event IDs appended through a to another stream: %v, want ErrDuplicateID", err)
	}
	step("stored IDs", 1, 4)
	if got := versions(t, sa, "u"); len(got) != 0 {
		t.Errorf("stream u after a refused append: versions %v, want none", got)
	}
	// A prediction from the last commit holds.
	if res, err = sa.Append(ctx, "s", testEvents("E", 2), eventstore.ExpectVersion(5)); err != nil || res.FirstVersion != 6 {
		t.Fatalf("Append expecting 5 = %+v, %v; want versions 6..7", res, err)
	}
	step("prediction held", 2, 4)

	// The log holds every stream's events in order.
	seen := map[string]uint64{}
	for e, err := range sa.ReadAll(ctx, recado.Position{}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Version != seen[e.Stream]+1 {
			t.Errorf("log: %s version %d after %d", e.Stream, e.Version, seen[e.Stream])
		}
		seen[e.Stream] = e.Version
	}
	if seen["s"] != 7 || seen["t"] != 3 {
		t.Errorf("log: last versions %v, want s 7 and t 3", seen)
	}
}

// versions returns the versions ReadStream yields for stream (none if it does
// not exist).
func versions(t *testing.T, s *eventstore.Store, stream string) []uint64 {
	t.Helper()
	var got []uint64
	for e, err := range s.ReadStream(t.Context(), stream) {
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Version)
	}
	return got
}
