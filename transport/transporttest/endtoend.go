package transporttest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/transport"
)

// RunChaos runs the whole path through a misbehaving broker: events
// committed to a store go out through the outbox relay, whose publishes fail
// or lose their confirms, and come into an inbox consumer whose
// subscriptions drop, duplicate and reorder deliveries; at the end each
// event has had its effect exactly once. chaos says how often each fault
// happens; the zero Chaos uses 5% publish failures, 5% lost confirms, 2%
// dropped connections, 10% duplicates and 10% reorders.
func RunChaos(t *testing.T, tr Transport, chaos Chaos) {
	if chaos == (Chaos{}) {
		chaos = Chaos{FailPublish: 0.05, LostConfirm: 0.05, Drop: 0.02, Duplicate: 0.1, Reorder: 0.1}
	}
	if tr.Wait <= 0 {
		tr.Wait = 15 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := memory.New()
	t.Cleanup(func() { _ = db.Close() })
	store := db.Events()
	topic, group := Name("t"), Name("g")

	const streams, perStream = 20, 25
	const n = streams * perStream
	var handled atomic.Int64
	allDone := make(chan struct{})
	h := transport.Inbox(db, db.Inbox(inbox.Config{}), "chaos", func(ctx context.Context, tx *memory.Tx, m transport.Message) error {
		tx.OnCommit(func() {
			if handled.Add(1) == n {
				close(allDone)
			}
		})
		_, err := store.Append(ctx, "effect-"+m.ID, []recado.Event{recado.NewEvent("Effect", m.Data)}, eventstore.InTx(tx))
		return err
	})
	sub := &chaosSubscriber{s: tr.NewSubscriber(t), c: newChaos(chaos)}
	t.Cleanup(func() { _ = sub.Close() })
	pub := &chaosPublisher{p: tr.Publisher, c: newChaos(chaos)}
	c, err := transport.NewConsumer(sub, topic, group, h, transport.ConsumerConfig{
		DeadLetters: db.DeadLetters(deadletter.Config{}), MaxAttempts: 100, Workers: 4,
		Backoff: resilience.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The group exists before the relay publishes.
	first, err := tr.NewSubscriber(t).Subscribe(ctx, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	_ = first.Close()

	relay, err := transport.NewRelay(db, transport.RelayConfig{Store: store, Topic: topic, Batch: 16,
		Publisher: pub, Leases: db.Leases(lease.Config{}),
		Filter:  eventstore.Filter{StreamPrefixes: []string{"order-"}},
		Backoff: resilience.Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	runs := make(chan error, 2)
	go func() { runs <- c.Run(ctx) }()
	go func() { runs <- relay.Run(ctx) }()

	var ids []string
	for i := range perStream {
		for s := range streams {
			e := recado.NewEvent("OrderChanged", fmt.Appendf(nil, `{"n":%d}`, i))
			ids = append(ids, e.ID)
			if _, err := store.Append(ctx, fmt.Sprint("order-", s), []recado.Event{e}); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-allDone:
	case <-time.After(4 * tr.Wait):
		t.Fatalf("%d of %d events handled", handled.Load(), n)
	}
	// Let duplicates still in flight arrive, then stop.
	time.Sleep(200 * time.Millisecond)
	cancel()
	for range 2 {
		if err := <-runs; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	for _, id := range ids {
		effects := 0
		for _, err := range store.ReadStream(context.Background(), "effect-"+id) {
			if err != nil {
				t.Fatalf("effect of %s: %v", id, err)
			}
			effects++
		}
		if effects != 1 {
			t.Errorf("event %s had %d effects, want 1", id, effects)
		}
	}
	t.Logf("chaos made %s; %s", pub.c.made(), sub.c.made())
	if got := handled.Load(); got != n {
		t.Errorf("%d effects committed, want %d", got, n)
	}
}
