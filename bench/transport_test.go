package bench

// Side by side on NATS JetStream: recado's transport/nats against
// Watermill's NATS pub/sub (watermill-nats/v2 pkg/nats with JetStream), on
// one embedded nats-server started by recado, in the same run. Messages
// carry 256 bytes of JSON.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/nats"
)

var payload = []byte(`{"order_id":"order-0000000042","customer":"customer-0000007","lines":[{"sku":"SKU-000001","qty":2,"price":1999},{"sku":"SKU-000002","qty":1,"price":4999}],"currency":"EUR","total":8997,"note":"leave at the door, ring twice, thank you!!!!!!!!"}`)

func topicName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func natsServer(b *testing.B) *nats.Broker {
	br, err := nats.Open(context.Background(), nats.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close() })
	return br
}

func recadoMessages(n int) []transport.Message {
	msgs := make([]transport.Message, n)
	for i := range msgs {
		msgs[i] = transport.Message{ID: recado.NewID(), Key: "order-42", Type: "OrderPlaced", Data: payload}
	}
	return msgs
}

func wmMessages(n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
		msgs[i].Metadata.Set("type", "OrderPlaced")
	}
	return msgs
}

func wmPublisher(b *testing.B, url string) *wmnats.Publisher {
	p, err := wmnats.NewPublisher(wmnats.PublisherConfig{URL: url, Marshaler: &wmnats.NATSMarshaler{},
		JetStream: wmnats.JetStreamConfig{AutoProvision: true, TrackMsgId: true}}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p
}

func wmSubscriber(b *testing.B, url string, ackAsync bool) *wmnats.Subscriber {
	s, err := wmnats.NewSubscriber(wmnats.SubscriberConfig{URL: url, QueueGroupPrefix: "g", SubscribersCount: 1,
		AckWaitTimeout: 30 * time.Second, Unmarshaler: &wmnats.NATSMarshaler{},
		JetStream: wmnats.JetStreamConfig{AutoProvision: true, DurablePrefix: "g", AckAsync: ackAsync,
			SubscribeOptions: []natsgo.SubOpt{natsgo.DeliverAll(), natsgo.AckExplicit()}}}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkNATSPublish: publishes confirmed by the server, one message per
// call (each waits for its acknowledgement), and 256 per call.
func BenchmarkNATSPublish(b *testing.B) {
	br := natsServer(b)
	for _, per := range []int{1, 256} {
		name := "One"
		if per > 1 {
			name = "Batch256"
		}
		b.Run(name+"/recado", func(b *testing.B) {
			p, err := br.Publisher()
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			topic := topicName("r")
			msgs := recadoMessages(b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i += per {
				if err := p.Publish(context.Background(), topic, msgs[i:min(i+per, b.N)]...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(name+"/watermill", func(b *testing.B) {
			p := wmPublisher(b, br.URL())
			topic := topicName("w")
			msgs := wmMessages(b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i += per {
				if err := p.Publish(topic, msgs[i:min(i+per, b.N)]...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkNATSConsume: b.N messages published before the timer, then
// received and acked, one at a time: recado through a Consumer (its
// handler does nothing), Watermill through its subscriber's channel.
func BenchmarkNATSConsume(b *testing.B) {
	br := natsServer(b)
	b.Run("recado", func(b *testing.B) {
		topic := topicName("r")
		s, err := br.Subscriber()
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		first, err := s.Subscribe(context.Background(), topic, "g")
		if err != nil {
			b.Fatal(err)
		}
		_ = first.Close()
		p, err := br.Publisher()
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		msgs := recadoMessages(b.N)
		for i := 0; i < b.N; i += 256 {
			if err := p.Publish(context.Background(), topic, msgs[i:min(i+256, b.N)]...); err != nil {
				b.Fatal(err)
			}
		}
		db := memory.New()
		defer db.Close()
		n, done := 0, make(chan struct{})
		c, err := transport.NewConsumer(s, topic, "g", func(context.Context, transport.Message) error {
			if n++; n == b.N {
				close(done)
			}
			return nil
		}, transport.ConsumerConfig{DeadLetters: db.DeadLetters(deadletter.Config{})})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		b.ResetTimer()
		errc := make(chan error, 1)
		go func() { errc <- c.Run(ctx) }()
		<-done
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		cancel()
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	})
	// Watermill acks synchronously by default (it waits for the server's
	// reply); recado's Ack does not wait, like Watermill's AckAsync.
	for _, async := range []bool{false, true} {
		name := "watermill"
		if async {
			name = "watermill-AckAsync"
		}
		b.Run(name, func(b *testing.B) { wmConsume(b, br, async) })
	}
}

func wmConsume(b *testing.B, br *nats.Broker, async bool) {
	{
		topic := topicName("w")
		s := wmSubscriber(b, br.URL(), async)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := s.Subscribe(ctx, topic) // makes the stream and the durable consumer
		if err != nil {
			b.Fatal(err)
		}
		p := wmPublisher(b, br.URL())
		msgs := wmMessages(b.N)
		for i := 0; i < b.N; i += 256 {
			if err := p.Publish(topic, msgs[i:min(i+256, b.N)]...); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		for range b.N {
			select {
			case m := <-ch:
				m.Ack()
			case <-time.After(30 * time.Second):
				b.Fatal("no message within 30 s")
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}
}
