// Package eventstoretest is the conformance suite every [eventstore.Store]
// backend runs from its own tests, and the shared benchmarks that make backends'
// figures comparable.
//
// A backend gives [Run] a [Factory] that returns a fresh, empty store, and the
// suite proves the contract of package eventstore against it: append and read,
// expected versions, exact optimistic concurrency under contention, idempotent
// retries, a global log that never lets a checkpointing reader skip or repeat an
// event while many writers commit, subscriptions (catch-up, live, filters,
// progress), cancellation and abandoned commits, Close, stream deletion and bad
// input. Optional capabilities the store does not implement ([eventstore.Deleter],
// [io.Closer]) are skipped with a message.
//
//	func TestConformance(t *testing.T) { eventstoretest.Run(t, newStore) }
//	func BenchmarkStore(b *testing.B)  { eventstoretest.Bench(b, newStore) }
//
// Run checks for leaked goroutines with goleak around its subscription tests, so
// call it from a test that does not run in parallel with others (no t.Parallel).
// With -short the heavy loops shrink.
package eventstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// Factory returns a fresh, empty store for one test or benchmark. It registers
// its own cleanup (tb.Cleanup) to close the store and release what it holds.
type Factory func(tb testing.TB) eventstore.Store

// Run runs the conformance suite against the stores newStore makes, as
// subtests of t. Each subtest gets its own store.
func Run(t *testing.T, newStore Factory) {
	groups := []struct {
		name  string
		tests []test
	}{
		{"Append", appendTests},
		{"ReadStream", readStreamTests},
		{"ReadAll", readAllTests},
		{"ExpectedVersion", expectedVersionTests},
		{"Idempotency", idempotencyTests},
		{"Concurrency", concurrencyTests},
		{"Subscribe", subscribeTests},
		{"Cancel", cancelTests},
		{"Close", closeTests},
		{"Delete", deleteTests},
		{"Invalid", invalidTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, newStore) })
			}
		})
	}
}

// test is one check of the suite.
type test struct {
	name string
	run  func(t *testing.T, newStore Factory)
}

// scale returns n, or small with -short.
func scale(n, small int) int {
	if testing.Short() {
		return small
	}
	return n
}

// newEvent returns an event ready to append, with small JSON data.
func newEvent(typ string, i int) recado.Event {
	return recado.NewEvent(typ, fmt.Appendf(nil, `{"i":%d,"note":"conformance"}`, i))
}

// newEvents returns n events of type typ.
func newEvents(typ string, n int) []recado.Event {
	events := make([]recado.Event, n)
	for i := range events {
		events[i] = newEvent(typ, i)
	}
	return events
}

// mustAppend appends and fails the test on error.
func mustAppend(tb testing.TB, s eventstore.Store, stream string, events []recado.Event, opts ...eventstore.AppendOption) eventstore.AppendResult {
	tb.Helper()
	res, err := s.Append(tb.Context(), stream, events, opts...)
	if err != nil {
		tb.Fatalf("Append(%q, %d events): %v", stream, len(events), err)
	}
	if !res.Duplicate {
		checkResult(tb, stream, len(events), res)
	}
	return res
}

// checkResult checks that an append's result is self-consistent.
func checkResult(tb testing.TB, stream string, n int, res eventstore.AppendResult) {
	tb.Helper()
	if got, want := res.LastVersion-res.FirstVersion+1, uint64(n); res.FirstVersion == 0 || got != want {
		tb.Errorf("Append(%q, %d events) = versions %d..%d, want %d consecutive versions from 1 up", stream, n, res.FirstVersion, res.LastVersion, want)
	}
	if res.FirstPosition.IsZero() || res.LastPosition.Before(res.FirstPosition) || (n > 1 && res.LastPosition == res.FirstPosition) {
		tb.Errorf("Append(%q, %d events) = positions %s..%s, want non-zero and increasing", stream, n, res.FirstPosition, res.LastPosition)
	}
}

// readStream reads a whole stream read; err is the error the sequence yielded.
func readStream(ctx context.Context, s eventstore.Store, stream string, opts ...eventstore.ReadOption) ([]recado.Event, error) {
	var events []recado.Event
	for e, err := range s.ReadStream(ctx, stream, opts...) {
		if err != nil {
			return events, err
		}
		events = append(events, e)
	}
	return events, nil
}

// mustReadStream reads a stream and fails the test on error.
func mustReadStream(tb testing.TB, s eventstore.Store, stream string, opts ...eventstore.ReadOption) []recado.Event {
	tb.Helper()
	events, err := readStream(tb.Context(), s, stream, opts...)
	if err != nil {
		tb.Fatalf("ReadStream(%q): %v", stream, err)
	}
	return events
}

// readAll reads the global log; err is the error the sequence yielded.
func readAll(ctx context.Context, s eventstore.Store, after recado.Position, opts ...eventstore.ReadOption) ([]recado.Event, error) {
	var events []recado.Event
	for e, err := range s.ReadAll(ctx, after, opts...) {
		if err != nil {
			return events, err
		}
		events = append(events, e)
	}
	return events, nil
}

// mustReadAll reads the global log and fails the test on error.
func mustReadAll(tb testing.TB, s eventstore.Store, after recado.Position, opts ...eventstore.ReadOption) []recado.Event {
	tb.Helper()
	events, err := readAll(tb.Context(), s, after, opts...)
	if err != nil {
		tb.Fatalf("ReadAll(%s): %v", after, err)
	}
	return events
}

// logLen is the number of events in the global log.
func logLen(tb testing.TB, s eventstore.Store) int {
	tb.Helper()
	return len(mustReadAll(tb, s, recado.Position{}))
}

// wantLogLen fails the test unless the global log holds n events.
func wantLogLen(tb testing.TB, s eventstore.Store, n int, why string) {
	tb.Helper()
	if got := logLen(tb, s); got != n {
		tb.Errorf("%s: global log has %d events, want %d", why, got, n)
	}
}

// wantNotStored fails the test if a stream has events or the log has more than n.
func wantNothingStored(tb testing.TB, s eventstore.Store, stream string, logWant int, why string) {
	tb.Helper()
	if _, err := readStream(tb.Context(), s, stream); !errors.Is(err, eventstore.ErrStreamNotFound) {
		tb.Errorf("%s: ReadStream(%q) error = %v, want ErrStreamNotFound (nothing stored)", why, stream, err)
	}
	wantLogLen(tb, s, logWant, why)
}

// ids returns the IDs of events.
func ids(events []recado.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

// versions returns the versions of events.
func versions(events []recado.Event) []uint64 {
	out := make([]uint64, len(events))
	for i, e := range events {
		out[i] = e.Version
	}
	return out
}

// sameEvent reports how got differs from want, an event as appended (no
// Stream, Version or Position unless the caller set them): "" if it does not.
// A Time set in want must come back within a microsecond; otherwise got must
// have a time.
func sameEvent(got, want recado.Event) string {
	var diffs []string
	if got.ID != want.ID {
		diffs = append(diffs, fmt.Sprintf("ID %q, want %q", got.ID, want.ID))
	}
	if want.Stream != "" && got.Stream != want.Stream {
		diffs = append(diffs, fmt.Sprintf("Stream %q, want %q", got.Stream, want.Stream))
	}
	if want.Version != 0 && got.Version != want.Version {
		diffs = append(diffs, fmt.Sprintf("Version %d, want %d", got.Version, want.Version))
	}
	if !want.Position.IsZero() && got.Position != want.Position {
		diffs = append(diffs, fmt.Sprintf("Position %s, want %s", got.Position, want.Position))
	}
	if got.Type != want.Type {
		diffs = append(diffs, fmt.Sprintf("Type %q, want %q", got.Type, want.Type))
	}
	if !bytes.Equal(got.Data, want.Data) {
		diffs = append(diffs, fmt.Sprintf("Data %s, want %s", abbrev(got.Data), abbrev(want.Data)))
	}
	if !sameMetadata(got.Metadata, want.Metadata) {
		diffs = append(diffs, fmt.Sprintf("Metadata %+v, want %+v", got.Metadata, want.Metadata))
	}
	switch {
	case got.Time.IsZero():
		diffs = append(diffs, "Time is zero, want the time it was recorded")
	case !want.Time.IsZero():
		if d := got.Time.Sub(want.Time); d <= -time.Microsecond || d >= time.Microsecond {
			diffs = append(diffs, fmt.Sprintf("Time %s, want the caller's %s (to the microsecond)",
				got.Time.Format(time.RFC3339Nano), want.Time.Format(time.RFC3339Nano)))
		}
	}
	return strings.Join(diffs, "; ")
}

func sameMetadata(a, b recado.Metadata) bool {
	if len(a.Fields) == 0 && len(b.Fields) == 0 {
		a.Fields, b.Fields = nil, nil
	}
	return a.CorrelationID == b.CorrelationID && a.CausationID == b.CausationID &&
		a.IdempotencyKey == b.IdempotencyKey && a.TraceParent == b.TraceParent &&
		a.TraceState == b.TraceState && maps.Equal(a.Fields, b.Fields)
}

// abbrev shows data, shortened if long.
func abbrev(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("%q... (%d bytes)", b[:64], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// wantConflict checks that err is a conflict naming stream, expected and actual.
func wantConflict(tb testing.TB, err error, stream string, expected eventstore.ExpectedVersion, actual uint64) {
	tb.Helper()
	if !errors.Is(err, eventstore.ErrConflict) {
		tb.Errorf("stream %q, expected version %s: error = %v, want a conflict (errors.Is ErrConflict)", stream, expected, err)
		return
	}
	var ce *eventstore.ConflictError
	if !errors.As(err, &ce) {
		tb.Errorf("stream %q: conflict %v is not a *eventstore.ConflictError", stream, err)
		return
	}
	if ce.Stream != stream || ce.Expected != expected || ce.Actual != actual {
		tb.Errorf("conflict = {Stream %q, Expected %s, Actual %d}, want {Stream %q, Expected %s, Actual %d}",
			ce.Stream, ce.Expected, ce.Actual, stream, expected, actual)
	}
}

// isCtxErr reports whether err wraps a context's error.
func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
