package transport_test

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
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/inproc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture is a memory DB and an in-process broker with one group
// subscribed to topic "events".
type fixture struct {
	db     *memory.DB
	broker *inproc.Broker
	sub    transport.Subscription
	leases *lease.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{db: memory.New(), broker: inproc.New()}
	f.leases = f.db.Leases(lease.Config{})
	t.Cleanup(func() { _ = f.broker.Close(); _ = f.db.Close() })
	sub, err := f.broker.Subscriber().Subscribe(context.Background(), "events", "g")
	if err != nil {
		t.Fatal(err)
	}
	f.sub = sub
	return f
}

func (f *fixture) append(t *testing.T, stream string, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		e := recado.NewEvent("Changed", []byte(`{}`))
		ids = append(ids, e.ID)
		if _, err := f.db.Events().Append(context.Background(), stream, []recado.Event{e}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// receive returns the IDs of the next n deliveries, acked.
func (f *fixture) receive(t *testing.T, n int) []transport.Delivery {
	t.Helper()
	var out []transport.Delivery
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := f.sub.Receive(ctx)
		cancel()
		if err != nil {
			t.Fatalf("after %d deliveries: %v", len(out), err)
		}
		_ = d.Ack(context.Background())
		out = append(out, d)
	}
	return out
}

func (f *fixture) relay(t *testing.T, holder string, cfg transport.RelayConfig) *transport.Relay {
	t.Helper()
	cfg.Store, cfg.Leases, cfg.Holder = f.db.Events(), f.leases, holder
	if cfg.Publisher == nil {
		cfg.Publisher = f.broker.Publisher()
	}
	if cfg.Topic == "" && cfg.Route == nil {
		cfg.Topic = "events"
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 300 * time.Millisecond
	}
	cfg.Backoff = resilience.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}
	r, err := transport.NewRelay(f.db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs r until the returned function is called, which waits for Run.
func run(t *testing.T, r interface{ Run(context.Context) error }) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func deliveredIDs(ds []transport.Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func TestRelayPublishesCommittedEvents(t *testing.T) {
	f := newFixture(t)
	a := f.append(t, "order-1", 300) // more than a batch, before the relay starts
	checkpointed := make(chan int, 100)
	stop := run(t, f.relay(t, "r1", transport.RelayConfig{Batch: 64, OnPublished: func(e []recado.Event) { checkpointed <- len(e) }}))
	got := f.receive(t, 300)
	b := f.append(t, "order-2", 5) // while it runs
	got = append(got, f.receive(t, 5)...)
	for n := 0; n < 305; n += <-checkpointed {
	}
	stop()
	if want := append(a, b...); !slices.Equal(deliveredIDs(got), want) {
		t.Fatalf("delivered %d events out of order or not all", len(got))
	}
	d := got[301]
	if d.Key != "order-2" || d.Version != 2 || d.Type != "Changed" || string(d.Data) != "{}" || d.Time.IsZero() {
		t.Errorf("message %+v: want the event's stream as key, its version, type, data and time", d.Message)
	}
	cp, err := transport.StreamCheckpoints(f.db.Events()).Load(context.Background(), "relay")
	if err != nil {
		t.Fatal(err)
	}
	var last recado.Position
	for e, err := range f.db.Events().ReadStream(context.Background(), "order-2", eventstore.Backwards(), eventstore.Limit(1)) {
		if err != nil {
			t.Fatal(err)
		}
		last = e.Position
	}
	if cp != last {
		t.Errorf("checkpoint %v, want the last event's position %v", cp, last)
	}
}

// A relay started again resumes after its checkpoint: nothing is published
// twice after a clean stop.
func TestRelayResumesFromCheckpoint(t *testing.T) {
	f := newFixture(t)
	a := f.append(t, "s", 50)
	checkpointed := make(chan int, 10)
	stop := run(t, f.relay(t, "r1", transport.RelayConfig{OnPublished: func(e []recado.Event) { checkpointed <- len(e) }}))
	f.receive(t, 50)
	for n := 0; n < 50; n += <-checkpointed {
	}
	stop()
	b := f.append(t, "s", 10)
	run(t, f.relay(t, "r2", transport.RelayConfig{}))
	got := f.receive(t, 10)
	if !slices.Equal(deliveredIDs(got), b) {
		t.Fatalf("after a restart: %v, want only the new events %v (not %v again)", deliveredIDs(got), b, a[:3])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if d, err := f.sub.Receive(ctx); err == nil {
		t.Errorf("published again: %s", d.ID)
	}
}

// A standby takes over when the active relay's lease ends; the former
// holder cannot checkpoint any more.
func TestRelayStandbyTakesOver(t *testing.T) {
	f := newFixture(t)
	// A relay that died holding the lease.
	dead, err := f.leases.Acquire(context.Background(), "relay", "dead", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ids := f.append(t, "s", 20)
	var mu sync.Mutex
	published := map[string]int{}
	count := func(events []recado.Event) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			published[e.Position.String()]++
		}
	}
	stops := map[string]func(){
		"r1": run(t, f.relay(t, "r1", transport.RelayConfig{OnPublished: count})),
		"r2": run(t, f.relay(t, "r2", transport.RelayConfig{OnPublished: count})),
	}
	if got := deliveredIDs(f.receive(t, 20)); !slices.Equal(got, ids) {
		t.Fatalf("got %v, want %v", got, ids)
	}
	// The dead holder's token is stale: its writes are refused.
	err = f.db.Tx(context.Background(), func(tx *memory.Tx) error { return f.leases.Guard(context.Background(), tx, dead) })
	if !errors.Is(err, lease.ErrLost) {
		t.Errorf("Guard with the dead relay's lease: %v, want ErrLost", err)
	}
	l, err := f.leases.Get(context.Background(), "relay")
	if err != nil {
		t.Fatal(err)
	}
	// Stop the active relay; the standby takes over.
	standby := map[string]string{"r1": "r2", "r2": "r1"}[l.Holder]
	stops[l.Holder]()
	more := f.append(t, "s", 5)
	if got := deliveredIDs(f.receive(t, 5)); !slices.Equal(got, more) {
		t.Fatalf("after the active relay stopped: %v, want %v", got, more)
	}
	if l2, _ := f.leases.Get(context.Background(), "relay"); l2.Holder != standby || l2.Token <= l.Token {
		t.Errorf("lease %+v after the take-over, want %s with a token above %d", l2, standby, l.Token)
	}
	mu.Lock()
	defer mu.Unlock()
	for pos, n := range published {
		if n != 1 {
			t.Errorf("event at %s published %d times", pos, n)
		}
	}
}

// While the broker is down the relay retries; it loses nothing.
func TestRelayOutage(t *testing.T) {
	f := newFixture(t)
	p := transport.Guard(f.broker.Publisher(), transport.GuardConfig{})
	run(t, f.relay(t, "r1", transport.RelayConfig{Publisher: p}))
	a := f.append(t, "s", 3)
	f.receive(t, 3)
	f.broker.SetDown(true)
	b := f.append(t, "s", 7)
	time.Sleep(100 * time.Millisecond) // the relay fails and retries meanwhile
	f.broker.SetDown(false)
	if got := deliveredIDs(f.receive(t, 7)); !slices.Equal(got, b) {
		t.Fatalf("after the outage: %v, want %v (after %v)", got, b, a)
	}
}

// Route sends each event to its topic, in order within each topic.
func TestRelayRoute(t *testing.T) {
	f := newFixture(t)
	other, err := f.broker.Subscriber().Subscribe(context.Background(), "payments", "g")
	if err != nil {
		t.Fatal(err)
	}
	route := func(e *recado.Event) string {
		if e.Stream == "payment-1" {
			return "payments"
		}
		return "events"
	}
	run(t, f.relay(t, "r1", transport.RelayConfig{Route: route}))
	var orders, payments []string
	for i := range 6 {
		if i%2 == 0 {
			orders = append(orders, f.append(t, "order-1", 1)...)
		} else {
			payments = append(payments, f.append(t, "payment-1", 1)...)
		}
	}
	if got := deliveredIDs(f.receive(t, 3)); !slices.Equal(got, orders) {
		t.Errorf("events: %v, want %v", got, orders)
	}
	for i, want := range payments {
		d, err := other.Receive(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if d.ID != want {
			t.Errorf("payments[%d] = %s, want %s", i, d.ID, want)
		}
	}
}

func TestNewRelayInvalid(t *testing.T) {
	db := memory.New()
	defer db.Close()
	b := inproc.New()
	defer b.Close()
	ok := transport.RelayConfig{Store: db.Events(), Publisher: b.Publisher(), Leases: db.Leases(lease.Config{}), Topic: "t"}
	for i, cfg := range []transport.RelayConfig{
		{Publisher: ok.Publisher, Leases: ok.Leases, Topic: "t"},
		{Store: ok.Store, Leases: ok.Leases, Topic: "t"},
		{Store: ok.Store, Publisher: ok.Publisher, Topic: "t"},
		{Store: ok.Store, Publisher: ok.Publisher, Leases: ok.Leases},
		{Store: ok.Store, Publisher: ok.Publisher, Leases: ok.Leases, Topic: "a.b"},
		{Store: ok.Store, Publisher: ok.Publisher, Leases: ok.Leases, Topic: "t", Batch: -1},
	} {
		if _, err := transport.NewRelay(db, cfg); !errors.Is(err, transport.ErrInvalid) {
			t.Errorf("config %d: %v, want ErrInvalid", i, err)
		}
	}
	if _, err := transport.NewRelay(db, ok); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
