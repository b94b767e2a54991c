package eventstoretest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

var limitTests = []test{
	{"StreamName", testLimitStreamName},
	{"IDAndType", testLimitIDAndType},
	{"Concurrent", testLimitsConcurrent},
	{"Times", testTimes},
}

// incompressible returns n bytes of valid UTF-8 without NUL, mostly two-,
// three- and four-byte characters drawn at random, so that neither
// compression nor a byte-per-character assumption makes it fit where n bytes
// would not.
func incompressible(rng *rand.Rand, n int) string {
	var b strings.Builder
	for b.Len() < n {
		left := n - b.Len()
		size := 2 + rng.IntN(3) // 2, 3 or 4 bytes
		if size > left {
			size = left
		}
		var r rune
		switch size {
		case 1:
			r = rune('!' + rng.IntN('~'-'!'+1))
		case 2:
			r = rune(0x80 + rng.IntN(0x800-0x80))
		case 3:
			r = rune(0x800 + rng.IntN(0x10000-0x800))
			if r >= 0xD800 && r <= 0xDFFF { // surrogates are not characters
				r -= 0x1000
			}
		case 4:
			r = rune(0x10000 + rng.IntN(0x110000-0x10000))
		}
		b.WriteRune(r)
	}
	s := b.String()
	if len(s) != n || !utf8.ValidString(s) {
		panic(fmt.Sprintf("incompressible: %d bytes, valid %v", len(s), utf8.ValidString(s)))
	}
	return s
}

// testLimitStreamName: a stream name of MaxStreamLen bytes is written, read
// and told apart from its neighbours exactly; one byte more is ErrInvalid.
func testLimitStreamName(t *testing.T, nb factory) {
	s := store(t, nb)
	rng := rand.New(rand.NewPCG(1, 1))
	long := incompressible(rng, eventstore.MaxStreamLen)
	cut := eventstore.MaxStreamLen - 4
	for !utf8.RuneStart(long[cut]) {
		cut--
	}
	sibling := long[:cut] + strings.Repeat("a", eventstore.MaxStreamLen-cut) // the same long prefix
	for _, name := range []string{long, sibling} {
		events := newEvents("AtTheLimit", 2)
		mustAppend(t, s, name, cloneEvents(events), eventstore.Expect(eventstore.NoStream))
		got := mustReadStream(t, s, name)
		if len(got) != 2 {
			t.Fatalf("ReadStream(name of %d bytes) read %d events, want 2", len(name), len(got))
		}
		for i := range got {
			events[i].Stream = name
			if d := sameEvent(got[i], events[i]); d != "" {
				t.Errorf("event %d: %s", i, d)
			}
		}
		if st, err := s.State(t.Context(), name); err != nil || st.Version != 2 {
			t.Errorf("State(name of %d bytes) = %+v, %v; want version 2", len(name), st, err)
		}
	}
	for _, e := range mustReadAll(t, s, recado.Position{}) {
		if e.Stream != long && e.Stream != sibling {
			t.Errorf("ReadAll: stream name of %d bytes came back as another of %d bytes", eventstore.MaxStreamLen, len(e.Stream))
		}
	}
	_, err := s.Append(t.Context(), long+"x", newEvents("Over", 1))
	if !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("Append to a name of %d bytes: %v, want ErrInvalid", eventstore.MaxStreamLen+1, err)
	}
	wantLogLen(t, s, 4, "after an append to a name over the limit")
}

// testLimitIDAndType: IDs of MaxIDLen bytes and types of MaxTypeLen bytes
// round-trip, and retries recognise them; one byte more is ErrInvalid.
func testLimitIDAndType(t *testing.T, nb factory) {
	s := store(t, nb)
	rng := rand.New(rand.NewPCG(2, 2))
	events := []recado.Event{
		{ID: incompressible(rng, eventstore.MaxIDLen), Type: incompressible(rng, eventstore.MaxTypeLen), Data: []byte(`{}`)},
		{ID: incompressible(rng, eventstore.MaxIDLen), Type: incompressible(rng, eventstore.MaxTypeLen)},
	}
	first := mustAppend(t, s, "long", cloneEvents(events))
	res, err := s.Append(t.Context(), "long", cloneEvents(events))
	if err != nil || !res.Duplicate || res.FirstPosition != first.FirstPosition {
		t.Errorf("retry of events with IDs of %d bytes = %+v, %v; want the original result with Duplicate", eventstore.MaxIDLen, res, err)
	}
	got := mustReadStream(t, s, "long")
	if len(got) != len(events) {
		t.Fatalf("ReadStream read %d events, want %d", len(got), len(events))
	}
	for i := range got {
		if d := sameEvent(got[i], events[i]); d != "" {
			t.Errorf("event %d: %s", i, d)
		}
	}
	over := []struct {
		name string
		e    recado.Event
	}{
		{"ID", recado.Event{ID: events[0].ID + "x", Type: "T"}},
		{"type", recado.Event{ID: recado.NewID(), Type: events[0].Type + "x"}},
	}
	for _, o := range over {
		if _, err := s.Append(t.Context(), "long", []recado.Event{o.e}); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Append with an %s one byte over the limit: %v, want ErrInvalid", o.name, err)
		}
	}
	wantLogLen(t, s, 2, "after appends over the limits")
}

// testLimitsConcurrent: appends at the limits, over them, with NUL bytes and
// ordinary ones run together (as a backend's group commit would gather
// them): the ones within the limits are stored exactly, the others fail
// with ErrInvalid, and no append fails or changes its neighbours.
func testLimitsConcurrent(t *testing.T, nb factory) {
	s := store(t, nb)
	type attempt struct {
		stream string
		events []recado.Event
		valid  bool
		err    error
	}
	rng := rand.New(rand.NewPCG(3, 3))
	var attempts []*attempt
	for i := range scale(8, 4) {
		long := incompressible(rng, eventstore.MaxStreamLen)
		atLimit := []recado.Event{{ID: incompressible(rng, eventstore.MaxIDLen), Type: incompressible(rng, eventstore.MaxTypeLen), Data: []byte(`{"at":"limit"}`)}}
		attempts = append(attempts,
			&attempt{stream: long, events: atLimit, valid: true},
			&attempt{stream: fmt.Sprintf("plain-%d", i), events: newEvents("Plain", 1+i%3), valid: true},
			&attempt{stream: long + "x", events: newEvents("Over", 1)},
			&attempt{stream: "plain-over", events: []recado.Event{{ID: incompressible(rng, eventstore.MaxIDLen+1), Type: "T"}}},
			&attempt{stream: "plain-over", events: []recado.Event{newEvent("Fine", 0), {ID: recado.NewID(), Type: incompressible(rng, eventstore.MaxTypeLen+1)}}},
			&attempt{stream: "plain-nul", events: []recado.Event{{ID: "id\x00" + recado.NewID(), Type: "T"}}},
			&attempt{stream: "plain-nul", events: []recado.Event{{ID: recado.NewID(), Type: "T\x00"}}},
		)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, a := range attempts {
		wg.Go(func() {
			<-start
			_, a.err = s.Append(t.Context(), a.stream, cloneEvents(a.events))
		})
	}
	close(start)
	wg.Wait()
	stored := 0
	for _, a := range attempts {
		switch {
		case a.valid && a.err != nil:
			t.Errorf("Append(stream of %d bytes, ID of %d bytes) among invalid neighbours: %v", len(a.stream), len(a.events[0].ID), a.err)
		case !a.valid && !errors.Is(a.err, eventstore.ErrInvalid):
			t.Errorf("Append(stream of %d bytes, ID of %d bytes, type of %d bytes): %v, want ErrInvalid",
				len(a.stream), len(a.events[len(a.events)-1].ID), len(a.events[len(a.events)-1].Type), a.err)
		case a.valid:
			stored += len(a.events)
			got := mustReadStream(t, s, a.stream)
			if len(got) != len(a.events) {
				t.Errorf("stream of %d bytes holds %d events, want %d", len(a.stream), len(got), len(a.events))
				continue
			}
			for i := range got {
				want := a.events[i]
				want.Stream = a.stream
				if d := sameEvent(got[i], want); d != "" {
					t.Errorf("stream of %d bytes, event %d: %s", len(a.stream), i, d)
				}
			}
		}
	}
	for _, stream := range []string{"plain-over", "plain-nul"} {
		if _, err := readStream(t.Context(), s, stream); !errors.Is(err, eventstore.ErrStreamNotFound) {
			t.Errorf("ReadStream(%q) after invalid appends: %v, want ErrStreamNotFound", stream, err)
		}
	}
	wantLogLen(t, s, stored, "after appends at and over the limits")
}

// testTimes: times come back in UTC, truncated to the microsecond, from the
// first microsecond of year 1 to the last of year 9999; a zero time is the
// time of the append.
func testTimes(t *testing.T, nb factory) {
	s := store(t, nb)
	times := []time.Time{
		time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(1, 1, 1, 1, 0, 0, 1000, time.FixedZone("UTC+1", 3600)), // the same instant
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2000, 2, 29, 12, 0, 0, 1, time.UTC),
		time.Date(2024, 7, 1, 2, 3, 4, 567891234, time.FixedZone("UTC-7", -7*3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(9999, 12, 31, 18, 59, 59, 999999999, time.FixedZone("UTC-5", -5*3600)),
		{}, // now
	}
	events := make([]recado.Event, len(times))
	for i, tm := range times {
		events[i] = recado.Event{ID: recado.NewID(), Type: "Timed", Time: tm}
	}
	before := time.Now().UTC().Truncate(eventstore.TimePrecision)
	// One append with them all, and one per time: a backend may store a
	// batch and a single event differently.
	mustAppend(t, s, "times-batch", cloneEvents(events))
	for i := range events {
		e := events[i]
		e.ID = recado.NewID()
		mustAppend(t, s, fmt.Sprintf("times-%d", i), []recado.Event{e})
	}
	after := time.Now()
	check := func(how string, got []recado.Event, tm time.Time) {
		t.Helper()
		e := got[0]
		want := recado.Event{ID: e.ID, Type: "Timed", Time: tm}
		if d := sameEvent(e, want); d != "" {
			t.Errorf("%s, time %s: %s", how, tm.Format(time.RFC3339Nano), d)
		}
		if tm.IsZero() && (e.Time.Before(before) || e.Time.After(after)) {
			t.Errorf("%s: a zero time came back as %s, want the time of the append (%s..%s)", how, e.Time, before, after)
		}
	}
	batch := mustReadStream(t, s, "times-batch")
	if len(batch) != len(times) {
		t.Fatalf("read %d events, want %d", len(batch), len(times))
	}
	for i, tm := range times {
		check("in a batch", batch[i:], tm)
		check("alone", mustReadStream(t, s, fmt.Sprintf("times-%d", i)), tm)
	}
	for i, e := range mustReadAll(t, s, recado.Position{}) {
		if e.Time.Location() != time.UTC || e.Time.Nanosecond()%1000 != 0 {
			t.Errorf("ReadAll event %d: time %s, want UTC to the microsecond", i, e.Time.Format(time.RFC3339Nano))
		}
	}
}
