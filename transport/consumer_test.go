package transport_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/inproc"
)

func consumer(t *testing.T, b *inproc.Broker, db *memory.DB, h transport.Handler, cfg transport.ConsumerConfig) *transport.Consumer {
	t.Helper()
	if cfg.DeadLetters == nil {
		cfg.DeadLetters = db.DeadLetters(deadletter.Config{})
	}
	cfg.Backoff = resilience.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}
	cfg.RetryBackoff = cfg.Backoff
	c, err := transport.NewConsumer(b.Subscriber(), "events", "g", h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The group exists before anything is published.
	s, err := b.Subscriber().Subscribe(context.Background(), "events", "g")
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	return c
}

func publish(t *testing.T, b *inproc.Broker, msgs ...transport.Message) {
	t.Helper()
	if err := b.Publisher().Publish(context.Background(), "events", msgs...); err != nil {
		t.Fatal(err)
	}
}

func letters(t *testing.T, db *memory.DB, source string, n int) []deadletter.Letter {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls, err := db.DeadLetters(deadletter.Config{}).List(context.Background(), deadletter.Query{Source: source})
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) >= n || time.Now().After(deadline) {
			return ls
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A permanent error dead-letters at once; a panic is a failure like any
// other, retried in the consumer, then by the broker, then dead-lettered.
func TestConsumerPermanentAndPanic(t *testing.T) {
	b, db := inproc.New(), memory.New()
	defer db.Close()
	defer b.Close()
	var calls atomic.Int32
	h := func(ctx context.Context, m transport.Message) error {
		calls.Add(1)
		if m.ID == "bad" {
			return resilience.MarkPermanent(errors.New("cannot decode"))
		}
		panic("boom")
	}
	c := consumer(t, b, db, h, transport.ConsumerConfig{MaxAttempts: 2, Retries: 1, Unordered: true})
	stop := run(t, c)
	publish(t, b, transport.Message{ID: "bad", Key: "k"}, transport.Message{ID: "panics", Key: "k"})
	ls := letters(t, db, c.Source(), 2)
	stop()
	if len(ls) != 2 {
		t.Fatalf("letters %+v, want 2", ls)
	}
	if l := ls[0]; l.Message.ID != "bad" || l.Attempts != 1 || l.Class != resilience.ClassPermanent || l.Key != "" {
		t.Errorf("letter %+v: want bad, permanent, after 1 attempt, no key (Unordered)", l)
	}
	if l := ls[1]; l.Message.ID != "panics" || l.Attempts != 2 || !strings.Contains(l.Error, "panicked: boom") {
		t.Errorf("letter %+v: want panics after 2 attempts with the panic's text", l)
	}
	// bad once; panics twice per delivery (a retry in the consumer) for 2 deliveries.
	if got := calls.Load(); got != 1+2*2 {
		t.Errorf("handler called %d times, want 5", got)
	}
}

// Run lets the handler under way finish when its context ends, and acks
// its message: it is not delivered again.
func TestConsumerGracefulStop(t *testing.T) {
	b, db := inproc.New(), memory.New()
	defer db.Close()
	defer b.Close()
	started, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	h := func(ctx context.Context, m transport.Message) error {
		close(started)
		<-release
		finished.Store(ctx.Err() == nil)
		return nil
	}
	c := consumer(t, b, db, h, transport.ConsumerConfig{})
	stop := run(t, c)
	publish(t, b, transport.Message{ID: "m1"})
	<-started
	go func() { time.Sleep(50 * time.Millisecond); close(release) }()
	stop() // returns once the handler is done
	if !finished.Load() {
		t.Fatal("the handler's context ended before it finished")
	}
	s, err := b.Subscriber().Subscribe(context.Background(), "events", "g")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if d, err := s.Receive(ctx); err == nil {
		t.Errorf("%s delivered again after it was handled", d.ID)
	}
}

func TestConsumerRunTwice(t *testing.T) {
	b, db := inproc.New(), memory.New()
	defer db.Close()
	defer b.Close()
	c := consumer(t, b, db, func(context.Context, transport.Message) error { return nil }, transport.ConsumerConfig{})
	stop := run(t, c)
	time.Sleep(20 * time.Millisecond)
	if err := c.Run(context.Background()); err == nil {
		t.Error("a second Run at the same time succeeded")
	}
	stop()
}

// A closed Subscriber ends Run with ErrClosed: nothing can mend it.
func TestConsumerSubscriberClosed(t *testing.T) {
	b, db := inproc.New(), memory.New()
	defer db.Close()
	defer b.Close()
	sub := b.Subscriber()
	_ = sub.Close()
	c, err := transport.NewConsumer(sub, "events", "g", func(context.Context, transport.Message) error { return nil },
		transport.ConsumerConfig{DeadLetters: db.DeadLetters(deadletter.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Run: %v, want ErrClosed", err)
	}
}

func TestNewConsumerInvalid(t *testing.T) {
	b, db := inproc.New(), memory.New()
	defer db.Close()
	defer b.Close()
	h := func(context.Context, transport.Message) error { return nil }
	dl := db.DeadLetters(deadletter.Config{})
	for i, tc := range []struct {
		sub          transport.Subscriber
		topic, group string
		h            transport.Handler
		cfg          transport.ConsumerConfig
	}{
		{nil, "t", "g", h, transport.ConsumerConfig{DeadLetters: dl}},
		{b.Subscriber(), "t", "g", nil, transport.ConsumerConfig{DeadLetters: dl}},
		{b.Subscriber(), "t", "g", h, transport.ConsumerConfig{}},
		{b.Subscriber(), "t.x", "g", h, transport.ConsumerConfig{DeadLetters: dl}},
		{b.Subscriber(), "t", "", h, transport.ConsumerConfig{DeadLetters: dl}},
		{b.Subscriber(), "t", "g", h, transport.ConsumerConfig{DeadLetters: dl, MaxAttempts: -1}},
		{b.Subscriber(), "t", "g", h, transport.ConsumerConfig{DeadLetters: dl, Backoff: resilience.Backoff{Multiplier: 0.5}}},
	} {
		if _, err := transport.NewConsumer(tc.sub, tc.topic, tc.group, tc.h, tc.cfg); !errors.Is(err, transport.ErrInvalid) {
			t.Errorf("case %d: %v, want ErrInvalid", i, err)
		}
	}
}

// A message delivered twice has one effect; an effect that fails rolls back
// its claim, so the next delivery runs it.
func TestInbox(t *testing.T) {
	db := memory.New()
	defer db.Close()
	store := db.Events()
	fail := true
	h := transport.Inbox(db, db.Inbox(inbox.Config{}), "billing", func(ctx context.Context, tx *memory.Tx, m transport.Message) error {
		if _, err := store.Append(ctx, "invoice-"+m.ID, []recado.Event{recado.NewEvent("Invoiced", nil)}, eventstore.InTx(tx)); err != nil {
			return err
		}
		if fail {
			return errors.New("payment service down")
		}
		return nil
	})
	ctx := context.Background()
	m := transport.Message{ID: "order-7-placed"}
	if err := h(ctx, m); err == nil {
		t.Fatal("the failing effect returned nil")
	}
	fail = false
	for range 3 {
		if err := h(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, err := range store.ReadStream(ctx, "invoice-"+m.ID) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("%d invoices, want 1", n)
	}
}

type failingPublisher struct{ err error }

func (p failingPublisher) Publish(context.Context, string, ...transport.Message) error { return p.err }
func (p failingPublisher) Close() error                                                { return nil }

func TestGuard(t *testing.T) {
	ctx := context.Background()
	br, err := resilience.NewBreaker(resilience.BreakerConfig{WindowSize: 4, MinCalls: 2, OpenPeriod: resilience.Backoff{Initial: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	down := errors.New("connection refused")
	p := transport.Guard(failingPublisher{down}, transport.GuardConfig{Breaker: br})
	m := transport.Message{ID: "m"}
	for i := range 2 {
		if err := p.Publish(ctx, "t", m); !errors.Is(err, down) {
			t.Fatalf("publish %d: %v, want the broker's error", i, err)
		}
	}
	err = p.Publish(ctx, "t", m)
	if !errors.Is(err, transport.ErrUnavailable) || !errors.Is(err, resilience.ErrOpen) {
		t.Fatalf("publish with the breaker open: %v, want ErrUnavailable and ErrOpen", err)
	}
	var te *transport.Error
	if !errors.As(err, &te) || te.Op != "publish" || te.Topic != "t" {
		t.Errorf("error %#v: want a *transport.Error naming publish and the topic", err)
	}
	// A closed publisher says nothing of the broker: it does not trip.
	br2, _ := resilience.NewBreaker(resilience.BreakerConfig{WindowSize: 4, MinCalls: 2})
	closed := transport.Guard(failingPublisher{transport.ErrClosed}, transport.GuardConfig{Breaker: br2})
	for range 5 {
		if err := closed.Publish(ctx, "t", m); !errors.Is(err, transport.ErrClosed) {
			t.Fatalf("closed publisher: %v, want ErrClosed", err)
		}
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	m := transport.Message{ID: "id-1", Key: "order-1", Type: "Placed", Version: 3,
		Metadata: recado.Metadata{CorrelationID: "c", Fields: map[string]string{"a b": "ü"}},
		Time:     time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)}
	h := map[string]string{}
	m.WriteHeaders(func(k, v string) { h[k] = v })
	got, err := transport.ReadHeaders(func(k string) string { return h[k] }, []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || got.Key != m.Key || got.Type != m.Type || got.Version != m.Version || !got.Time.Equal(m.Time) ||
		got.Metadata.CorrelationID != "c" || got.Metadata.Fields["a b"] != "ü" || string(got.Data) != "data" {
		t.Errorf("got %+v, want %+v", got, m)
	}
	for _, bad := range []map[string]string{
		{},
		{transport.HeaderID: "x", transport.HeaderVersion: "-1"},
		{transport.HeaderID: "x", transport.HeaderTime: "yesterday"},
		{transport.HeaderID: "x", transport.HeaderMetadata: "[1]"},
	} {
		if _, err := transport.ReadHeaders(func(k string) string { return bad[k] }, nil); !errors.Is(err, transport.ErrInvalid) {
			t.Errorf("headers %v: %v, want ErrInvalid", bad, err)
		}
	}
}
