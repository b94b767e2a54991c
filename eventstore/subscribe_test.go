package eventstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
)

// logStore is the least store that Poll needs: an append-only log. It is not a
// conforming Store (no versions, no idempotency); the backends' conformance
// suite covers those.
type logStore struct {
	mu     sync.Mutex
	events []recado.Event
	failAt int // ReadAll fails once the log has this many events (0: never)
	reads  int
}

func (s *logStore) Append(_ context.Context, stream string, events []recado.Event, _ ...AppendOption) (AppendResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range events {
		e.Stream = stream
		e.Position = recado.NewPosition(uint64(len(s.events)+1), 0)
		s.events = append(s.events, e)
	}
	return AppendResult{}, nil
}

func (s *logStore) ReadStream(context.Context, string, ...ReadOption) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) { yield(recado.Event{}, errors.New("not used")) }
}

func (s *logStore) ReadAll(ctx context.Context, after recado.Position, opts ...ReadOption) iter.Seq2[recado.Event, error] {
	o := NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(recado.Event{}, err)
			return
		}
		s.mu.Lock()
		s.reads++
		if s.failAt > 0 && len(s.events) >= s.failAt {
			s.mu.Unlock()
			yield(recado.Event{}, errors.New("disk on fire"))
			return
		}
		major, _ := after.Parts()
		end := len(s.events)
		if o.Limit > 0 && int(major)+o.Limit < end {
			end = int(major) + o.Limit
		}
		batch := append([]recado.Event(nil), s.events[min(int(major), end):end]...)
		s.mu.Unlock()
		for _, e := range batch {
			if !yield(e, nil) {
				return
			}
		}
	}
}

// notifyingStore adds Notifier.
type notifyingStore struct {
	logStore
	Signal
}

func (s *notifyingStore) Append(ctx context.Context, stream string, events []recado.Event, opts ...AppendOption) (AppendResult, error) {
	r, err := s.logStore.Append(ctx, stream, events, opts...)
	s.Notify()
	return r, err
}

func appendN(t *testing.T, s Store, stream, typ string, n int) {
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

func TestPollCatchUpThenLive(t *testing.T) {
	s := &notifyingStore{}
	appendN(t, s, "a", "T", 5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next, stop := iter.Pull2(Subscribe(ctx, s, recado.Position{}, WithBatchSize(2), WithPollInterval(time.Hour)))
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
	// With an hour-long poll interval, only the notification can deliver this.
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
	if _, err, ok := next(); !ok || !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: err = %v, ok = %v; want context.Canceled", err, ok)
	}
	if _, _, ok := next(); ok {
		t.Error("the sequence went on after its error")
	}
}

func TestPollFilterReportsProgress(t *testing.T) {
	s := &notifyingStore{}
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
			got := collect(t, Subscribe(context.Background(), s, recado.Position{}, WithFilter(tt.filter), WithBatchSize(4)),
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

func TestPollResumesAfterPosition(t *testing.T) {
	s := &logStore{}
	appendN(t, s, "a", "T", 10)
	got := collect(t, Subscribe(context.Background(), s, recado.NewPosition(7, 0)), func(m Message) bool { return m.Kind == KindCaughtUp })
	if k := kinds(got); k != "EEEC" || got[0].Position != recado.NewPosition(8, 0) {
		t.Errorf("resume after 7: kinds %s, first %v", k, got[0].Position)
	}
}

func TestPollWithoutNotifierPolls(t *testing.T) {
	s := &logStore{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan []Message)
	go func() {
		var got []Message
		for m, err := range Subscribe(ctx, s, recado.Position{}, WithPollInterval(time.Millisecond)) {
			if err != nil {
				break
			}
			got = append(got, m)
			if m.Kind == KindEvent {
				break
			}
		}
		done <- got
	}()
	appendN(t, s, "a", "T", 1)
	got := <-done
	if len(got) == 0 || got[len(got)-1].Kind != KindEvent {
		t.Fatalf("polling subscription got %s, want an event", kinds(got))
	}
}

func TestPollStoreError(t *testing.T) {
	s := &logStore{failAt: 1}
	appendN(t, s, "a", "T", 1)
	var errs []error
	for _, err := range Subscribe(context.Background(), s, recado.Position{}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || errs[0] == nil || errs[0].Error() != "disk on fire" {
		t.Errorf("errors = %v, want the store's one error", errs)
	}
}

func TestSignal(t *testing.T) {
	var s Signal
	s.Notify() // nobody waits: no effect
	a, b := s.Committed(), s.Committed()
	if a != b {
		t.Error("two waiters before a Notify got different channels")
	}
	select {
	case <-a:
		t.Fatal("closed before Notify")
	default:
	}
	s.Notify()
	<-a
	c := s.Committed()
	select {
	case <-c:
		t.Fatal("a channel taken after Notify is already closed")
	default:
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
