package transport_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/inproc"
)

// The whole path in one process: the ordering service commits an event,
// the outbox relay publishes it, and the stock service handles it through
// its inbox, so the copy the broker delivers again has no second effect.
// Swap inproc for transport/nats (or RabbitMQ, Kafka) and nothing else
// changes.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := memory.New() // the ordering and stock services' DB; sqlite.Open or postgres.New in production
	defer db.Close()
	broker := inproc.New()
	defer broker.Close()

	// The stock service: reserve stock once per order placed.
	reserved := make(chan string, 10)
	reserve := transport.Inbox(db, db.Inbox(inbox.Config{}), "stock", func(ctx context.Context, tx *memory.Tx, m transport.Message) error {
		_, err := db.Events().Append(ctx, "stock-"+m.Key, []recado.Event{recado.NewEvent("StockReserved", m.Data)}, eventstore.InTx(tx))
		tx.OnCommit(func() { reserved <- m.Key })
		return err
	})
	stock, _ := transport.NewConsumer(broker.Subscriber(), "orders", "stock", reserve,
		transport.ConsumerConfig{DeadLetters: db.DeadLetters(deadletter.Config{})})
	// Subscribe once before publishing, so the group exists (a deployment
	// step with most brokers).
	s, _ := broker.Subscriber().Subscribe(ctx, "orders", "stock")
	_ = s.Close()

	// The outbox relay of the ordering service.
	relay, _ := transport.NewRelay(db, transport.RelayConfig{Store: db.Events(), Topic: "orders",
		Filter:    eventstore.Filter{StreamPrefixes: []string{"order-"}},
		Publisher: transport.Guard(broker.Publisher(), transport.GuardConfig{}), Leases: db.Leases(lease.Config{})})

	done := make(chan struct{}, 2)
	go func() { _ = stock.Run(ctx); done <- struct{}{} }()
	go func() { _ = relay.Run(ctx); done <- struct{}{} }()

	placed := recado.NewEvent("OrderPlaced", []byte(`{"sku":"SKU-1","qty":2}`))
	_, _ = db.Events().Append(ctx, "order-42", []recado.Event{placed})
	fmt.Println("reserved for", <-reserved)

	// The broker delivers the message again (a lost ack, say): no effect.
	_ = broker.Publisher().Publish(ctx, "orders", transport.MessageOf(placed))
	time.Sleep(50 * time.Millisecond)
	n := 0
	for range db.Events().ReadStream(ctx, "stock-order-42") {
		n++
	}
	fmt.Println("reservations:", n)
	cancel()
	<-done
	<-done
	// Output:
	// reserved for order-42
	// reservations: 1
}

// While the broker is down, publishes through Guard fail at once, with an
// error that says so, instead of each waiting for its own timeout.
func ExampleGuard() {
	broker := inproc.New()
	defer broker.Close()
	breaker, _ := resilience.NewBreaker(resilience.BreakerConfig{WindowSize: 4, MinCalls: 2})
	p := transport.Guard(broker.Publisher(), transport.GuardConfig{Breaker: breaker})

	broker.SetDown(true)
	for range 3 {
		err := p.Publish(context.Background(), "orders", transport.Message{ID: recado.NewID()})
		fmt.Println(errors.Is(err, transport.ErrUnavailable), errors.Is(err, resilience.ErrOpen))
	}
	// Output:
	// true false
	// true false
	// true true
}
