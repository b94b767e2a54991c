package eventstoretest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
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
func testAlreadyCancelled(t *testing.T, newStore Factory) {
	s := newStore(t)
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
	if d, ok := s.(eventstore.Deleter); ok {
		if err := d.Delete(ctx, "s"); !errors.Is(err, context.Canceled) {
			t.Errorf("Delete with a cancelled context: error = %v, want context.Canceled", err)
		}
		if err := d.Tombstone(ctx, "s"); !errors.Is(err, context.Canceled) {
			t.Errorf("Tombstone with a cancelled context: error = %v, want context.Canceled", err)
		}
		if got := mustReadStream(t, s, "s"); len(got) != 2 {
			t.Errorf("after deletes with a cancelled context, stream has %d events, want 2", len(got))
		}
	}
}

// testAbandonedMidCommit: appends whose contexts end at random moments report
// success, the context's error, or ErrUnknownOutcome; retrying every one that
// did not report success, with the same events, leaves each event in the log
// exactly once.
func testAbandonedMidCommit(t *testing.T, newStore Factory) {
	s := newStore(t)
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
func testCloseWhileBusy(t *testing.T, newStore Factory) {
	s := newStore(t)
	c, ok := s.(io.Closer)
	if !ok {
		t.Skipf("%T does not implement io.Closer", s)
	}
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
			for m, err := range eventstore.Subscribe(t.Context(), s, recado.Position{}) {
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
	if err := c.Close(); err != nil {
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
	if err := c.Close(); err != nil && !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("second Close: %v, want nil (or ErrClosed)", err)
	}
	if _, err := s.Append(ctx, "busy-0", newEvents("After", 1)); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Append after Close: error = %v, want ErrClosed", err)
	}
	if _, err := readStream(ctx, s, "busy-0"); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("ReadStream after Close: error = %v, want ErrClosed", err)
	}
	if _, err := readAll(ctx, s, recado.Position{}); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("ReadAll after Close: error = %v, want ErrClosed", err)
	}
	for _, err := range eventstore.Subscribe(ctx, s, recado.Position{}) {
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("Subscribe after Close: first item error = %v, want ErrClosed", err)
		}
		break
	}
	if d, ok := s.(eventstore.Deleter); ok {
		if err := d.Delete(ctx, "busy-0"); !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("Delete after Close: error = %v, want ErrClosed", err)
		}
		if err := d.Tombstone(ctx, "busy-0"); !errors.Is(err, eventstore.ErrClosed) {
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
}

func deleter(t *testing.T, s eventstore.Store) eventstore.Deleter {
	d, ok := s.(eventstore.Deleter)
	if !ok {
		t.Skipf("%T does not implement eventstore.Deleter", s)
	}
	return d
}

// testSoftDelete: reads say not found, the log keeps the events, and a later
// append continues from the next version and is all a read shows.
func testSoftDelete(t *testing.T, newStore Factory) {
	s := newStore(t)
	d := deleter(t, s)
	mustAppend(t, s, "d", newEvents("Old", 3))
	mustAppend(t, s, "keep", newEvents("Other", 1))
	if err := d.Delete(t.Context(), "d"); err != nil {
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
func testSoftDeleteExpectedVersion(t *testing.T, newStore Factory) {
	s := newStore(t)
	d := deleter(t, s)
	mustAppend(t, s, "d", newEvents("Old", 2))
	err := d.Delete(t.Context(), "d", eventstore.ExpectVersion(1))
	wantConflict(t, err, "d", eventstore.Exact(1), 2)
	err = d.Delete(t.Context(), "d", eventstore.Expect(eventstore.NoStream))
	wantConflict(t, err, "d", eventstore.NoStream, 2)
	if got := mustReadStream(t, s, "d"); len(got) != 2 {
		t.Fatalf("after a Delete that conflicted, stream has %d events, want 2", len(got))
	}
	if err := d.Delete(t.Context(), "d", eventstore.ExpectVersion(2)); err != nil {
		t.Fatalf("Delete with the right expected version: %v", err)
	}
	res, err := s.Append(t.Context(), "d", newEvents("New", 1), eventstore.ExpectVersion(2))
	if err != nil || res.FirstVersion != 3 {
		t.Errorf("append expecting the deleted stream's last version = %+v, %v; want version 3", res, err)
	}
}

// testSoftDeleteMissing: deleting a stream that does not exist is not found.
func testSoftDeleteMissing(t *testing.T, newStore Factory) {
	s := newStore(t)
	d := deleter(t, s)
	if err := d.Delete(t.Context(), "never"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("Delete of a stream never written: error = %v, want ErrStreamNotFound", err)
	}
	mustAppend(t, s, "twice", newEvents("Old", 1))
	if err := d.Delete(t.Context(), "twice"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := d.Delete(t.Context(), "twice"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("second Delete: error = %v, want ErrStreamNotFound", err)
	}
}

// testTombstone: a tombstoned stream can be neither read nor written, and its
// events stay in the log.
func testTombstone(t *testing.T, newStore Factory) {
	s := newStore(t)
	d := deleter(t, s)
	mustAppend(t, s, "t", newEvents("Old", 2))
	err := d.Tombstone(t.Context(), "t", eventstore.ExpectVersion(1))
	wantConflict(t, err, "t", eventstore.Exact(1), 2)
	if err := d.Tombstone(t.Context(), "t"); err != nil {
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
func testTombstoneNeverWritten(t *testing.T, newStore Factory) {
	s := newStore(t)
	d := deleter(t, s)
	if err := d.Tombstone(t.Context(), "reserved"); err != nil {
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

var invalidTests = []test{
	{"Append", testInvalidAppend},
	{"Read", testInvalidRead},
	{"ForeignUnitOfWork", testForeignUnitOfWork},
}

// testInvalidAppend: bad input is rejected with ErrInvalid and stores nothing.
func testInvalidAppend(t *testing.T, newStore Factory) {
	s := newStore(t)
	ok := func() recado.Event { return newEvent("Fine", 0) }
	with := func(f func(*recado.Event)) []recado.Event {
		e := ok()
		f(&e)
		return []recado.Event{ok(), e}
	}
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
		{"EmptyType", "s", with(func(e *recado.Event) { e.Type = "" }), nil},
		{"ReservedMetadataField", "s", with(func(e *recado.Event) { e.Metadata.Fields = map[string]string{"correlation_id": "x"} }), nil},
		{"EmptyMetadataFieldName", "s", with(func(e *recado.Event) { e.Metadata.Fields = map[string]string{"": "x"} }), nil},
		{"MetadataNotUTF8", "s", with(func(e *recado.Event) { e.Metadata.CorrelationID = "\xff" }), nil},
		{"BadExpectedVersion", "s", []recado.Event{ok()}, []eventstore.AppendOption{eventstore.Expect(eventstore.ExpectedVersion(-7))}},
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
func testInvalidRead(t *testing.T, newStore Factory) {
	s := newStore(t)
	mustAppend(t, s, "s", newEvents("Fine", 2))
	if _, err := readStream(t.Context(), s, "s", eventstore.Limit(-1)); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("ReadStream with a negative limit: error = %v, want ErrInvalid", err)
	}
	if _, err := readAll(t.Context(), s, recado.Position{}, eventstore.Limit(-1)); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("ReadAll with a negative limit: error = %v, want ErrInvalid", err)
	}
	if _, err := readStream(t.Context(), s, ""); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("ReadStream of an empty stream name: error = %v, want ErrInvalid", err)
	}
}

// notATx is a unit of work no backend knows.
type notATx struct{}

// testForeignUnitOfWork: a unit of work that is not the backend's own is
// invalid, and nothing is stored.
func testForeignUnitOfWork(t *testing.T, newStore Factory) {
	s := newStore(t)
	for _, tx := range []any{notATx{}, &notATx{}, "tx"} {
		if _, err := s.Append(t.Context(), "s", newEvents("Fine", 1), eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Append in a foreign unit of work %T: error = %v, want ErrInvalid", tx, err)
		}
	}
	wantNothingStored(t, s, "s", 0, "after appends in a foreign unit of work")
}
