package eventstoretest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

var appendTests = []test{
	{"VersionsAndPositions", testVersionsAndPositions},
	{"RoundTrip", testRoundTrip},
	{"EmptyAndLargeData", testEmptyAndLargeData},
	{"ManyStreams", testManyStreams},
	{"UnicodeStreams", testUnicodeStreams},
	{"SimilarStreamNames", testSimilarStreamNames},
	{"MetadataEmptyValues", testMetadataEmptyValues},
}

// testMetadataEmptyValues: a metadata field with an empty value is kept: it
// reads back present and empty, unlike a field never set.
func testMetadataEmptyValues(t *testing.T, nb factory) {
	s := store(t, nb)
	events := []recado.Event{
		{ID: recado.NewID(), Type: "Meta", Metadata: recado.Metadata{Fields: map[string]string{"empty": "", "full": "v"}}},
		{ID: recado.NewID(), Type: "Meta", Metadata: recado.Metadata{Fields: map[string]string{"only": ""}}},
		{ID: recado.NewID(), Type: "Meta", Metadata: recado.Metadata{CorrelationID: "c", Fields: map[string]string{"a": "", "b": "", "c": ""}}},
		{ID: recado.NewID(), Type: "Meta", Metadata: recado.Metadata{Fields: map[string]string{}}},
	}
	mustAppend(t, s, "meta", cloneEvents(events[:2]))
	for _, e := range events[2:] {
		mustAppend(t, s, "meta", cloneEvents([]recado.Event{e}))
	}
	check := func(how string, got []recado.Event) {
		t.Helper()
		if len(got) != len(events) {
			t.Fatalf("%s read %d events, want %d", how, len(got), len(events))
		}
		for i := range got {
			if d := sameEvent(got[i], events[i]); d != "" {
				t.Errorf("%s event %d: %s", how, i, d)
			}
		}
	}
	check("ReadStream", mustReadStream(t, s, "meta"))
	check("ReadAll", mustReadAll(t, s, recado.Position{}))
}

// testVersionsAndPositions: versions from 1, positions strictly increasing and
// equal to the ones AppendResult reported.
func testVersionsAndPositions(t *testing.T, nb factory) {
	s := store(t, nb)
	type batch struct {
		stream string
		n      int
	}
	batches := []batch{{"a", 1}, {"b", 3}, {"a", 2}, {"c", 1}, {"b", 1}, {"a", 4}}
	var want []recado.Event // with Stream, Version, Position set from the results
	last := map[string]uint64{}
	for _, b := range batches {
		events := newEvents("Happened", b.n)
		res := mustAppend(t, s, b.stream, events)
		if res.Duplicate {
			t.Fatalf("Append(%q) of new events: Duplicate = true", b.stream)
		}
		if res.FirstVersion != last[b.stream]+1 || res.LastVersion != last[b.stream]+uint64(b.n) {
			t.Errorf("Append(%q, %d events) after version %d = versions %d..%d, want %d..%d",
				b.stream, b.n, last[b.stream], res.FirstVersion, res.LastVersion, last[b.stream]+1, last[b.stream]+uint64(b.n))
		}
		last[b.stream] = res.LastVersion
		for i := range events {
			events[i].Stream = b.stream
			events[i].Version = res.FirstVersion + uint64(i)
		}
		events[0].Position, events[len(events)-1].Position = res.FirstPosition, res.LastPosition
		if n := len(want); n > 0 && !want[n-1].Position.Before(res.FirstPosition) {
			t.Errorf("Append(%q) FirstPosition %s is not after the previous append's LastPosition %s", b.stream, res.FirstPosition, want[n-1].Position)
		}
		want = append(want, events...)
	}
	got := mustReadAll(t, s, recado.Position{})
	if len(got) != len(want) {
		t.Fatalf("ReadAll read %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if i > 0 && !got[i-1].Position.Before(got[i].Position) {
			t.Errorf("ReadAll: event %d position %s is not after event %d position %s", i, got[i].Position, i-1, got[i-1].Position)
		}
		if d := sameEvent(got[i], want[i]); d != "" {
			t.Errorf("ReadAll event %d: %s", i, d)
		}
	}
	for stream, n := range last {
		events := mustReadStream(t, s, stream)
		if got := versions(events); len(got) != int(n) || got[0] != 1 || got[len(got)-1] != n {
			t.Errorf("ReadStream(%q) versions = %v, want 1..%d", stream, got, n)
		}
		for i := 1; i < len(events); i++ {
			if !events[i-1].Position.Before(events[i].Position) {
				t.Errorf("ReadStream(%q): positions %s then %s, want increasing", stream, events[i-1].Position, events[i].Position)
			}
		}
	}
}

// testRoundTrip: every field of an event comes back as written.
func testRoundTrip(t *testing.T, nb factory) {
	s := store(t, nb)
	given := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.FixedZone("UTC+1", 3600))
	events := []recado.Event{
		{ID: recado.NewID(), Type: "OrderPlaced", Data: []byte(`{"order":"42","total":{"amount":1999,"currency":"EUR"}}`),
			Metadata: recado.Metadata{
				CorrelationID: "corr-1", CausationID: "cause-1", IdempotencyKey: "key-1",
				TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "rojo=00f067aa0ba902b7",
				Fields: map[string]string{"user": "ana", "tenant": "ç-☕", "quote": `say "hi"\n`},
			}},
		{ID: recado.NewID(), Type: "OrderPaid", Data: []byte(`{"order":"42"}`), Time: given},
		{ID: "client-chosen-id/ü", Type: "Ünïcode.Type", Data: []byte(`"just a string"`),
			Metadata: recado.Metadata{Fields: map[string]string{"only": "field"}}},
		{ID: recado.NewID(), Type: "Binaryish", Data: []byte{0, 1, 2, 0xff, 0xfe, '\n', 0}},
	}
	before := time.Now()
	res := mustAppend(t, s, "order-42", slices.Clone(events))
	for i := range events {
		events[i].Stream = "order-42"
		events[i].Version = uint64(i + 1)
	}
	events[0].Position = res.FirstPosition
	events[len(events)-1].Position = res.LastPosition

	check := func(how string, got []recado.Event) {
		t.Helper()
		if len(got) != len(events) {
			t.Fatalf("%s read %d events, want %d", how, len(got), len(events))
		}
		for i := range got {
			if d := sameEvent(got[i], events[i]); d != "" {
				t.Errorf("%s event %d: %s", how, i, d)
			}
			if events[i].Time.IsZero() && got[i].Time.Before(before.Add(-time.Hour)) {
				t.Errorf("%s event %d: Time %s, want about now (%s)", how, i, got[i].Time, before)
			}
		}
	}
	check("ReadStream", mustReadStream(t, s, "order-42"))
	check("ReadAll", mustReadAll(t, s, recado.Position{}))
}

// testEmptyAndLargeData: an event without data and one of 1 MiB.
func testEmptyAndLargeData(t *testing.T, nb factory) {
	s := store(t, nb)
	large := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	large[0], large[len(large)-1] = '[', ']'
	events := []recado.Event{
		{ID: recado.NewID(), Type: "Empty"},
		{ID: recado.NewID(), Type: "EmptyNotNil", Data: []byte{}},
		{ID: recado.NewID(), Type: "Large", Data: large},
	}
	mustAppend(t, s, "data", slices.Clone(events))
	mustAppend(t, s, "data", []recado.Event{{ID: recado.NewID(), Type: "LargeAlone", Data: large}})
	got := mustReadStream(t, s, "data")
	if len(got) != 4 {
		t.Fatalf("ReadStream read %d events, want 4", len(got))
	}
	for i, e := range events {
		if d := sameEvent(got[i], e); d != "" {
			t.Errorf("event %d (%s): %s", i, e.Type, d)
		}
	}
	if !bytes.Equal(got[3].Data, large) {
		t.Errorf("1 MiB event appended alone: data of %d bytes differs", len(got[3].Data))
	}
}

// testManyStreams: many streams, written concurrently, each read back alone.
func testManyStreams(t *testing.T, nb factory) {
	s := store(t, nb)
	n := scale(1000, 100)
	const workers = 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				stream := fmt.Sprintf("many-%d", i)
				if _, err := s.Append(t.Context(), stream, newEvents("Happened", 1+i%3), eventstore.Expect(eventstore.NoStream)); err != nil {
					t.Errorf("Append(%q): %v", stream, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	for i := range n {
		stream := fmt.Sprintf("many-%d", i)
		events := mustReadStream(t, s, stream)
		if len(events) != 1+i%3 {
			t.Errorf("ReadStream(%q) read %d events, want %d", stream, len(events), 1+i%3)
		}
		for _, e := range events {
			if e.Stream != stream {
				t.Errorf("ReadStream(%q) returned an event of stream %q", stream, e.Stream)
			}
		}
		total += 1 + i%3
	}
	wantLogLen(t, s, total, fmt.Sprintf("after appends to %d streams", n))
}

// testUnicodeStreams: stream names are any valid UTF-8, compared byte for byte
// (no normalization: "café" with a combining accent is another stream).
func testUnicodeStreams(t *testing.T, nb factory) {
	s := store(t, nb)
	names := []string{"café-☕-42", "cafe\u0301-☕-42", "поток-заказов-7", "🚀🎉-stream", "日本語-ストリーム", "ελληνικά", "a\tb", "עברית-1"}
	for _, name := range names {
		mustAppend(t, s, name, []recado.Event{newEvent("Named", 0)}, eventstore.Expect(eventstore.NoStream))
	}
	for _, name := range names {
		events := mustReadStream(t, s, name)
		if len(events) != 1 || events[0].Stream != name {
			t.Errorf("ReadStream(%q) = %d events (first stream %q), want 1 event of that stream", name, len(events), streamOf(events))
		}
	}
	for _, e := range mustReadAll(t, s, recado.Position{}) {
		if !slices.Contains(names, e.Stream) {
			t.Errorf("ReadAll: event of stream %q, which was never written (names must round-trip exactly)", e.Stream)
		}
	}
}

func streamOf(events []recado.Event) string {
	if len(events) == 0 {
		return ""
	}
	return events[0].Stream
}

// testSimilarStreamNames: a stream whose name is a prefix of another's (or
// differs in case, or by a trailing space, or by a LIKE wildcard) is a stream
// of its own.
func testSimilarStreamNames(t *testing.T, nb factory) {
	s := store(t, nb)
	names := []string{"order-1", "order-10", "order-1-x", "order-", "Order-1", "order-1 ", "order_1", "order%1", "order-100"}
	for i, name := range names {
		mustAppend(t, s, name, newEvents("Named", i+1))
	}
	for i, name := range names {
		events := mustReadStream(t, s, name)
		if len(events) != i+1 {
			t.Errorf("ReadStream(%q) read %d events, want %d", name, len(events), i+1)
		}
		for _, e := range events {
			if e.Stream != name {
				t.Errorf("ReadStream(%q) leaked an event of stream %q", name, e.Stream)
			}
		}
		if got := mustReadStream(t, s, name, eventstore.Backwards(), eventstore.Limit(1)); len(got) != 1 || got[0].Version != uint64(i+1) {
			t.Errorf("ReadStream(%q, Backwards, Limit 1) = versions %v, want [%d]", name, versions(got), i+1)
		}
	}
}

var readStreamTests = []test{
	{"Options", testReadStreamOptions},
	{"NotFound", testReadStreamNotFound},
}

// testReadStreamOptions: FromVersion, Backwards and Limit.
func testReadStreamOptions(t *testing.T, nb factory) {
	s := store(t, nb)
	var written []recado.Event
	for i := range 10 {
		e := newEvent("Counted", i)
		mustAppend(t, s, "other", []recado.Event{newEvent("Noise", i)})
		mustAppend(t, s, "s", []recado.Event{e})
		written = append(written, e)
	}
	span := span[uint64] // versions from..to, either way
	cases := []struct {
		name string
		opts []eventstore.ReadOption
		want []uint64
	}{
		{"All", nil, span(1, 10)},
		{"LimitZeroIsNoLimit", []eventstore.ReadOption{eventstore.Limit(0)}, span(1, 10)},
		{"From4", []eventstore.ReadOption{eventstore.FromVersion(4)}, span(4, 10)},
		{"From4Limit3", []eventstore.ReadOption{eventstore.FromVersion(4), eventstore.Limit(3)}, span(4, 6)},
		{"Limit1", []eventstore.ReadOption{eventstore.Limit(1)}, span(1, 1)},
		{"LimitBeyondEnd", []eventstore.ReadOption{eventstore.Limit(50)}, span(1, 10)},
		{"FromLast", []eventstore.ReadOption{eventstore.FromVersion(10)}, span(10, 10)},
		{"FromBeyondEnd", []eventstore.ReadOption{eventstore.FromVersion(11)}, nil},
		{"Backwards", []eventstore.ReadOption{eventstore.Backwards()}, span(10, 1)},
		{"BackwardsFrom7", []eventstore.ReadOption{eventstore.Backwards(), eventstore.FromVersion(7)}, span(7, 1)},
		{"BackwardsFrom7Limit2", []eventstore.ReadOption{eventstore.Backwards(), eventstore.FromVersion(7), eventstore.Limit(2)}, span(7, 6)},
		{"BackwardsLimit3", []eventstore.ReadOption{eventstore.Backwards(), eventstore.Limit(3)}, span(10, 8)},
		{"BackwardsFrom1", []eventstore.ReadOption{eventstore.Backwards(), eventstore.FromVersion(1)}, span(1, 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := mustReadStream(t, s, "s", tc.opts...)
			if !slices.Equal(versions(got), tc.want) {
				t.Fatalf("ReadStream versions = %v, want %v", versions(got), tc.want)
			}
			for _, e := range got {
				if d := sameEvent(e, written[e.Version-1]); d != "" || e.Stream != "s" {
					t.Errorf("version %d of stream %q: %s", e.Version, e.Stream, d)
				}
			}
		})
	}
}

// testReadStreamNotFound: a stream never written is ErrStreamNotFound.
func testReadStreamNotFound(t *testing.T, nb factory) {
	s := store(t, nb)
	mustAppend(t, s, "exists", newEvents("Happened", 2))
	for _, opts := range [][]eventstore.ReadOption{nil, {eventstore.Backwards()}, {eventstore.FromVersion(2)}} {
		events, err := readStream(t.Context(), s, "missing", opts...)
		if !errors.Is(err, eventstore.ErrStreamNotFound) || len(events) != 0 {
			t.Errorf("ReadStream(missing stream) = %d events, error %v; want ErrStreamNotFound", len(events), err)
		}
	}
}

var readAllTests = []test{
	{"Options", testReadAllOptions},
	{"Empty", testReadAllEmpty},
	{"AppendPositions", testAppendPositions},
}

// testAppendPositions: the positions an append reports are where the log has
// its events, also when appends run concurrently; and a reader that waits for
// a position reaches it (Compare >= 0) through event or progress messages,
// whatever its filter. (An AppendResult's position is where to wait, not a
// safe place to resume: see the package doc.)
func testAppendPositions(t *testing.T, nb factory) {
	s := store(t, nb)
	type appended struct {
		events []recado.Event
		res    eventstore.AppendResult
	}
	n := scale(16, 6)
	results := make([][]appended, n)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			for i := range 10 {
				events := newEvents("Positioned", 1+(g+i)%3)
				res, err := s.Append(t.Context(), fmt.Sprintf("pos-%d", (g+i)%5), events)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				results[g] = append(results[g], appended{events, res})
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	log := mustReadAll(t, s, recado.Position{})
	at := map[string]recado.Event{}
	var head recado.Position
	for _, e := range log {
		at[e.ID] = e
		head = e.Position
	}
	for _, rs := range results {
		for _, a := range rs {
			first, last := at[a.events[0].ID], at[a.events[len(a.events)-1].ID]
			if first.Position != a.res.FirstPosition || last.Position != a.res.LastPosition {
				t.Errorf("append reported positions %s..%s; the log has its events at %s..%s", a.res.FirstPosition, a.res.LastPosition, first.Position, last.Position)
			}
			if first.Version != a.res.FirstVersion || last.Version != a.res.LastVersion {
				t.Errorf("append reported versions %d..%d; the log has its events at %d..%d", a.res.FirstVersion, a.res.LastVersion, first.Version, last.Version)
			}
		}
	}
	for _, f := range []eventstore.Filter{{}, {Types: []string{"NothingMatches"}}, {Streams: []string{"pos-0"}}} {
		var reached recado.Position
		for m, err := range s.Subscribe(guard(t), recado.Position{}, eventstore.WithFilter(f), eventstore.WithBatchSize(7)) {
			if err != nil {
				t.Fatalf("Subscribe(filter %+v): %v", f, err)
			}
			reached = m.Position
			if m.Kind == eventstore.KindCaughtUp {
				break
			}
		}
		if reached != head {
			t.Errorf("Subscribe(filter %+v) caught up at %s, want the position of the last append, %s", f, reached, head)
		}
	}
}

// testReadAllOptions: after a position, Backwards, Limit.
func testReadAllOptions(t *testing.T, nb factory) {
	s := store(t, nb)
	var written []recado.Event
	for i, stream := range []string{"a", "b", "a", "c", "b", "a", "c", "c", "a", "b", "a", "b"} {
		e := newEvent("Logged", i)
		res := mustAppend(t, s, stream, []recado.Event{e})
		e.Stream, e.Version, e.Position = stream, res.FirstVersion, res.FirstPosition
		written = append(written, e)
	}
	pos := func(i int) recado.Position { return written[i].Position }
	span := span[int] // log indexes from..to, either way
	cases := []struct {
		name  string
		after recado.Position
		opts  []eventstore.ReadOption
		want  []int // indexes in written
	}{
		{"FromStart", recado.Position{}, nil, span(0, 11)},
		{"After4", pos(4), nil, span(5, 11)},
		{"AfterFirst", pos(0), nil, span(1, 11)},
		{"AfterLast", pos(11), nil, nil},
		{"After4Limit3", pos(4), []eventstore.ReadOption{eventstore.Limit(3)}, span(5, 7)},
		{"Limit2", recado.Position{}, []eventstore.ReadOption{eventstore.Limit(2)}, span(0, 1)},
		{"Backwards", recado.Position{}, []eventstore.ReadOption{eventstore.Backwards()}, span(11, 0)},
		{"BackwardsBefore4", pos(4), []eventstore.ReadOption{eventstore.Backwards()}, span(3, 0)},
		{"BackwardsBeforeFirst", pos(0), []eventstore.ReadOption{eventstore.Backwards()}, nil},
		{"BackwardsLimit3", recado.Position{}, []eventstore.ReadOption{eventstore.Backwards(), eventstore.Limit(3)}, span(11, 9)},
		{"BackwardsBefore8Limit2", pos(8), []eventstore.ReadOption{eventstore.Backwards(), eventstore.Limit(2)}, span(7, 6)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := mustReadAll(t, s, tc.after, tc.opts...)
			var gotIdx []int
			for _, e := range got {
				gotIdx = append(gotIdx, slices.IndexFunc(written, func(w recado.Event) bool { return w.ID == e.ID }))
			}
			if !slices.Equal(gotIdx, tc.want) {
				t.Fatalf("ReadAll(%s) read events %v (indexes in append order, -1 unknown), want %v", tc.after, gotIdx, tc.want)
			}
			for i, e := range got {
				if d := sameEvent(e, written[tc.want[i]]); d != "" {
					t.Errorf("event %d: %s", tc.want[i], d)
				}
			}
		})
	}
}

// testReadAllEmpty: an empty store reads nothing, either way.
func testReadAllEmpty(t *testing.T, nb factory) {
	s := store(t, nb)
	for _, opts := range [][]eventstore.ReadOption{nil, {eventstore.Backwards()}} {
		if got := mustReadAll(t, s, recado.Position{}, opts...); len(got) != 0 {
			t.Errorf("ReadAll of an empty store read %d events", len(got))
		}
	}
}

// span returns the numbers from..to, counting up or down.
func span[N uint64 | int](from, to N) []N {
	var v []N
	for i := from; ; {
		v = append(v, i)
		if i == to {
			return v
		}
		if from < to {
			i++
		} else {
			i--
		}
	}
}
