package bench

// Transports: RabbitMQ (recado's transport/rabbitmq and watermill-amqp, on
// the same broker, in the same run) and Kafka (recado's transport/kafka on
// franz-go's in-process fake cluster, kfake). Every message carries 256
// bytes of data. Names are lib=…/… for benchstat -col /lib.
//
// The RabbitMQ benchmarks need RECADO_TEST_AMQP (.ci/run sets it); each
// makes its own exchange and queue and deletes them.

import (
	"context"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/kafka"
	"github.com/recado-dev/recado/transport/rabbitmq"
	"github.com/recado-dev/recado/transport/transporttest"
)

var data256 = func() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

func amqpURL(b *testing.B) string {
	u := os.Getenv("RECADO_TEST_AMQP")
	if u == "" {
		b.Skip("RECADO_TEST_AMQP is not set")
	}
	return u
}

// publisher is what the publish benchmarks drive: one call sends n
// messages and returns once sent (and confirmed, where the library
// confirms).
type publisher interface {
	publish(n int) error
	close()
}

type recadoPub struct {
	p     transport.Publisher
	topic string
}

func (r recadoPub) publish(n int) error {
	msgs := make([]transport.Message, n)
	for i := range msgs {
		msgs[i] = transport.Message{ID: recado.NewID(), Key: "k", Type: "Bench", Data: data256}
	}
	return r.p.Publish(context.Background(), r.topic, msgs...)
}

func (r recadoPub) close() { _ = r.p.Close() }

type watermillPub struct {
	p     *wamqp.Publisher
	topic string
}

func (w watermillPub) publish(n int) error {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), data256)
	}
	return w.p.Publish(w.topic, msgs...)
}

func (w watermillPub) close() { _ = w.p.Close() }

// rabbitTopology declares a fanout exchange with one durable queue bound to
// it (of the given type), and deletes both when b ends; the messages go
// to disk, as they would with a consumer group waiting.
func rabbitTopology(b *testing.B, u, exchange, queue, queueType string) {
	conn, err := amqp.Dial(u)
	if err != nil {
		b.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.ExchangeDeclare(exchange, "fanout", true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: queueType}); err != nil {
		b.Fatal(err)
	}
	if err := ch.QueueBind(queue, "", exchange, false, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
		_ = conn.Close()
	})
}

func newRecadoRabbit(b *testing.B, u, queueType string) publisher {
	topic := transporttest.Name("bench")
	rabbitTopology(b, u, "recado."+topic, "recado."+topic+".q", queueType)
	p, err := rabbitmq.NewPublisher(context.Background(), rabbitmq.Options{URL: u})
	if err != nil {
		b.Fatal(err)
	}
	return recadoPub{p: p, topic: topic}
}

func watermillConfig(u string, confirm bool) wamqp.Config {
	cfg := wamqp.NewDurablePubSubConfig(u, wamqp.GenerateQueueNameTopicNameWithSuffix("q"))
	cfg.Publish.ConfirmDelivery = confirm
	cfg.Publish.ChannelPoolSize = 16 // without a pool, each Publish opens a channel of its own
	cfg.Consume.Qos.PrefetchCount = 256
	return cfg
}

func newWatermillRabbit(b *testing.B, u string, confirm bool) publisher {
	topic := transporttest.Name("bench")
	rabbitTopology(b, u, topic, topic+"_q", "classic")
	p, err := wamqp.NewPublisher(watermillConfig(u, confirm), watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	return watermillPub{p: p, topic: topic}
}

// runPublish publishes b.N messages: one goroutine one message at a time
// (serial), 16 goroutines one message at a time (concurrent16), or one
// goroutine 100 messages a call (batch100).
func runPublish(b *testing.B, p publisher, mode string) {
	defer p.close()
	b.SetBytes(int64(len(data256)))
	b.ResetTimer()
	start := time.Now()
	switch mode {
	case "serial":
		for range b.N {
			if err := p.publish(1); err != nil {
				b.Fatal(err)
			}
		}
	case "concurrent16":
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					if err := p.publish(1); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	case "batch100":
		for n := b.N; n > 0; n -= 100 {
			if err := p.publish(min(n, 100)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkRabbitMQPublish: recado (publisher confirms, always) against
// watermill-amqp with and without confirms, into one durable queue.
func BenchmarkRabbitMQPublish(b *testing.B) {
	u := amqpURL(b)
	for _, mode := range []string{"serial", "concurrent16", "batch100"} {
		b.Run("lib=recado/confirm=yes/queue=classic/mode="+mode, func(b *testing.B) {
			runPublish(b, newRecadoRabbit(b, u, "classic"), mode)
		})
		b.Run("lib=recado/confirm=yes/queue=quorum/mode="+mode, func(b *testing.B) {
			runPublish(b, newRecadoRabbit(b, u, "quorum"), mode)
		})
		b.Run("lib=watermill/confirm=yes/queue=classic/mode="+mode, func(b *testing.B) {
			runPublish(b, newWatermillRabbit(b, u, true), mode)
		})
		b.Run("lib=watermill/confirm=no/queue=classic/mode="+mode, func(b *testing.B) {
			runPublish(b, newWatermillRabbit(b, u, false), mode)
		})
	}
}

// BenchmarkRabbitMQConsume: b.N messages are waiting in the group's queue;
// one subscription receives and acks them one by one (prefetch 256 for
// both libraries).
func BenchmarkRabbitMQConsume(b *testing.B) {
	u := amqpURL(b)
	for _, typ := range []string{"classic", "quorum"} {
		b.Run("lib=recado/queue="+typ, func(b *testing.B) {
			ctx := context.Background()
			opts := rabbitmq.Options{URL: u, QueueType: typ}
			s, err := rabbitmq.NewSubscriber(ctx, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			topic, group := transporttest.Name("bench"), "g"
			defer s.DeleteGroup(ctx, topic, group)
			defer s.DeleteTopic(ctx, topic)
			sub, err := s.Subscribe(ctx, topic, group)
			if err != nil {
				b.Fatal(err)
			}
			p, err := rabbitmq.NewPublisher(ctx, opts)
			if err != nil {
				b.Fatal(err)
			}
			fill(b, recadoPub{p: p, topic: topic})
			b.SetBytes(int64(len(data256)))
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				d, err := sub.Receive(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := d.Ack(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
	b.Run("lib=watermill/queue=classic", func(b *testing.B) {
		topic := transporttest.Name("bench")
		cfg := watermillConfig(u, true)
		sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		if err := sub.SubscribeInitialize(topic); err != nil {
			b.Fatal(err)
		}
		p, err := wamqp.NewPublisher(watermillConfig(u, false), watermill.NopLogger{}) // filling is not measured
		if err != nil {
			b.Fatal(err)
		}
		fill(b, watermillPub{p: p, topic: topic})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.SetBytes(int64(len(data256)))
		b.ResetTimer()
		start := time.Now()
		msgs, err := sub.Subscribe(ctx, topic)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			m := <-msgs
			m.Ack()
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		b.StopTimer()
		cancel()
		deleteRabbit(b, u, topic, topic+"_q")
	})
}

func deleteRabbit(b *testing.B, u, exchange, queue string) {
	conn, err := amqp.Dial(u)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	_, _ = ch.QueueDelete(queue, false, false, false)
	_ = ch.ExchangeDelete(exchange, false, false)
}

// fill publishes b.N messages, 500 a call, and closes p.
func fill(b *testing.B, p publisher) {
	defer p.close()
	for n := b.N; n > 0; n -= 500 {
		if err := p.publish(min(n, 500)); err != nil {
			b.Fatal(err)
		}
	}
}

// latency publishes b.N messages one at a time, each once the previous one
// was received, and reports the median and 99th percentile of the time
// from the start of Publish to Receive returning it.
func latency(b *testing.B, p transport.Publisher, sub transport.Subscription, topic string) {
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		m := transport.Message{ID: recado.NewID(), Key: "k", Type: "Bench", Data: data256}
		t0 := time.Now()
		if err := p.Publish(ctx, topic, m); err != nil {
			b.Fatal(err)
		}
		d, err := sub.Receive(ctx)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		if d.ID != m.ID {
			b.Fatalf("received %s, want %s", d.ID, m.ID)
		}
		if err := d.Ack(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkRabbitMQLatency(b *testing.B) {
	u := amqpURL(b)
	for _, typ := range []string{"classic", "quorum"} {
		b.Run("lib=recado/queue="+typ, func(b *testing.B) {
			ctx := context.Background()
			opts := rabbitmq.Options{URL: u, QueueType: typ}
			s, err := rabbitmq.NewSubscriber(ctx, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			topic, group := transporttest.Name("bench"), "g"
			defer s.DeleteGroup(ctx, topic, group)
			defer s.DeleteTopic(ctx, topic)
			sub, err := s.Subscribe(ctx, topic, group)
			if err != nil {
				b.Fatal(err)
			}
			p, err := rabbitmq.NewPublisher(ctx, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			latency(b, p, sub, topic)
		})
	}
}

// kfakeCluster is an in-process fake Kafka: the figures measure the
// client and recado's code path plus a fake broker on the same two cores,
// not a Kafka cluster.
func kfakeCluster(b *testing.B) kafka.Options {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return kafka.Options{Brokers: c.ListenAddrs(), HeartbeatInterval: 100 * time.Millisecond, SessionTimeout: 6 * time.Second}
}

func BenchmarkKafkaPublish(b *testing.B) {
	for _, mode := range []string{"serial", "concurrent16", "batch100"} {
		b.Run("lib=recado/broker=kfake/mode="+mode, func(b *testing.B) {
			p, err := kafka.NewPublisher(kfakeCluster(b))
			if err != nil {
				b.Fatal(err)
			}
			runPublish(b, recadoPub{p: p, topic: transporttest.Name("bench")}, mode)
		})
	}
}

func kafkaSubscription(b *testing.B, opts kafka.Options, topic string) transport.Subscription {
	s, err := kafka.NewSubscriber(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	sub, err := s.Subscribe(context.Background(), topic, "g")
	if err != nil {
		b.Fatal(err)
	}
	return sub
}

func BenchmarkKafkaConsume(b *testing.B) {
	// The records are in the topic before the member joins, so that the
	// time (which includes joining the group) covers fetching them.
	b.Run("lib=recado/broker=kfake", func(b *testing.B) {
		opts := kfakeCluster(b)
		topic := transporttest.Name("bench")
		p, err := kafka.NewPublisher(opts)
		if err != nil {
			b.Fatal(err)
		}
		fill(b, recadoPub{p: p, topic: topic})
		ctx := context.Background()
		b.SetBytes(int64(len(data256)))
		b.ResetTimer()
		start := time.Now()
		sub := kafkaSubscription(b, opts, topic)
		for range b.N {
			d, err := sub.Receive(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Ack(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
}

func BenchmarkKafkaLatency(b *testing.B) {
	b.Run("lib=recado/broker=kfake", func(b *testing.B) {
		opts := kfakeCluster(b)
		topic := transporttest.Name("bench")
		sub := kafkaSubscription(b, opts, topic)
		p, err := kafka.NewPublisher(opts)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		latency(b, p, sub, topic)
	})
}
