package kafka_test

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/kafka"
)

// A publisher and a consumer group on Kafka; here an in-process fake
// cluster stands in for the brokers' addresses.
func Example() {
	cluster, _ := kfake.NewCluster(kfake.NumBrokers(1))
	defer cluster.Close()
	opts := kafka.Options{Brokers: cluster.ListenAddrs()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pub, _ := kafka.NewPublisher(opts)
	defer pub.Close()
	orders := transport.Guard(pub, transport.GuardConfig{})
	// A new group starts at the oldest record: this one reaches it.
	_ = orders.Publish(ctx, "orders", transport.Message{ID: "evt-1", Key: "order-42", Type: "OrderPlaced", Data: []byte(`{"qty":2}`)})

	sub, _ := kafka.NewSubscriber(opts)
	defer sub.Close()
	db := memory.New()
	defer db.Close()
	handled := make(chan transport.Message)
	stock, _ := transport.NewConsumer(sub, "orders", "stock", func(ctx context.Context, m transport.Message) error {
		handled <- m
		return nil
	}, transport.ConsumerConfig{DeadLetters: db.DeadLetters(deadletter.Config{})})
	done := make(chan error)
	go func() { done <- stock.Run(ctx) }()

	m := <-handled
	fmt.Println(m.Type, m.Key, string(m.Data))
	cancel()
	fmt.Println("Run:", <-done)
	// Output:
	// OrderPlaced order-42 {"qty":2}
	// Run: <nil>
}
