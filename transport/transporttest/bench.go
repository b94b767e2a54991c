package transporttest

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/transport"
)

// benchData is the ~256-byte JSON body of every benchmark message, as in the
// event store's shared benchmarks.
var benchData = []byte(`{"order_id":"order-0000000042","customer":"customer-0000007","lines":[{"sku":"SKU-000001","qty":2,"price":1999},{"sku":"SKU-000002","qty":1,"price":4999}],"currency":"EUR","total":8997,"note":"leave at the door, ring twice, thank you!!!!!!!!"}`)

var benchMeta = recado.Metadata{CorrelationID: "0190f1a2-7c3d-7e4f-8a5b-6c7d8e9f0a1b", CausationID: "0190f1a2-7c3d-7e4f-8a5b-6c7d8e9f0a1c"}

// Bench runs the shared benchmarks of a broker:
//
//   - Relay: events committed to a memory store before the timer, published
//     by the outbox relay in batches of 256 and checkpointed after each
//     confirm: events/s;
//   - Consume/Workers=N: messages published before the timer, handled by a
//     Consumer with a handler that does nothing and acked: msgs/s;
//   - EndToEnd: one event at a time committed to the store, relayed,
//     delivered and handled; the time from the append's return to the
//     handler's call: p50-ms and p99-ms.
func Bench(b *testing.B, newTransport func(tb testing.TB) Transport) {
	b.Run("Relay", func(b *testing.B) { benchRelay(b, newTransport(b)) })
	for _, w := range []int{1, 4} {
		b.Run(fmt.Sprintf("Consume/Workers=%d", w), func(b *testing.B) { benchConsume(b, newTransport(b), w) })
	}
	b.Run("EndToEnd", func(b *testing.B) { benchEndToEnd(b, newTransport(b)) })
}

func group(b *testing.B, tr Transport, topic, group string) transport.Subscription {
	s := tr.NewSubscriber(b)
	b.Cleanup(func() { _ = s.Close() })
	sub, err := s.Subscribe(context.Background(), topic, group)
	if err != nil {
		b.Fatal(err)
	}
	return sub
}

func benchRelay(b *testing.B, tr Transport) {
	topic := Name("t")
	_ = group(b, tr, topic, "g").Close() // the group keeps what is published
	db := memory.New()
	b.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	batch := make([]recado.Event, 0, 100)
	for i := range b.N {
		e := recado.NewEvent("OrderPlaced", benchData)
		e.Metadata = benchMeta
		batch = append(batch, e)
		if len(batch) == cap(batch) || i == b.N-1 {
			if _, err := db.Events().Append(ctx, fmt.Sprint("order-", i), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	var published atomic.Int64
	done := make(chan struct{})
	relay, err := transport.NewRelay(db, transport.RelayConfig{Store: db.Events(), Publisher: tr.Publisher, Topic: topic,
		Leases: db.Leases(lease.Config{}), OnPublished: func(events []recado.Event) {
			if published.Add(int64(len(events))) == int64(b.N) {
				close(done)
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	b.ResetTimer()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- relay.Run(rctx) }()
	<-done
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

func benchConsume(b *testing.B, tr Transport, workers int) {
	topic := Name("t")
	_ = group(b, tr, topic, "g").Close()
	ctx := context.Background()
	msgs := make([]transport.Message, 0, 256)
	for i := range b.N {
		msgs = append(msgs, transport.Message{ID: recado.NewID(), Key: fmt.Sprint("order-", i%64), Type: "OrderPlaced",
			Data: benchData, Metadata: benchMeta})
		if len(msgs) == cap(msgs) || i == b.N-1 {
			if err := tr.Publisher.Publish(ctx, topic, msgs...); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	db := memory.New()
	b.Cleanup(func() { _ = db.Close() })
	var handled atomic.Int64
	done := make(chan struct{})
	h := func(context.Context, transport.Message) error {
		if handled.Add(1) == int64(b.N) {
			close(done)
		}
		return nil
	}
	s := tr.NewSubscriber(b)
	b.Cleanup(func() { _ = s.Close() })
	c, err := transport.NewConsumer(s, topic, "g", h, transport.ConsumerConfig{
		DeadLetters: db.DeadLetters(deadletter.Config{}), Workers: workers})
	if err != nil {
		b.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	b.ResetTimer()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(cctx) }()
	<-done
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

func benchEndToEnd(b *testing.B, tr Transport) {
	topic := Name("t")
	_ = group(b, tr, topic, "g").Close()
	db := memory.New()
	b.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 1)
	h := func(_ context.Context, m transport.Message) error {
		got <- m.ID
		return nil
	}
	s := tr.NewSubscriber(b)
	b.Cleanup(func() { _ = s.Close() })
	c, err := transport.NewConsumer(s, topic, "g", h, transport.ConsumerConfig{DeadLetters: db.DeadLetters(deadletter.Config{})})
	if err != nil {
		b.Fatal(err)
	}
	relay, err := transport.NewRelay(db, transport.RelayConfig{Store: db.Events(), Publisher: tr.Publisher, Topic: topic,
		Leases: db.Leases(lease.Config{})})
	if err != nil {
		b.Fatal(err)
	}
	errc := make(chan error, 2)
	go func() { errc <- c.Run(ctx) }()
	go func() { errc <- relay.Run(ctx) }()
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		e := recado.NewEvent("OrderPlaced", benchData)
		e.Metadata = benchMeta
		if _, err := db.Events().Append(ctx, fmt.Sprint("order-", i), []recado.Event{e}); err != nil {
			b.Fatal(err)
		}
		committed := time.Now()
		select {
		case id := <-got:
			if id != e.ID {
				b.Fatalf("handled %s, want %s", id, e.ID)
			}
		case <-time.After(30 * time.Second):
			b.Fatal("not handled within 30 s")
		}
		latencies = append(latencies, time.Since(committed))
	}
	b.StopTimer()
	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(latencies)
	q := func(p float64) float64 {
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]) / 1e6
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
