package eventstoretest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

var ownershipTests = []test{
	{"CallerReusesEvents", testCallerReusesEvents},
	{"ReadsAreTheCallers", testReadsAreTheCallers},
}

// overwrite changes events in place, as a caller reusing its buffers does:
// every byte of Data, every metadata field, IDs and types.
func overwrite(events []recado.Event) {
	for i := range events {
		e := &events[i]
		for k := range e.Data {
			e.Data[k] = '#'
		}
		if e.Metadata.Fields != nil {
			for k := range e.Metadata.Fields {
				e.Metadata.Fields[k] = "overwritten"
			}
			e.Metadata.Fields["added"] = "after the call"
		}
		e.ID, e.Type, e.Metadata.CorrelationID = "reused-"+e.ID, "Reused", "reused"
	}
}

// testCallerReusesEvents: many concurrent appends whose callers overwrite
// their events' data and metadata as soon as Append returns, some with
// deadlines short enough to end mid-commit (ErrUnknownOutcome): every stored
// event is what was passed at the time of the call, and every append is
// stored whole or not at all. Under -race, a backend that still reads the
// caller's memory after Append returned is reported.
func testCallerReusesEvents(t *testing.T, nb factory) {
	s := store(t, nb)
	n := scale(400, 80)
	const workers = 8
	type attempt struct {
		stream string
		want   []recado.Event
		err    error
	}
	attempts := make([]attempt, n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 5))
			for i := w; i < n; i += workers {
				a := &attempts[i]
				a.stream = fmt.Sprintf("reused-%d", i%16)
				events := make([]recado.Event, 1+i%3)
				for j := range events {
					events[j] = recado.Event{ID: recado.NewID(), Type: "Owned",
						Data: fmt.Appendf(nil, `{"i":%d,"j":%d,"pad":"%s"}`, i, j, strings.Repeat("p", rng.IntN(200))),
						Metadata: recado.Metadata{CorrelationID: fmt.Sprint("c-", i),
							Fields: map[string]string{"i": fmt.Sprint(i), "empty": ""}}}
				}
				a.want = cloneEvents(events)
				ctx, cancel := t.Context(), context.CancelFunc(func() {})
				if i%2 == 0 {
					ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(1500))*time.Microsecond)
				}
				_, a.err = s.Append(ctx, a.stream, events)
				overwrite(events)
				cancel()
			}
		})
	}
	wg.Wait()
	want := map[string]recado.Event{}
	for _, a := range attempts {
		if a.err != nil && !errors.Is(a.err, eventstore.ErrUnknownOutcome) && !isCtxErr(a.err) {
			t.Errorf("Append(%q): %v, want nil, ErrUnknownOutcome or the context's error", a.stream, a.err)
		}
		for _, e := range a.want {
			want[e.ID] = e
		}
	}
	stored := map[string]bool{}
	for _, e := range mustReadAll(t, s, recado.Position{}) {
		w, ok := want[e.ID]
		if !ok {
			t.Errorf("the log holds event %q (type %q, data %s), which no caller passed", e.ID, e.Type, abbrev(e.Data))
			continue
		}
		if d := sameEvent(e, w); d != "" {
			t.Errorf("stored event %s differs from what its caller passed: %s", e.ID, d)
		}
		stored[e.ID] = true
	}
	outcomes := map[string]int{}
	for _, a := range attempts {
		n := 0
		for _, e := range a.want {
			if stored[e.ID] {
				n++
			}
		}
		switch {
		case a.err == nil && n != len(a.want):
			t.Errorf("Append(%q) succeeded but %d of its %d events are stored", a.stream, n, len(a.want))
		case n != 0 && n != len(a.want):
			t.Errorf("Append(%q) (%v) stored %d of its %d events: an append is stored whole or not at all", a.stream, a.err, n, len(a.want))
		}
		switch {
		case a.err == nil:
			outcomes["success"]++
		case errors.Is(a.err, eventstore.ErrUnknownOutcome):
			outcomes["unknown outcome"]++
		default:
			outcomes["context error"]++
		}
	}
	t.Logf("outcomes of %d appends: %v", n, outcomes)
}

// testReadsAreTheCallers: events yielded by ReadStream, ReadAll and Subscribe
// are the caller's: changing them changes nothing stored.
func testReadsAreTheCallers(t *testing.T, nb factory) {
	s := store(t, nb)
	events := []recado.Event{
		{ID: recado.NewID(), Type: "Mine", Data: []byte(`{"a":1}`), Metadata: recado.Metadata{Fields: map[string]string{"k": "v", "empty": ""}}},
		{ID: recado.NewID(), Type: "Mine", Data: []byte(`{"b":2}`), Metadata: recado.Metadata{CausationID: "c", Fields: map[string]string{"x": "y"}}},
	}
	mustAppend(t, s, "r", cloneEvents(events))
	overwrite(mustReadStream(t, s, "r"))
	overwrite(mustReadStream(t, s, "r", eventstore.Backwards()))
	overwrite(mustReadAll(t, s, recado.Position{}))
	for m, err := range s.Subscribe(guard(t), recado.Position{}) {
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		if m.Kind == eventstore.KindCaughtUp {
			break
		}
		overwrite([]recado.Event{m.Event})
	}
	got := mustReadStream(t, s, "r")
	if len(got) != len(events) {
		t.Fatalf("ReadStream read %d events, want %d", len(got), len(events))
	}
	for i := range got {
		if d := sameEvent(got[i], events[i]); d != "" {
			t.Errorf("after readers changed the events they read, event %d: %s", i, d)
		}
	}
}
