package eventstoretest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

var expectedVersionTests = []test{
	{"Table", testExpectedVersions},
}

// testExpectedVersions: each expected version, passing and failing, against a
// stream with two events and one that does not exist. A failed append stores
// nothing.
func testExpectedVersions(t *testing.T, nb factory) {
	cases := []struct {
		name     string
		exists   bool
		expected eventstore.ExpectedVersion
		ok       bool
	}{
		{"AnyOnMissing", false, eventstore.Any, true},
		{"AnyOnExisting", true, eventstore.Any, true},
		{"NoStreamOnMissing", false, eventstore.NoStream, true},
		{"NoStreamOnExisting", true, eventstore.NoStream, false},
		{"StreamExistsOnExisting", true, eventstore.StreamExists, true},
		{"StreamExistsOnMissing", false, eventstore.StreamExists, false},
		{"ExactOnExisting", true, eventstore.Exact(2), true},
		{"ExactTooLow", true, eventstore.Exact(1), false},
		{"ExactTooHigh", true, eventstore.Exact(3), false},
		{"ExactZeroOnMissing", false, eventstore.Exact(0), true},
		{"ExactOnMissing", false, eventstore.Exact(1), false},
	}
	s := store(t, nb)
	logged := 0
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream := fmt.Sprintf("ev-%d", i)
			var actual uint64
			if tc.exists {
				mustAppend(t, s, stream, newEvents("Setup", 2))
				actual = 2
				logged += 2
			}
			res, err := s.Append(t.Context(), stream, newEvents("Tried", 1), eventstore.Expect(tc.expected))
			if tc.ok {
				if err != nil {
					t.Fatalf("Append(%q at version %d, expected %s): %v, want success", stream, actual, tc.expected, err)
				}
				logged++
				if res.FirstVersion != actual+1 {
					t.Errorf("Append(%q, expected %s) wrote version %d, want %d", stream, tc.expected, res.FirstVersion, actual+1)
				}
				return
			}
			wantConflict(t, err, stream, tc.expected, actual)
			var ce *eventstore.ConflictError
			if errors.As(err, &ce) && ce.Exists != tc.exists {
				t.Errorf("conflict Exists = %v, want %v", ce.Exists, tc.exists)
			}
			if tc.exists {
				if got := mustReadStream(t, s, stream); len(got) != 2 {
					t.Errorf("after a failed append, stream %q has %d events, want 2", stream, len(got))
				}
				wantLogLen(t, s, logged, "after a failed append")
			} else {
				wantNothingStored(t, s, stream, logged, "after a failed append")
			}
		})
	}
}

var idempotencyTests = []test{
	{"RetryReturnsOriginal", testRetryReturnsOriginal},
	{"RetryBeforeVersionCheck", testRetryBeforeVersionCheck},
	{"RetryIgnoresMetadata", testRetryIgnoresMetadata},
	{"SameIDOtherEvent", testSameIDOtherEvent},
	{"PartialOverlap", testPartialOverlap},
	{"SameIDTwiceInBatch", testSameIDTwiceInBatch},
	{"DuplicateIDBeforeVersion", testDuplicateIDBeforeVersion},
}

// testDuplicateIDBeforeVersion: a batch that reuses a stored ID is a
// DuplicateIDError even when its expected version is also wrong: the IDs are
// checked before the version, so the caller learns that retrying cannot help.
func testDuplicateIDBeforeVersion(t *testing.T, nb factory) {
	s := store(t, nb)
	stored := newEvents("Placed", 2)
	mustAppend(t, s, "r", slices.Clone(stored))
	fresh := newEvent("Fresh", 0)
	cases := []struct {
		name     string
		stream   string
		batch    []recado.Event
		expected eventstore.ExpectedVersion
		dupID    string
	}{
		{"NewThenStored", "r", []recado.Event{fresh, stored[1]}, eventstore.Exact(7), stored[1].ID},
		{"NewThenStoredNoStream", "r", []recado.Event{fresh, stored[0]}, eventstore.NoStream, stored[0].ID},
		{"StoredThenNew", "r", []recado.Event{stored[0], stored[1], fresh}, eventstore.Exact(1), ""},
		{"OtherStreamExists", "other", []recado.Event{fresh, stored[0]}, eventstore.StreamExists, stored[0].ID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Append(t.Context(), tc.stream, slices.Clone(tc.batch), eventstore.Expect(tc.expected))
			if errors.Is(err, eventstore.ErrConflict) {
				t.Fatalf("Append(stored ID, wrong expected version %s) = %v, want a DuplicateIDError, not a conflict (IDs come before the version)", tc.expected, err)
			}
			wantDuplicateID(t, err, tc.dupID)
			wantLogLen(t, s, 2, "after a duplicate ID")
		})
	}
}

// testRetryReturnsOriginal: re-appending the same events stores nothing and
// returns the original result.
func testRetryReturnsOriginal(t *testing.T, nb factory) {
	s := store(t, nb)
	mustAppend(t, s, "r", newEvents("Before", 2))
	events := newEvents("Placed", 3)
	first := mustAppend(t, s, "r", slices.Clone(events), eventstore.ExpectVersion(2))
	mustAppend(t, s, "other", newEvents("After", 1))
	for round := range 2 {
		res, err := s.Append(t.Context(), "r", slices.Clone(events), eventstore.ExpectVersion(2))
		if err != nil {
			t.Fatalf("retry %d of an append: %v, want the original result", round+1, err)
		}
		want := first
		want.Duplicate = true
		if res != want {
			t.Errorf("retry %d = %+v, want the original %+v with Duplicate", round+1, res, want)
		}
	}
	if got := mustReadStream(t, s, "r"); len(got) != 5 {
		t.Errorf("after retries, stream has %d events, want 5", len(got))
	}
	wantLogLen(t, s, 6, "after retries")
}

// testRetryBeforeVersionCheck: a retry succeeds whatever the expected version,
// now that the stream has moved on.
func testRetryBeforeVersionCheck(t *testing.T, nb factory) {
	s := store(t, nb)
	events := newEvents("Placed", 2)
	first := mustAppend(t, s, "r", slices.Clone(events), eventstore.Expect(eventstore.NoStream))
	mustAppend(t, s, "r", newEvents("Later", 3), eventstore.ExpectVersion(2))
	for _, ev := range []eventstore.ExpectedVersion{eventstore.NoStream, eventstore.Exact(2), eventstore.Exact(9), eventstore.StreamExists, eventstore.Any} {
		res, err := s.Append(t.Context(), "r", slices.Clone(events), eventstore.Expect(ev))
		if err != nil {
			t.Errorf("retry with expected version %s (now wrong or not): %v, want the original result (idempotency is checked before the version)", ev, err)
			continue
		}
		if !res.Duplicate || res.FirstVersion != first.FirstVersion || res.LastVersion != first.LastVersion ||
			res.FirstPosition != first.FirstPosition || res.LastPosition != first.LastPosition {
			t.Errorf("retry with expected version %s = %+v, want %+v with Duplicate", ev, res, first)
		}
	}
	if got := mustReadStream(t, s, "r"); len(got) != 5 {
		t.Errorf("after retries, stream has %d events, want 5", len(got))
	}
	wantLogLen(t, s, 5, "after retries")
}

// testRetryIgnoresMetadata: metadata is not compared.
func testRetryIgnoresMetadata(t *testing.T, nb factory) {
	s := store(t, nb)
	events := newEvents("Placed", 2)
	first := mustAppend(t, s, "r", slices.Clone(events))
	retry := slices.Clone(events)
	retry[0].Metadata = recado.Metadata{CorrelationID: "another", Fields: map[string]string{"attempt": "2"}}
	res, err := s.Append(t.Context(), "r", retry)
	if err != nil || !res.Duplicate || res.FirstPosition != first.FirstPosition {
		t.Errorf("retry with other metadata = %+v, %v; want the original %+v with Duplicate", res, err, first)
	}
	wantLogLen(t, s, 2, "after a retry with other metadata")
}

// testSameIDOtherEvent: an ID stored for another type, other data or another
// stream is ErrDuplicateID, and nothing is stored.
func testSameIDOtherEvent(t *testing.T, nb factory) {
	s := store(t, nb)
	stored := newEvent("Placed", 1)
	mustAppend(t, s, "r", []recado.Event{stored})
	cases := []struct {
		name     string
		stream   string
		event    recado.Event
		expected eventstore.ExpectedVersion
	}{
		{"OtherType", "r", recado.Event{ID: stored.ID, Type: "Cancelled", Data: stored.Data}, eventstore.Any},
		{"OtherData", "r", recado.Event{ID: stored.ID, Type: stored.Type, Data: []byte(`{"i":2}`)}, eventstore.Any},
		{"NoData", "r", recado.Event{ID: stored.ID, Type: stored.Type}, eventstore.Any},
		{"OtherStream", "elsewhere", stored, eventstore.Any},
		{"OtherStreamExpectingNoStream", "elsewhere-2", stored, eventstore.NoStream},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Append(t.Context(), tc.stream, []recado.Event{tc.event}, eventstore.Expect(tc.expected))
			wantDuplicateID(t, err, stored.ID)
			if tc.stream != "r" {
				wantNothingStored(t, s, tc.stream, 1, "after a duplicate ID")
			} else {
				wantLogLen(t, s, 1, "after a duplicate ID")
			}
		})
	}
}

// testPartialOverlap: a batch that reuses a stored ID anywhere but as an exact
// retry is ErrDuplicateID, and none of its events are stored.
func testPartialOverlap(t *testing.T, nb factory) {
	s := store(t, nb)
	stored := newEvents("Placed", 3)
	mustAppend(t, s, "r", slices.Clone(stored))
	fresh := func() recado.Event { return newEvent("Fresh", 9) }
	cases := []struct {
		name  string
		batch []recado.Event
		dupID string
	}{
		{"LaterEventStored", []recado.Event{fresh(), stored[1]}, stored[1].ID},
		{"LastEventStored", []recado.Event{fresh(), fresh(), stored[2]}, stored[2].ID},
		{"RetryPlusNew", []recado.Event{stored[0], stored[1], stored[2], fresh()}, ""},
		{"RetryOtherOrder", []recado.Event{stored[1], stored[0]}, ""},
		{"RetryWithGap", []recado.Event{stored[0], stored[2]}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Append(t.Context(), "r", slices.Clone(tc.batch))
			wantDuplicateID(t, err, tc.dupID)
			got := mustReadStream(t, s, "r")
			if !slices.Equal(ids(got), ids(stored)) {
				t.Errorf("after a rejected batch, stream holds %d events %v, want only the 3 stored before", len(got), ids(got))
			}
			wantLogLen(t, s, 3, "after a rejected batch")
		})
	}
}

// wantDuplicateID checks that err is a *DuplicateIDError (naming id, if set).
func wantDuplicateID(tb testing.TB, err error, id string) {
	tb.Helper()
	if !errors.Is(err, eventstore.ErrDuplicateID) {
		tb.Errorf("error = %v, want one wrapping ErrDuplicateID", err)
		return
	}
	var de *eventstore.DuplicateIDError
	if !errors.As(err, &de) {
		tb.Errorf("error %v is not a *eventstore.DuplicateIDError", err)
		return
	}
	if id != "" && de.ID != id {
		tb.Errorf("DuplicateIDError.ID = %q, want %q", de.ID, id)
	}
}

// testSameIDTwiceInBatch: one ID twice in a batch is invalid input.
func testSameIDTwiceInBatch(t *testing.T, nb factory) {
	s := store(t, nb)
	e := newEvent("Placed", 1)
	_, err := s.Append(t.Context(), "r", []recado.Event{e, newEvent("Other", 2), e})
	if !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("append with one ID twice: error = %v, want ErrInvalid", err)
	}
	wantNothingStored(t, s, "r", 0, "after a batch with one ID twice")
}

var concurrencyTests = []test{
	{"ExactVersionOneWinner", testExactVersionOneWinner},
	{"NoSkippedEventsSubscribe", func(t *testing.T, nb factory) { testNoSkippedEvents(t, nb, true, false) }},
	{"NoSkippedEventsReadAll", func(t *testing.T, nb factory) { testNoSkippedEvents(t, nb, false, false) }},
	{"NoSkippedEventsUnitOfWork", func(t *testing.T, nb factory) { testNoSkippedEvents(t, nb, true, true) }},
}

// testExactVersionOneWinner: of N concurrent appends with the same exact
// expected version, exactly one wins and the others get conflicts.
func testExactVersionOneWinner(t *testing.T, nb factory) {
	s := store(t, nb)
	n := scale(32, 8)
	rounds := scale(5, 2)
	mustAppend(t, s, "contended", newEvents("Start", 1))
	version := uint64(1)
	for round := range rounds {
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			mu      sync.Mutex
			winners []int
		)
		for g := range n {
			wg.Go(func() {
				<-start
				res, err := s.Append(t.Context(), "contended", newEvents("Try", 1+g%2), eventstore.ExpectVersion(version))
				if err != nil {
					var ce *eventstore.ConflictError
					switch {
					case !errors.As(err, &ce) || !errors.Is(err, eventstore.ErrConflict):
						t.Errorf("round %d, appender %d: error = %v, want a conflict", round, g, err)
					case ce.Stream != "contended" || ce.Expected != eventstore.Exact(version) || ce.Actual == version:
						t.Errorf("round %d: conflict = %+v, want stream %q, expected %d and another actual version", round, *ce, "contended", version)
					}
					return
				}
				if res.FirstVersion != version+1 {
					t.Errorf("round %d: winner wrote version %d, want %d", round, res.FirstVersion, version+1)
				}
				mu.Lock()
				winners = append(winners, 1+g%2)
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d of %d appends with expected version %d won, want exactly 1", round, len(winners), n, version)
		}
		version += uint64(winners[0])
		if got := mustReadStream(t, s, "contended"); uint64(len(got)) != version {
			t.Fatalf("round %d: stream has %d events, want %d", round, len(got), version)
		}
	}
}
