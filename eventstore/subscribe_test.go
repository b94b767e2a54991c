package eventstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"testing"
	"time"

	"github.com/recado-dev/recado"
)

func appendN(t *testing.T, s *Store, stream, typ string, n int) {
	t.Helper()
	for i := range n {
		if _, err := s.Append(context.Background(), stream, []recado.Event{{ID: fmt.Sprintf("%s-%d-%s", stream, i, recado.NewID()), Type: typ}}); err != nil {
			t.Fatal(err)
		}
	}
}

// collect runs a subscription until stop reports true for a message.
func collect(t *testing.T, seq iter.Seq2[Message, error], stop func(Message) bool) []Message {
	t.Helper()
	var got []Message
	for m, err := range seq {
		if err != nil {
			t.Fatalf("subscription error after %d messages: %v", len(got), err)
		}
		got = append(got, m)
		if stop(m) {
			break
		}
	}
	return got
}

func kinds(ms []Message) string {
	s := ""
	for _, m := range ms {
		switch m.Kind {
		case KindEvent:
			s += "E"
		case KindProgress:
			s += "P"
		case KindCaughtUp:
			s += "C"
		}
	}
	return s
}

func TestSubscribeCatchUpThenLive(t *testing.T) {
	s := New(newFake())
	appendN(t, s, "a", "T", 5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next, stop := iter.Pull2(s.Subscribe(ctx, recado.Position{}, WithBatchSize(2), WithPollInterval(time.Hour)))
	defer stop()
	var got []Message
	pull := func() Message {
		m, err, ok := next()
		if !ok || err != nil {
			t.Fatalf("subscription ended: %v", err)
		}
		got = append(got, m)
		return m
	}
	for pull().Kind != KindCaughtUp {
	}
	// With an hour-long poll interval, only Committed can deliver this.
	appendN(t, s, "a", "T", 1)
	for pull().Kind != KindCaughtUp {
	}
	if k := kinds(got); k != "EEEEECEC" {
		t.Errorf("message kinds = %s, want EEEEECEC", k)
	}
	for i, m := range got {
		if m.Kind == KindEvent && m.Position != m.Event.Position {
			t.Errorf("message %d: position %v, event position %v", i, m.Position, m.Event.Position)
		}
	}
	cancel()
	var e *Error
	if _, err, ok := next(); !ok || !errors.Is(err, context.Canceled) || !errors.As(err, &e) || e.Op != "subscribe" {
		t.Errorf("after cancel: err = %v, ok = %v; want context.Canceled", err, ok)
	}
	if _, _, ok := next(); ok {
		t.Error("the sequence went on after its error")
	}
}

func TestSubscribeFilterReportsProgress(t *testing.T) {
	s := New(newFake())
	appendN(t, s, "order-1", "Placed", 3)
	appendN(t, s, "cart-1", "Added", 4)
	appendN(t, s, "order-2", "Paid", 2)

	tests := []struct {
		name   string
		filter Filter
		want   string
		events int
	}{
		{"all", Filter{}, "EEEEEEEEEC", 9},
		{"prefix", Filter{StreamPrefixes: []string{"order-"}}, "EEEPEEC", 5},
		{"stream", Filter{Streams: []string{"cart-1"}}, "EEEEPPC", 4},
		{"type", Filter{Types: []string{"Paid"}}, "PEEC", 2},
		{"stream and type", Filter{StreamPrefixes: []string{"order-"}, Types: []string{"Placed"}}, "EEEPPPC", 3},
		{"nothing matches", Filter{Streams: []string{"nope"}}, "PPPC", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect(t, s.Subscribe(context.Background(), recado.Position{}, WithFilter(tt.filter), WithBatchSize(4)),
				func(m Message) bool { return m.Kind == KindCaughtUp })
			if k := kinds(got); k != tt.want {
				t.Errorf("kinds = %s, want %s", k, tt.want)
			}
			events := 0
			for _, m := range got {
				if m.Kind == KindEvent {
					events++
					if !tt.filter.Match(&m.Event) {
						t.Errorf("delivered %s/%s, which does not pass the filter", m.Event.Stream, m.Event.Type)
					}
				}
			}
			if events != tt.events {
				t.Errorf("kinds %s: %d events, want %d", kinds(got), events, tt.events)
			}
			last := got[len(got)-1]
			if want := recado.NewPosition(9, 0); last.Position != want {
				t.Errorf("caught up at %v, want the head %v (kinds %s)", last.Position, want, kinds(got))
			}
			if len(got) > 1 && got[len(got)-2].Position != last.Position {
				t.Errorf("the message before caught-up is at %v: a checkpoint could not reach the head", got[len(got)-2].Position)
			}
		})
	}
}

func TestSubscribeResumesAfterPosition(t *testing.T) {
	s := New(newFake())
	appendN(t, s, "a", "T", 10)
	got := collect(t, s.Subscribe(context.Background(), recado.NewPosition(7, 0)), func(m Message) bool { return m.Kind == KindCaughtUp })
	if k := kinds(got); k != "EEEC" || got[0].Position != recado.NewPosition(8, 0) {
		t.Errorf("resume after 7: kinds %s, first %v", k, got[0].Position)
	}
}

// TestSubscribeCatchesUpInOneRead: catching up is one read of the log
// without a limit, whatever the batch size (which sets how often progress is
// reported, not how the log is read): the driver pages a long read as it
// does for ReadAll.
func TestSubscribeCatchesUpInOneRead(t *testing.T) {
	d := newFake()
	s := New(d)
	appendN(t, s, "a", "T", 10)
	got := collect(t, s.Subscribe(context.Background(), recado.Position{}, WithBatchSize(3)),
		func(m Message) bool { return m.Kind == KindCaughtUp })
	if k := kinds(got); k != "EEEEEEEEEEC" {
		t.Errorf("kinds = %s, want EEEEEEEEEEC", k)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reads != 1 || d.read.Limit != 0 {
		t.Errorf("caught up with %d reads, the last with limit %d; want 1 read without a limit", d.reads, d.read.Limit)
	}
}

// TestSubscribeChecksContextEveryBatch: a subscription catching up stops
// within a batch of the cancellation of its context, inside one long read.
func TestSubscribeChecksContextEveryBatch(t *testing.T) {
	s := New(newFake())
	appendN(t, s, "a", "T", 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := 0
	var last error
	for m, err := range s.Subscribe(ctx, recado.Position{}, WithBatchSize(4)) {
		if err != nil {
			last = err
			continue
		}
		if m.Kind == KindEvent {
			if events++; events == 2 {
				cancel()
			}
		}
	}
	if events != 4 || !errors.Is(last, context.Canceled) {
		t.Errorf("cancelled at event 2 with batches of 4: %d events, then %v; want 4, then context.Canceled", events, last)
	}
}

// TestSubscribePollsWithoutNotification: a commit the driver does not signal
// (another process wrote, say) is found by polling.
func TestSubscribePollsWithoutNotification(t *testing.T) {
	d := newFake()
	d.silent = true
	s := New(d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	next, stop := iter.Pull2(s.Subscribe(ctx, recado.Position{}, WithPollInterval(time.Millisecond)))
	defer stop()
	if m, err, _ := next(); err != nil || m.Kind != KindCaughtUp {
		t.Fatalf("first message %v, %v; want caught up", m.Kind, err)
	}
	appendN(t, s, "a", "T", 1)
	if m, err, _ := next(); err != nil || m.Kind != KindEvent {
		t.Fatalf("after an unsignalled commit: %v, %v; want the event", m.Kind, err)
	}
}

// TestSubscribeStoreError: the driver's error ends the subscription, wrapped.
func TestSubscribeStoreError(t *testing.T) {
	d := newFake()
	s := New(d)
	appendN(t, s, "a", "T", 1)
	d.readErr = errDisk
	var errs []error
	for _, err := range s.Subscribe(context.Background(), recado.Position{}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], errDisk) || errs[0].Error() != "eventstore: subscribe: disk on fire" {
		t.Errorf("errors = %v, want the driver's one error, wrapped", errs)
	}
}

// TestSubscribeInvalid: a batch size or poll interval that is not positive.
func TestSubscribeInvalid(t *testing.T) {
	s := New(newFake())
	for _, opt := range []SubscribeOption{WithBatchSize(0), WithPollInterval(-time.Second)} {
		for _, err := range s.Subscribe(context.Background(), recado.Position{}, opt) {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Subscribe = %v, want ErrInvalid", err)
			}
		}
	}
}

func TestFilterMatch(t *testing.T) {
	e := &recado.Event{Stream: "order-42", Type: "Placed"}
	tests := []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{Streams: []string{"order-42"}}, true},
		{Filter{Streams: []string{"order-4"}}, false},
		{Filter{StreamPrefixes: []string{"order-"}}, true},
		{Filter{StreamPrefixes: []string{"cart-"}, Streams: []string{"order-42"}}, true},
		{Filter{Types: []string{"Paid", "Placed"}}, true},
		{Filter{Types: []string{"Paid"}}, false},
		{Filter{StreamPrefixes: []string{"order-"}, Types: []string{"Paid"}}, false},
	}
	for _, tt := range tests {
		if got := tt.f.Match(e); got != tt.want {
			t.Errorf("%+v.Match = %v, want %v", tt.f, got, tt.want)
		}
	}
}
