package rabbitmq_test

import (
	"context"
	"log"

	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/rabbitmq"
)

// A publisher and a consumer group on RabbitMQ. (It needs a broker at the
// URL, so it is compiled, not run, by go test.)
func Example() {
	ctx := context.Background()
	opts := rabbitmq.Options{URL: "amqp://guest:guest@127.0.0.1:5672/"}
	pub, err := rabbitmq.NewPublisher(ctx, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	sub, err := rabbitmq.NewSubscriber(ctx, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	// The group's queue keeps what is published once it exists: make it
	// at deployment, before anything is published.
	s, err := sub.Subscribe(ctx, "orders", "stock")
	if err != nil {
		log.Fatal(err)
	}
	_ = s.Close()

	orders := transport.Guard(pub, transport.GuardConfig{})
	if err := orders.Publish(ctx, "orders", transport.Message{ID: "evt-1", Key: "order-42", Type: "OrderPlaced",
		Data: []byte(`{"qty":2}`)}); err != nil {
		log.Fatal(err) // not confirmed: publish again with the same ID
	}

	db := memory.New() // sqlite.Open or postgres.New in production
	defer db.Close()
	stock, err := transport.NewConsumer(sub, "orders", "stock", func(ctx context.Context, m transport.Message) error {
		log.Printf("reserve stock for %s", m.Key)
		return nil
	}, transport.ConsumerConfig{DeadLetters: db.DeadLetters(deadletter.Config{})})
	if err != nil {
		log.Fatal(err)
	}
	_ = stock.Run(ctx) // until ctx ends
}
