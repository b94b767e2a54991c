// Package eventstoretest is the conformance suite every event-store backend
// runs from its own tests, and the shared benchmarks that make backends'
// figures comparable.
//
// A backend gives [Run] a function that returns a fresh, empty [Backend]: its
// [*eventstore.Store], how to close its DB, how to run a unit of work, and
// which optional features it has. The suite proves the contract of package
// eventstore against the front and the backend's driver together: append and
// read; expected versions; exact optimistic concurrency under contention;
// idempotent retries and reused event IDs (both decided before the expected
// version: a reused ID is a DuplicateIDError, never a conflict); a global log
// that never lets a checkpointing reader skip or repeat an event while many
// writers commit; subscriptions (catch-up, live, filters, progress);
// cancellation and abandoned commits; the limits (names of
// [eventstore.MaxStreamLen], [eventstore.MaxIDLen] and [eventstore.MaxTypeLen]
// bytes of incompressible multibyte UTF-8, times from year 1 to 9999 to the
// microsecond, in UTC); metadata fields with empty values; that nothing the
// caller does to its events after Append returns, and nothing a reader does to
// events it read, changes what is stored; the same *eventstore.Error messages
// on every backend; [eventstore.Store.State]; and, with the features, Close,
// soft delete and tombstone, and units of work (commit, rollback on error and
// panic, conflicts inside a unit, units of another DB or that have ended,
// OnCommit).
//
//	func TestConformance(t *testing.T) { eventstoretest.Run(t, newBackend) }
//	func BenchmarkStore(b *testing.B)  { eventstoretest.Bench(b, newBackend) }
//
//	func newBackend(tb testing.TB) eventstoretest.Backend {
//		db := memory.New()
//		tb.Cleanup(func() { _ = db.Close() })
//		return eventstoretest.Backend{
//			Store:    db.Events(),
//			Close:    db.Close,
//			Tx:       eventstoretest.UnitOfWork(db),
//			Features: eventstoretest.Features{Delete: true, UnitOfWork: true, Close: true, LeakCheck: true},
//		}
//	}
//
// Positions. A position read from the log (an event's Position, a
// subscription message's Position) is a safe place to resume: reading after it
// misses nothing. An [eventstore.AppendResult]'s positions say where the
// appended events are; a reader waiting for them waits until its position has
// reached LastPosition (Compare >= 0), not passed it. Resuming after an
// AppendResult's LastPosition is safe only on backends that commit in position
// order (PostgreSQL does not: an append can commit after a later-positioned
// one), so the suite does not treat it as a resume point.
//
// With [Features.LeakCheck], each subscription test checks with goleak that no
// goroutine started during the test outlives it and its backend; call Run
// from a test that does not run in parallel with others (no t.Parallel). With
// -short the heavy loops shrink.
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

	"go.uber.org/goleak"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// Backend is one fresh, empty backend for one test or benchmark. The function
// that makes it registers its own cleanup (tb.Cleanup) to close the DB and
// release what it holds.
type Backend struct {
	// Store is the backend's event store.
	Store *eventstore.Store
	// Close closes the backend's DB. It is needed with Features.Close.
	Close func() error
	// Tx runs fn in a unit of work of the backend's DB ([UnitOfWork] makes it
	// from the DB). It is needed with Features.UnitOfWork.
	Tx func(ctx context.Context, fn func(tx recado.Tx) error) error
	// Features says which optional tests apply.
	Features Features
}

// Features are what a backend offers beyond the core of the contract.
type Features struct {
	// Delete: Store.Delete and Store.Tombstone work.
	Delete bool
	// UnitOfWork: Backend.Tx runs units of work that the store joins with
	// eventstore.InTx.
	UnitOfWork bool
	// Close: Backend.Close ends calls in flight and makes later calls fail
	// with eventstore.ErrClosed.
	Close bool
	// LeakCheck: run goleak around the subscription tests: no goroutine
	// started by a subscription (or by the backend during the test) may
	// outlive the test and the backend's cleanup.
	LeakCheck bool
}

// UnitOfWork turns a DB's typed unit of work (memory.DB, sqlite.DB,
// postgres.DB) into Backend.Tx.
func UnitOfWork[T recado.Tx](u recado.UnitOfWork[T]) func(ctx context.Context, fn func(recado.Tx) error) error {
	return func(ctx context.Context, fn func(recado.Tx) error) error {
		return u.Tx(ctx, func(tx T) error { return fn(tx) })
	}
}

// factory is Run's and Bench's argument.
type factory = func(tb testing.TB) Backend

// Run runs the conformance suite against the backends newBackend makes, as
// subtests of t. Each subtest gets its own backend; a few get two.
func Run(t *testing.T, newBackend func(tb testing.TB) Backend) {
	groups := []struct {
		name  string
		tests []test
	}{
		{"Append", appendTests},
		{"Limits", limitTests},
		{"ReadStream", readStreamTests},
		{"ReadAll", readAllTests},
		{"ExpectedVersion", expectedVersionTests},
		{"Idempotency", idempotencyTests},
		{"Concurrency", concurrencyTests},
		{"Subscribe", subscribeTests},
		{"Cancel", cancelTests},
		{"Ownership", ownershipTests},
		{"Errors", errorTests},
		{"State", stateTests},
		{"Close", closeTests},
		{"Delete", deleteTests},
		{"UnitOfWork", unitOfWorkTests},
		{"Invalid", invalidTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, newBackend) })
			}
		})
	}
}

// test is one check of the suite.
type test struct {
	name string
	run  func(t *testing.T, nb factory)
}

// store returns a fresh backend's store.
func store(t *testing.T, nb factory) *eventstore.Store { return nb(t).Store }

// withFeature returns a fresh backend, or skips the test if the backend lacks
// the feature f selects.
func withFeature(t *testing.T, nb factory, name string, f func(Features) bool) Backend {
	t.Helper()
	b := nb(t)
	if !f(b.Features) {
		t.Skipf("the backend does not have Features.%s", name)
	}
	return b
}

func withDelete(t *testing.T, nb factory) *eventstore.Store {
	t.Helper()
	return withFeature(t, nb, "Delete", func(f Features) bool { return f.Delete }).Store
}

func withUnitOfWork(t *testing.T, nb factory) Backend {
	t.Helper()
	return withFeature(t, nb, "UnitOfWork", func(f Features) bool { return f.UnitOfWork })
}

// leakChecked returns a fresh backend; with Features.LeakCheck, the test
// fails if a goroutine started from now on outlives the test and the
// backend's cleanup.
func leakChecked(t *testing.T, nb factory) Backend {
	before := goleak.IgnoreCurrent()
	check := false
	t.Cleanup(func() { // registered first, so it runs after the backend's cleanup
		if !check {
			return
		}
		if err := goleak.Find(before); err != nil {
			t.Errorf("goroutines left after the test and its backend ended: %v", err)
		}
	})
	b := nb(t)
	check = b.Features.LeakCheck
	return b
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
func mustAppend(tb testing.TB, s *eventstore.Store, stream string, events []recado.Event, opts ...eventstore.AppendOption) eventstore.AppendResult {
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

// readStream reads a whole stream; err is the error the sequence yielded.
func readStream(ctx context.Context, s *eventstore.Store, stream string, opts ...eventstore.ReadOption) ([]recado.Event, error) {
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
func mustReadStream(tb testing.TB, s *eventstore.Store, stream string, opts ...eventstore.ReadOption) []recado.Event {
	tb.Helper()
	events, err := readStream(tb.Context(), s, stream, opts...)
	if err != nil {
		tb.Fatalf("ReadStream(%q): %v", stream, err)
	}
	return events
}

// readAll reads the global log; err is the error the sequence yielded.
func readAll(ctx context.Context, s *eventstore.Store, after recado.Position, opts ...eventstore.ReadOption) ([]recado.Event, error) {
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
func mustReadAll(tb testing.TB, s *eventstore.Store, after recado.Position, opts ...eventstore.ReadOption) []recado.Event {
	tb.Helper()
	events, err := readAll(tb.Context(), s, after, opts...)
	if err != nil {
		tb.Fatalf("ReadAll(%s): %v", after, err)
	}
	return events
}

// logLen is the number of events in the global log.
func logLen(tb testing.TB, s *eventstore.Store) int {
	tb.Helper()
	return len(mustReadAll(tb, s, recado.Position{}))
}

// wantLogLen fails the test unless the global log holds n events.
func wantLogLen(tb testing.TB, s *eventstore.Store, n int, why string) {
	tb.Helper()
	if got := logLen(tb, s); got != n {
		tb.Errorf("%s: global log has %d events, want %d", why, got, n)
	}
}

// wantNothingStored fails the test if a stream has events or the log has
// other than logWant.
func wantNothingStored(tb testing.TB, s *eventstore.Store, stream string, logWant int, why string) {
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

// cloneEvents returns a deep copy of events: what the caller passed, to
// compare with what is stored after the caller changed its own.
func cloneEvents(events []recado.Event) []recado.Event {
	out := make([]recado.Event, len(events))
	for i, e := range events {
		out[i] = e
		out[i].Data = bytes.Clone(e.Data)
		out[i].Metadata.Fields = maps.Clone(e.Metadata.Fields)
	}
	return out
}

// sameEvent reports how got differs from want, an event as appended (no
// Stream, Version or Position unless the caller set them): "" if it does not.
// Every time read back must be in UTC, to the microsecond; a Time set in want
// must come back as it was given, truncated to the microsecond.
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
	case got.Time.Location() != time.UTC:
		diffs = append(diffs, fmt.Sprintf("Time %s is in %s, want UTC", got.Time.Format(time.RFC3339Nano), got.Time.Location()))
	case got.Time.Nanosecond()%int(eventstore.TimePrecision) != 0:
		diffs = append(diffs, fmt.Sprintf("Time %s is not truncated to the microsecond", got.Time.Format(time.RFC3339Nano)))
	case !want.Time.IsZero() && !got.Time.Equal(want.Time.Truncate(eventstore.TimePrecision)):
		diffs = append(diffs, fmt.Sprintf("Time %s, want the caller's %s truncated to the microsecond",
			got.Time.Format(time.RFC3339Nano), want.Time.Format(time.RFC3339Nano)))
	}
	return strings.Join(diffs, "; ")
}

// sameMetadata reports whether a and b are equal, a field with an empty value
// being unlike a missing one.
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
