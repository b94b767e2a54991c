package eventstoretest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

var cancelTests = []test{
	{"AlreadyCancelled", testAlreadyCancelled},
	{"AbandonedMidCommit", testAbandonedMidCommit},
}

// testAlreadyCancelled: with a context already done, Append fails and stores
// nothing, and reads yield the context's error.
func testAlreadyCancelled(t *testing.T, nb factory) {
	s := store(t, nb)
	mustAppend(t, s, "s", newEvents("Happened", 2))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Append(ctx, "new", newEvents("Late", 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Append to a new stream with a cancelled context: error = %v, want context.Canceled", err)
	}
	if _, err := s.Append(ctx, "s", newEvents("Late", 2), eventstore.ExpectVersion(2)); !errors.Is(err, context.Canceled) {
		t.Errorf("Append to a stream with a cancelled context: error = %v, want context.Canceled", err)
	}
	wantNothingStored(t, s, "new", 2, "after appends with a cancelled context")
	if got := mustReadStream(t, s, "s"); len(got) != 2 {
		t.Errorf("after an append with a cancelled context, stream has %d events, want 2", len(got))
	}
	if got, err := readStream(ctx, s, "s"); !errors.Is(err, context.Canceled) || len(got) != 0 {
		t.Errorf("ReadStream with a cancelled context = %d events, error %v; want no events and context.Canceled", len(got), err)
	}
	if got, err := readAll(ctx, s, recado.Position{}); !errors.Is(err, context.Canceled) || len(got) != 0 {
		t.Errorf("ReadAll with a cancelled context = %d events, error %v; want no events and context.Canceled", len(got), err)
	}
	if _, err := s.State(ctx, "s"); !errors.Is(err, context.Canceled) {
		t.Errorf("State with a cancelled context: error = %v, want context.Canceled", err)
	}
	if err := s.Delete(ctx, "s"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete with a cancelled context: error = %v, want context.Canceled", err)
	}
	if err := s.Tombstone(ctx, "s"); !errors.Is(err, context.Canceled) {
		t.Errorf("Tombstone with a cancelled context: error = %v, want context.Canceled", err)
	}
	if got := mustReadStream(t, s, "s"); len(got) != 2 {
		t.Errorf("after deletes with a cancelled context, stream has %d events, want 2", len(got))
	}
}

// testAbandonedMidCommit: appends whose contexts end at random moments report
// success, the context's error, or ErrUnknownOutcome; retrying every one that
// did not report success, with the same events, leaves each event in the log
// exactly once.
func testAbandonedMidCommit(t *testing.T, nb factory) {
	s := store(t, nb)
	n := scale(240, 60)
	const workers = 8
	type attempt struct {
		stream string
		events []recado.Event
		err    error
	}
	attempts := make([]attempt, n)
	for i := range attempts {
		attempts[i] = attempt{stream: fmt.Sprintf("abandoned-%d", i%12), events: newEvents("Maybe", 1+i%3)}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for i := w; i < n; i += workers {
				a := &attempts[i]
				var ctx context.Context
				var cancel context.CancelFunc
				delay := time.Duration(rng.IntN(2000)) * time.Microsecond
				if i%2 == 0 {
					ctx, cancel = context.WithTimeout(t.Context(), delay)
				} else {
					ctx, cancel = context.WithCancel(t.Context())
					time.AfterFunc(delay, cancel)
				}
				_, a.err = s.Append(ctx, a.stream, slices.Clone(a.events))
				cancel()
			}
		})
	}
	wg.Wait()
	outcomes := map[string]int{}
	for i, a := range attempts {
		switch {
		case a.err == nil:
			outcomes["success"]++
		case errors.Is(a.err, eventstore.ErrUnknownOutcome):
			outcomes["unknown outcome"]++
		case isCtxErr(a.err):
			outcomes["context error"]++
		default:
			t.Errorf("append %d abandoned mid-commit: error = %v, want nil, ErrUnknownOutcome or the context's error", i, a.err)
		}
	}
	t.Logf("outcomes of %d abandoned appends: %v", n, outcomes)
	// Retry every append that did not report success.
	for i, a := range attempts {
		if a.err == nil {
			continue
		}
		res, err := s.Append(t.Context(), a.stream, slices.Clone(a.events))
		if err != nil {
			t.Errorf("retry of append %d (which failed with %v): %v", i, a.err, err)
			continue
		}
		checkResult(t, a.stream, len(a.events), res)
	}
	total := 0
	byID := map[string]int{}
	for _, a := range attempts {
		total += len(a.events)
		for _, e := range a.events {
			byID[e.ID] = 0
		}
	}
	log := mustReadAll(t, s, recado.Position{})
	for _, e := range log {
		if _, ok := byID[e.ID]; !ok {
			t.Errorf("log holds event %s that no append wrote", e.ID)
			continue
		}
		byID[e.ID]++
	}
	for id, k := range byID {
		if k != 1 {
			t.Errorf("event %s is in the log %d times, want exactly once", id, k)
		}
	}
	if len(log) != total {
		t.Errorf("log holds %d events, want %d", len(log), total)
	}
	// Each append's events stay together, in order, in their stream.
	for i, a := range attempts {
		stored := mustReadStream(t, s, a.stream)
		at := slices.IndexFunc(stored, func(e recado.Event) bool { return e.ID == a.events[0].ID })
		if at < 0 || at+len(a.events) > len(stored) || !slices.Equal(ids(stored[at:at+len(a.events)]), ids(a.events)) {
			t.Errorf("append %d: its %d events are not together and in order in stream %q", i, len(a.events), a.stream)
		}
	}
}

var closeTests = []test{
	{"WhileBusy", testCloseWhileBusy},
}

// testCloseWhileBusy: Close while subscriptions and appends run ends them with
// errors; Close twice is fine; every call afterwards wraps ErrClosed.
func testCloseWhileBusy(t *testing.T, nb factory) {
	b := withFeature(t, nb, "Close", func(f Features) bool { return f.Close })
	s := b.Store
	mustAppend(t, s, "busy-0", newEvents("Before", 3))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	started := make(chan struct{}, 16)
	for g := range 4 {
		wg.Go(func() { // appenders
			stream := fmt.Sprintf("busy-%d", g)
			for i := 0; ; i++ {
				if i == 2 {
					select {
					case started <- struct{}{}:
					default: // enough signals already
					}
				}
				if _, err := s.Append(t.Context(), stream, newEvents("During", 1)); err != nil {
					errs <- fmt.Errorf("append: %w", err)
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() { // subscribers
			for m, err := range s.Subscribe(t.Context(), recado.Position{}) {
				if err != nil {
					errs <- fmt.Errorf("subscription: %w", err)
					return
				}
				if m.Kind == eventstore.KindCaughtUp {
					select {
					case started <- struct{}{}:
					default:
					}
				}
			}
			errs <- errors.New("subscription: ended without an error")
		})
	}
	ctx := guard(t)
	for range 6 {
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatalf("appends and subscriptions did not get going: %v", ctx.Err())
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		t.Fatalf("appends or subscriptions still running long after Close")
	}
	close(errs)
	for err := range errs {
		if !errors.Is(err, eventstore.ErrClosed) && !errors.Is(err, eventstore.ErrUnknownOutcome) {
			t.Errorf("%v; want an error wrapping ErrClosed", err)
		}
	}
	if err := b.Close(); err != nil && !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("second Close: %v, want nil (or ErrClosed)", err)
	}
	_, err := s.Append(ctx, "busy-0", newEvents("After", 1))
	wantError(t, err, "append", "busy-0", eventstore.ErrClosed)
	if msg := fmt.Sprint(err); !strings.HasPrefix(msg, `eventstore: append "busy-0": eventstore: store closed`) {
		t.Errorf("Append after Close: message %q, want it to start with the sentinel's text", msg)
	}
	if _, err := readStream(ctx, s, "busy-0"); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("ReadStream after Close: error = %v, want ErrClosed", err)
	}
	if _, err := readAll(ctx, s, recado.Position{}); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("ReadAll after Close: error = %v, want ErrClosed", err)
	}
	for _, err := range s.Subscribe(ctx, recado.Position{}) {
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("Subscribe after Close: first item error = %v, want ErrClosed", err)
		}
		break
	}
	if _, err := s.State(ctx, "busy-0"); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("State after Close: error = %v, want ErrClosed", err)
	}
	if b.Features.Delete {
		if err := s.Delete(ctx, "busy-0"); !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("Delete after Close: error = %v, want ErrClosed", err)
		}
		if err := s.Tombstone(ctx, "busy-0"); !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("Tombstone after Close: error = %v, want ErrClosed", err)
		}
	}
}

var deleteTests = []test{
	{"SoftDelete", testSoftDelete},
	{"SoftDeleteExpectedVersion", testSoftDeleteExpectedVersion},
	{"SoftDeleteMissing", testSoftDeleteMissing},
	{"Tombstone", testTombstone},
	{"TombstoneNeverWritten", testTombstoneNeverWritten},
	{"MissingBeforeVersion", testDeleteMissingBeforeVersion},
	{"TombstoneNeverWrittenExpected", testTombstoneNeverWrittenExpected},
	{"Deleted", testDeleteDeleted},
}

// testSoftDelete: reads say not found, the log keeps the events, and a later
// append continues from the next version and is all a read shows.
func testSoftDelete(t *testing.T, nb factory) {
	s := withDelete(t, nb)
	mustAppend(t, s, "d", newEvents("Old", 3))
	mustAppend(t, s, "keep", newEvents("Other", 1))
	if err := s.Delete(t.Context(), "d"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := readStream(t.Context(), s, "d"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("ReadStream after Delete: error = %v, want ErrStreamNotFound", err)
	}
	if _, err := readStream(t.Context(), s, "d", eventstore.Backwards()); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("ReadStream backwards after Delete: error = %v, want ErrStreamNotFound", err)
	}
	wantLogLen(t, s, 4, "after a soft delete")
	if len(mustReadStream(t, s, "keep")) != 1 {
		t.Errorf("Delete of one stream touched another")
	}
	_, err := s.Append(t.Context(), "d", newEvents("New", 1), eventstore.Expect(eventstore.StreamExists))
	wantConflict(t, err, "d", eventstore.StreamExists, 3)
	fresh := newEvents("New", 2)
	res := mustAppend(t, s, "d", slices.Clone(fresh), eventstore.Expect(eventstore.NoStream))
	if res.FirstVersion != 4 || res.LastVersion != 5 {
		t.Errorf("append after a soft delete wrote versions %d..%d, want 4..5", res.FirstVersion, res.LastVersion)
	}
	got := mustReadStream(t, s, "d")
	if !slices.Equal(ids(got), ids(fresh)) || !slices.Equal(versions(got), []uint64{4, 5}) {
		t.Errorf("after recreating, ReadStream = versions %v, want only the new events, versions [4 5]", versions(got))
	}
	for _, opts := range [][]eventstore.ReadOption{{eventstore.FromVersion(2)}, {eventstore.Backwards(), eventstore.FromVersion(3)}} {
		if got, err := readStream(t.Context(), s, "d", opts...); err != nil || len(got) > 0 && got[0].Version < 4 {
			t.Errorf("ReadStream of deleted versions = versions %v, %v; want none of the deleted events", versions(got), err)
		}
	}
	if got := mustReadStream(t, s, "d", eventstore.Backwards()); !slices.Equal(versions(got), []uint64{5, 4}) {
		t.Errorf("ReadStream backwards after recreating = versions %v, want [5 4]", versions(got))
	}
	_, err = s.Append(t.Context(), "d", newEvents("New", 1), eventstore.Expect(eventstore.NoStream))
	wantConflict(t, err, "d", eventstore.NoStream, 5)
	wantLogLen(t, s, 6, "after recreating a deleted stream")
}

// testSoftDeleteExpectedVersion: Delete is guarded like an append, and a
// deleted stream keeps its last version for Exact.
func testSoftDeleteExpectedVersion(t *testing.T, nb factory) {
	s := withDelete(t, nb)
	mustAppend(t, s, "d", newEvents("Old", 2))
	err := s.Delete(t.Context(), "d", eventstore.ExpectVersion(1))
	wantConflict(t, err, "d", eventstore.Exact(1), 2)
	err = s.Delete(t.Context(), "d", eventstore.Expect(eventstore.NoStream))
	wantConflict(t, err, "d", eventstore.NoStream, 2)
	if got := mustReadStream(t, s, "d"); len(got) != 2 {
		t.Fatalf("after a Delete that conflicted, stream has %d events, want 2", len(got))
	}
	if err := s.Delete(t.Context(), "d", eventstore.ExpectVersion(2)); err != nil {
		t.Fatalf("Delete with the right expected version: %v", err)
	}
	res, err := s.Append(t.Context(), "d", newEvents("New", 1), eventstore.ExpectVersion(2))
	if err != nil || res.FirstVersion != 3 {
		t.Errorf("append expecting the deleted stream's last version = %+v, %v; want version 3", res, err)
	}
}

// testSoftDeleteMissing: deleting a stream that does not exist is not found.
func testSoftDeleteMissing(t *testing.T, nb factory) {
	s := withDelete(t, nb)
	if err := s.Delete(t.Context(), "never"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("Delete of a stream never written: error = %v, want ErrStreamNotFound", err)
	}
	mustAppend(t, s, "twice", newEvents("Old", 1))
	if err := s.Delete(t.Context(), "twice"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.Delete(t.Context(), "twice"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("second Delete: error = %v, want ErrStreamNotFound", err)
	}
}

// testTombstone: a tombstoned stream can be neither read nor written, and its
// events stay in the log.
func testTombstone(t *testing.T, nb factory) {
	s := withDelete(t, nb)
	mustAppend(t, s, "t", newEvents("Old", 2))
	err := s.Tombstone(t.Context(), "t", eventstore.ExpectVersion(1))
	wantConflict(t, err, "t", eventstore.Exact(1), 2)
	if err := s.Tombstone(t.Context(), "t"); err != nil {
		t.Fatalf("Tombstone: %v", err)
	}
	if _, err := readStream(t.Context(), s, "t"); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Errorf("ReadStream after Tombstone: error = %v, want ErrStreamDeleted", err)
	}
	for _, ev := range []eventstore.ExpectedVersion{eventstore.Any, eventstore.NoStream, eventstore.StreamExists, eventstore.Exact(2)} {
		if _, err := s.Append(t.Context(), "t", newEvents("New", 1), eventstore.Expect(ev)); !errors.Is(err, eventstore.ErrStreamDeleted) {
			t.Errorf("Append (expected %s) after Tombstone: error = %v, want ErrStreamDeleted", ev, err)
		}
	}
	wantLogLen(t, s, 2, "after a tombstone")
}

// testTombstoneNeverWritten: a name can be tombstoned before it is used.
func testTombstoneNeverWritten(t *testing.T, nb factory) {
	s := withDelete(t, nb)
	if err := s.Tombstone(t.Context(), "reserved"); err != nil {
		t.Fatalf("Tombstone of a stream never written: %v", err)
	}
	if _, err := s.Append(t.Context(), "reserved", newEvents("New", 1)); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Errorf("Append after Tombstone: error = %v, want ErrStreamDeleted", err)
	}
	if _, err := readStream(t.Context(), s, "reserved"); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Errorf("ReadStream after Tombstone: error = %v, want ErrStreamDeleted", err)
	}
	wantLogLen(t, s, 0, "after a tombstone")
}

// testDeleteMissingBeforeVersion: a soft delete of a stream that does not
// exist (never written, or soft-deleted) is ErrStreamNotFound whatever the
// expected version: not-found is checked before the version.
func testDeleteMissingBeforeVersion(t *testing.T, nb factory) {
	s := withDelete(t, nb)
	mustAppend(t, s, "gone", newEvents("Old", 3))
	if err := s.Delete(t.Context(), "gone"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for _, stream := range []string{"never", "gone"} {
		for _, ev := range []eventstore.ExpectedVersion{eventstore.StreamExists, eventstore.Exact(3), eventstore.Exact(1), eventstore.NoStream, eventstore.Any} {
			err := s.Delete(t.Context(), stream, eventstore.Expect(ev))
			if !errors.Is(err, eventstore.ErrStreamNotFound) || errors.Is(err, eventstore.ErrConflict) {
				t.Errorf("Delete(%q, expected %s) = %v, want ErrStreamNotFound (not-found comes before the expected version)", stream, ev, err)
			}
		}
	}
}

// testTombstoneNeverWrittenExpected: a tombstone of a name never written is
// guarded by the expected version like any other: Exact(3) and StreamExists
// conflict (actual version 0), NoStream reserves the name.
func testTombstoneNeverWrittenExpected(t *testing.T, nb factory) {
	s := withDelete(t, nb)
	err := s.Tombstone(t.Context(), "never", eventstore.Expect(eventstore.Exact(3)))
	wantConflict(t, err, "never", eventstore.Exact(3), 0)
	err = s.Tombstone(t.Context(), "never", eventstore.Expect(eventstore.StreamExists))
	wantConflict(t, err, "never", eventstore.StreamExists, 0)
	if _, err := readStream(t.Context(), s, "never"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("after tombstones that conflicted, ReadStream = %v, want ErrStreamNotFound", err)
	}
	if err := s.Tombstone(t.Context(), "never", eventstore.Expect(eventstore.NoStream)); err != nil {
		t.Fatalf("Tombstone(never written, NoStream): %v", err)
	}
	if _, err := s.Append(t.Context(), "never", newEvents("New", 1)); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Errorf("Append after Tombstone: error = %v, want ErrStreamDeleted", err)
	}
}

// testDeleteDeleted: deleting a tombstoned stream, either way, is
// ErrStreamDeleted whatever the expected version.
func testDeleteDeleted(t *testing.T, nb factory) {
	s := withDelete(t, nb)
	mustAppend(t, s, "t", newEvents("Old", 2))
	if err := s.Tombstone(t.Context(), "t"); err != nil {
		t.Fatalf("Tombstone: %v", err)
	}
	for _, ev := range []eventstore.ExpectedVersion{eventstore.Any, eventstore.Exact(2), eventstore.NoStream} {
		if err := s.Delete(t.Context(), "t", eventstore.Expect(ev)); !errors.Is(err, eventstore.ErrStreamDeleted) {
			t.Errorf("Delete(tombstoned, expected %s) = %v, want ErrStreamDeleted", ev, err)
		}
		if err := s.Tombstone(t.Context(), "t", eventstore.Expect(ev)); !errors.Is(err, eventstore.ErrStreamDeleted) {
			t.Errorf("Tombstone(tombstoned, expected %s) = %v, want ErrStreamDeleted", ev, err)
		}
	}
}

var invalidTests = []test{
	{"Append", testInvalidAppend},
	{"Read", testInvalidRead},
	{"Delete", testInvalidDelete},
	{"ForeignUnitOfWork", testForeignUnitOfWork},
}

// testInvalidAppend: bad input is rejected with ErrInvalid and stores nothing.
func testInvalidAppend(t *testing.T, nb factory) {
	s := store(t, nb)
	ok := func() recado.Event { return newEvent("Fine", 0) }
	with := func(f func(*recado.Event)) []recado.Event {
		e := ok()
		f(&e)
		return []recado.Event{ok(), e}
	}
	at := func(tm time.Time) []recado.Event { return with(func(e *recado.Event) { e.Time = tm }) }
	cases := []struct {
		name   string
		stream string
		events []recado.Event
		opts   []eventstore.AppendOption
	}{
		{"EmptyStream", "", []recado.Event{ok()}, nil},
		{"StreamNotUTF8", "bad-\xff", []recado.Event{ok()}, nil},
		{"StreamWithNUL", "bad\x00", []recado.Event{ok()}, nil},
		{"NoEvents", "s", nil, nil},
		{"EmptyEvents", "s", []recado.Event{}, nil},
		{"EmptyID", "s", with(func(e *recado.Event) { e.ID = "" }), nil},
		{"IDNotUTF8", "s", with(func(e *recado.Event) { e.ID = "\xfe" }), nil},
		{"IDWithNUL", "s", with(func(e *recado.Event) { e.ID = "id\x00" }), nil},
		{"EmptyType", "s", with(func(e *recado.Event) { e.Type = "" }), nil},
		{"TypeWithNUL", "s", with(func(e *recado.Event) { e.Type = "\x00T" }), nil},
		{"ReservedMetadataField", "s", with(func(e *recado.Event) { e.Metadata.Fields = map[string]string{"correlation_id": "x"} }), nil},
		{"EmptyMetadataFieldName", "s", with(func(e *recado.Event) { e.Metadata.Fields = map[string]string{"": "x"} }), nil},
		{"MetadataNotUTF8", "s", with(func(e *recado.Event) { e.Metadata.CorrelationID = "\xff" }), nil},
		{"MetadataWithNUL", "s", with(func(e *recado.Event) { e.Metadata.TraceParent = "00\x00" }), nil},
		{"MetadataFieldWithNUL", "s", with(func(e *recado.Event) { e.Metadata.Fields = map[string]string{"k": "v\x00"} }), nil},
		{"MetadataFieldNameWithNUL", "s", with(func(e *recado.Event) { e.Metadata.Fields = map[string]string{"k\x00": "v"} }), nil},
		{"ExactBeyondMaxVersion", "s", []recado.Event{ok()}, []eventstore.AppendOption{eventstore.ExpectVersion(eventstore.MaxVersion + 1)}},
		{"ExactMaxUint64", "s", []recado.Event{ok()}, []eventstore.AppendOption{eventstore.Expect(eventstore.Exact(math.MaxUint64))}},
		{"Year0", "s", at(time.Date(0, 12, 31, 23, 59, 59, 999999999, time.UTC)), nil},
		{"Year10000", "s", at(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)), nil},
		{"Year10000InUTC", "s", at(time.Date(9999, 12, 31, 23, 30, 0, 0, time.FixedZone("UTC-1", -3600))), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Append(t.Context(), tc.stream, tc.events, tc.opts...)
			if !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("Append: error = %v, want ErrInvalid", err)
			}
			wantLogLen(t, s, 0, "after invalid input")
		})
	}
}

// testInvalidRead: bad read arguments yield ErrInvalid.
func testInvalidRead(t *testing.T, nb factory) {
	s := store(t, nb)
	mustAppend(t, s, "s", newEvents("Fine", 2))
	if _, err := readStream(t.Context(), s, "s", eventstore.Limit(-1)); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("ReadStream with a negative limit: error = %v, want ErrInvalid", err)
	}
	if _, err := readAll(t.Context(), s, recado.Position{}, eventstore.Limit(-1)); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("ReadAll with a negative limit: error = %v, want ErrInvalid", err)
	}
	if _, err := readAll(t.Context(), s, recado.Position{}, eventstore.FromVersion(2)); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("ReadAll with FromVersion, which does not apply to the log: error = %v, want ErrInvalid", err)
	}
	if _, err := readStream(t.Context(), s, ""); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("ReadStream of an empty stream name: error = %v, want ErrInvalid", err)
	}
	if _, err := readStream(t.Context(), s, "s\x00"); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("ReadStream of a name with NUL: error = %v, want ErrInvalid", err)
	}
}

// testInvalidDelete: deletes and State with bad arguments are ErrInvalid and
// change nothing; State takes no expected version.
func testInvalidDelete(t *testing.T, nb factory) {
	s := store(t, nb)
	mustAppend(t, s, "s", newEvents("Fine", 2))
	beyond := eventstore.ExpectVersion(eventstore.MaxVersion + 1)
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"Delete empty name", func() error { return s.Delete(t.Context(), "") }},
		{"Delete Exact(MaxVersion+1)", func() error { return s.Delete(t.Context(), "s", beyond) }},
		{"Tombstone name with NUL", func() error { return s.Tombstone(t.Context(), "s\x00") }},
		{"Tombstone Exact(MaxUint64)", func() error {
			return s.Tombstone(t.Context(), "s", eventstore.Expect(eventstore.Exact(math.MaxUint64)))
		}},
		{"State with an expected version", func() error { _, err := s.State(t.Context(), "s", eventstore.ExpectVersion(2)); return err }},
		{"State name not UTF-8", func() error { _, err := s.State(t.Context(), "\xff"); return err }},
	} {
		if err := op.call(); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("%s: error = %v, want ErrInvalid", op.name, err)
		}
	}
	if got := mustReadStream(t, s, "s"); len(got) != 2 {
		t.Errorf("after invalid deletes, stream has %d events, want 2", len(got))
	}
}

// notATx is a unit of work no backend knows.
type notATx struct{}

func (notATx) OnCommit(func()) {}

// testForeignUnitOfWork: a unit of work that is not the backend's own is
// invalid, and nothing is stored or deleted.
func testForeignUnitOfWork(t *testing.T, nb factory) {
	b := nb(t)
	s := b.Store
	mustAppend(t, s, "kept", newEvents("Fine", 1))
	for _, tx := range []recado.Tx{notATx{}, &notATx{}} {
		if _, err := s.Append(t.Context(), "s", newEvents("Fine", 1), eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Append in a foreign unit of work %T: error = %v, want ErrInvalid", tx, err)
		}
		if _, err := s.State(t.Context(), "kept", eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("State in a foreign unit of work %T: error = %v, want ErrInvalid", tx, err)
		}
		if err := s.Delete(t.Context(), "kept", eventstore.InTx(tx)); b.Features.Delete && !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Delete in a foreign unit of work %T: error = %v, want ErrInvalid", tx, err)
		}
	}
	wantNothingStored(t, s, "s", 1, "after calls in a foreign unit of work")
	if got := mustReadStream(t, s, "kept"); len(got) != 1 {
		t.Errorf("after a Delete in a foreign unit of work, stream has %d events, want 1", len(got))
	}
}
