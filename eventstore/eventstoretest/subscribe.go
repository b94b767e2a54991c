package eventstoretest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

var subscribeTests = []test{
	{"CatchUpThenLive", testCatchUpThenLive},
	{"Filters", testSubscribeFilters},
	{"ProgressWhenNothingMatches", testProgressWhenNothingMatches},
	{"CancelEndsWithCtxError", testSubscribeCancel},
	{"NoGoroutineLeft", testSubscribeNoLeak},
}

// guard returns a context that ends the test's waits if they hang: a guard,
// not a measure of speed.
func guard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testCatchUpThenLive: a subscription delivers what was committed, says it
// caught up, then delivers events committed afterwards.
func testCatchUpThenLive(t *testing.T, nb factory) {
	s := leakChecked(t, nb).Store
	var want []string
	for _, stream := range []string{"a", "b", "a", "c", "b"} {
		e := newEvent("Before", 0)
		mustAppend(t, s, stream, []recado.Event{e})
		want = append(want, e.ID)
	}
	head := mustReadAll(t, s, recado.Position{}, eventstore.Backwards(), eventstore.Limit(1))[0].Position
	live := [][]recado.Event{newEvents("Live", 1), newEvents("Live", 2), newEvents("Live", 1)}
	wantAll := slices.Clone(want)
	for _, events := range live {
		wantAll = append(wantAll, ids(events)...)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	appended := make(chan struct{})
	ctx := stuckGuard(t, appended)
	var got []string
	caughtUp := 0
	last := recado.Position{}
	for m, err := range s.Subscribe(ctx, recado.Position{}) {
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				err = cause
			}
			t.Fatalf("subscription ended with %v after %d of %d events", err, len(got), len(wantAll))
		}
		if m.Position.Before(last) {
			t.Errorf("%s message at position %s after position %s", m.Kind, m.Position, last)
		}
		last = m.Position
		switch m.Kind {
		case eventstore.KindEvent:
			got = append(got, m.Event.ID)
		case eventstore.KindCaughtUp:
			caughtUp++
			if caughtUp > 1 {
				break
			}
			if !slices.Equal(got, want) {
				t.Fatalf("caught up after events %v, want %v", got, want)
			}
			if m.Position != head {
				t.Errorf("caught up at %s, want the head %s", m.Position, head)
			}
			wg.Go(func() { // append while the subscription waits
				defer close(appended)
				for i, events := range live {
					if _, err := s.Append(t.Context(), "live", events); err != nil {
						t.Errorf("live append %d: %v", i, err)
						return
					}
				}
			})
		}
		if len(got) >= len(wantAll) {
			break
		}
	}
	wg.Wait()
	if !slices.Equal(got, wantAll) {
		t.Errorf("subscription delivered %v, want %v", got, wantAll)
	}
}

// testSubscribeFilters: filters by stream, by prefix and by type deliver just
// the matching events, and the subscription still reaches the head.
func testSubscribeFilters(t *testing.T, nb factory) {
	s := leakChecked(t, nb).Store
	written := []struct{ stream, typ string }{
		{"order-1", "Placed"}, {"cart-1", "Added"}, {"order-2", "Placed"}, {"order-1", "Paid"},
		{"order-10", "Placed"}, {"cart-1", "Paid"}, {"porder-1", "Placed"}, {"cart-1", "Added"},
	}
	var events []recado.Event
	for _, w := range written {
		e := newEvent(w.typ, 0)
		mustAppend(t, s, w.stream, []recado.Event{e})
		events = append(events, e)
	}
	head := mustReadAll(t, s, recado.Position{}, eventstore.Backwards(), eventstore.Limit(1))[0].Position
	cases := []struct {
		name   string
		filter eventstore.Filter
		want   []int // indexes in written
	}{
		{"Stream", eventstore.Filter{Streams: []string{"order-1"}}, []int{0, 3}},
		{"Streams", eventstore.Filter{Streams: []string{"cart-1", "order-2"}}, []int{1, 2, 5, 7}},
		{"Prefix", eventstore.Filter{StreamPrefixes: []string{"order-"}}, []int{0, 2, 3, 4}},
		{"Type", eventstore.Filter{Types: []string{"Paid"}}, []int{3, 5}},
		{"PrefixAndType", eventstore.Filter{StreamPrefixes: []string{"order-"}, Types: []string{"Placed"}}, []int{0, 2, 4}},
		{"LastEventOnly", eventstore.Filter{Streams: []string{"cart-1"}, Types: []string{"Added"}}, []int{1, 7}},
		{"FirstEventOnly", eventstore.Filter{Streams: []string{"order-1"}, Types: []string{"Placed"}}, []int{0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want, got []string
			for _, i := range tc.want {
				want = append(want, events[i].ID)
			}
			var reached recado.Position
			for m, err := range s.Subscribe(guard(t), recado.Position{}, eventstore.WithFilter(tc.filter), eventstore.WithBatchSize(3)) {
				if err != nil {
					t.Fatalf("subscription ended with %v", err)
				}
				if m.Kind == eventstore.KindEvent {
					got = append(got, m.Event.ID)
				}
				if m.Kind == eventstore.KindCaughtUp {
					if reached != m.Position {
						t.Errorf("caught up at %s, but the last message was at %s: a checkpoint would lag", m.Position, reached)
					}
					break
				}
				reached = m.Position
			}
			if !slices.Equal(got, want) {
				t.Errorf("filter %+v delivered %v, want %v (IDs of events %v)", tc.filter, got, want, tc.want)
			}
			if reached != head {
				t.Errorf("filter %+v: subscription reached %s, want the head %s", tc.filter, reached, head)
			}
		})
	}
}

// testProgressWhenNothingMatches: a subscription whose filter matches nothing
// still reports the position it has read up to, so "wait for position P"
// returns; and a matching event later is delivered.
func testProgressWhenNothingMatches(t *testing.T, nb factory) {
	s := leakChecked(t, nb).Store
	for i := range 10 {
		mustAppend(t, s, "noise", []recado.Event{newEvent("Noise", i)})
	}
	head := mustReadAll(t, s, recado.Position{}, eventstore.Backwards(), eventstore.Limit(1))[0].Position
	var (
		wg         sync.WaitGroup
		progress   []recado.Position
		phase      = 0 // 0: catching up; 1: waiting for live noise; 2: waiting for the wanted event
		liveHead   recado.Position
		liveHeadCh = make(chan recado.Position, 1)
		wanted     = newEvent("Wanted", 0)
	)
	defer wg.Wait()
	ctx := guard(t)
	for m, err := range s.Subscribe(ctx, recado.Position{}, eventstore.WithFilter(eventstore.Filter{Types: []string{"Wanted"}}), eventstore.WithBatchSize(4)) {
		if err != nil {
			t.Fatalf("in phase %d (progress so far %v, head %s): subscription ended with %v", phase, progress, head, err)
		}
		switch m.Kind {
		case eventstore.KindEvent:
			if phase != 2 || m.Event.ID != wanted.ID {
				t.Fatalf("phase %d: delivered event %s of type %q, which the filter does not match", phase, m.Event.ID, m.Event.Type)
			}
			if m.Position.Before(liveHead) || m.Position == liveHead {
				t.Errorf("wanted event at %s, not after the progress reported at %s", m.Position, liveHead)
			}
			return
		case eventstore.KindProgress:
			progress = append(progress, m.Position)
		case eventstore.KindCaughtUp:
			switch phase {
			case 0:
				if len(progress) == 0 || progress[len(progress)-1] != head || m.Position != head {
					t.Fatalf("caught up at %s after progress %v, want progress up to the head %s", m.Position, progress, head)
				}
				phase = 1
				wg.Go(func() {
					for i := range 3 {
						res, err := s.Append(t.Context(), "noise", []recado.Event{newEvent("Noise", 10+i)})
						if err != nil {
							t.Errorf("append: %v", err)
						}
						if i == 2 {
							// liveHead is read only after progress reaches it.
							liveHeadCh <- res.LastPosition
						}
					}
				})
			case 1:
				// Wait for position P: progress must get there without any
				// matching event.
				if liveHead.IsZero() {
					select {
					case liveHead = <-liveHeadCh:
					case <-ctx.Done():
						t.Fatalf("live appends did not finish: %v", ctx.Err())
					}
				}
				if m.Position.Before(liveHead) {
					continue
				}
				if m.Position != liveHead || progress[len(progress)-1] != liveHead {
					t.Fatalf("caught up at %s after progress %v, want progress to the live head %s", m.Position, progress, liveHead)
				}
				phase = 2
				wg.Go(func() {
					if _, err := s.Append(t.Context(), "other", []recado.Event{wanted}); err != nil {
						t.Errorf("append: %v", err)
					}
				})
			}
		}
	}
}

// testSubscribeCancel: ending the context ends the subscription with the
// context's error, whether it waits for events or is catching up.
func testSubscribeCancel(t *testing.T, nb factory) {
	s := leakChecked(t, nb).Store
	mustAppend(t, s, "a", newEvents("Happened", 5))
	cases := []struct {
		name string
		// stop ends ctx, given the subscription's cancel func, at a message.
		stop    func(cancel context.CancelFunc, m eventstore.Message)
		wantErr error
	}{
		{"WhileWaiting", func(cancel context.CancelFunc, m eventstore.Message) {
			if m.Kind == eventstore.KindCaughtUp {
				cancel()
			}
		}, context.Canceled},
		{"WhileCatchingUp", func(cancel context.CancelFunc, m eventstore.Message) {
			if m.Kind == eventstore.KindEvent && m.Event.Version == 2 {
				cancel()
			}
		}, context.Canceled},
		{"AlreadyCancelled", nil, context.Canceled},
		{"Deadline", func(context.CancelFunc, eventstore.Message) {}, context.DeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(guard(t))
			defer cancel()
			switch {
			case tc.stop == nil:
				cancel()
			case tc.wantErr == context.DeadlineExceeded:
				ctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
			}
			var last error
			after := 0
			for m, err := range s.Subscribe(ctx, recado.Position{}, eventstore.WithBatchSize(2)) {
				if last != nil {
					after++
					continue
				}
				if err != nil {
					last = err
					continue
				}
				if tc.stop != nil {
					tc.stop(cancel, m)
				}
			}
			if !errors.Is(last, tc.wantErr) {
				t.Errorf("subscription ended with %v, want %v", last, tc.wantErr)
			}
			if after > 0 {
				t.Errorf("subscription yielded %d more items after its error", after)
			}
		})
	}
}

// testSubscribeNoLeak: subscriptions that stop (by break, by cancel, while
// waiting) leave no goroutine behind once the backend is closed. Goroutines
// that were running before the subscriptions (the backend's own, the test
// framework's) are not counted here; leakChecked counts them after the
// backend's cleanup.
func testSubscribeNoLeak(t *testing.T, nb factory) {
	b := leakChecked(t, nb)
	if !b.Features.LeakCheck {
		t.Skip("the backend does not have Features.LeakCheck")
	}
	s := b.Store
	mustAppend(t, s, "a", newEvents("Happened", 3))
	mustReadAll(t, s, recado.Position{})
	before := goleak.IgnoreCurrent() // the backend's own goroutines are allowed until Close
	for range s.Subscribe(t.Context(), recado.Position{}) {
		break // after the first event
	}
	for m, err := range s.Subscribe(t.Context(), recado.Position{}) {
		if err != nil || m.Kind == eventstore.KindCaughtUp {
			break
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	waiting := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		for m, err := range s.Subscribe(ctx, recado.Position{}) {
			if err != nil {
				ended <- err
				return
			}
			if m.Kind == eventstore.KindCaughtUp {
				close(waiting)
			}
		}
		ended <- nil
	}()
	<-waiting
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Errorf("waiting subscription ended with %v after cancel, want context.Canceled", err)
	}
	// Goroutines the backend started lazily for subscriptions may live until
	// Close; none may outlive it.
	if !b.Features.Close {
		return // leakChecked looks after the backend's cleanup
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines left after subscriptions ended and Close: %v", err)
	}
}
