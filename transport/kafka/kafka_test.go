package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/internal/faultnet"
	"github.com/recado-dev/recado/transport/kafka"
	"github.com/recado-dev/recado/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster is an in-process fake Kafka cluster on free ports of 127.0.0.1,
// whose connections an outage cuts.
type cluster struct {
	*kfake.Cluster
	mu        sync.Mutex
	listeners []*faultnet.Listener
}

func newCluster(tb testing.TB) *cluster {
	tb.Helper()
	c := &cluster{}
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		l, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		fl := faultnet.Wrap(l)
		c.mu.Lock()
		c.listeners = append(c.listeners, fl)
		c.mu.Unlock()
		return fl, nil
	}))
	if err != nil {
		tb.Fatal(err)
	}
	c.Cluster = kc
	tb.Cleanup(kc.Close)
	return c
}

// outage cuts every connection to the cluster until restore is called.
func (c *cluster) outage(testing.TB) (restore func()) {
	c.mu.Lock()
	ls := c.listeners
	c.mu.Unlock()
	for _, l := range ls {
		l.Cut()
	}
	return func() {
		for _, l := range ls {
			l.Restore()
		}
	}
}

func (c *cluster) options() kafka.Options {
	return kafka.Options{Brokers: c.ListenAddrs(), HeartbeatInterval: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, CommitInterval: 100 * time.Millisecond}
}

func (c *cluster) transport(tb testing.TB) transporttest.Transport {
	opts := c.options()
	p, err := kafka.NewPublisher(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return transporttest.Transport{
		Publisher: p,
		NewSubscriber: func(tb testing.TB) transport.Subscriber {
			s, err := kafka.NewSubscriber(opts)
			if err != nil {
				tb.Fatal(err)
			}
			return s
		},
		Outage: c.outage,
	}
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, func(tb testing.TB) transporttest.Transport { return newCluster(tb).transport(tb) })
}

// BenchmarkTransport runs the shared benchmarks on an in-process fake
// cluster: the client's and recado's work plus a fake broker sharing the
// process, not a Kafka cluster's figures.
func BenchmarkTransport(b *testing.B) {
	transporttest.Bench(b, func(tb testing.TB) transporttest.Transport { return newCluster(tb).transport(tb) })
}

// The relay, the fake cluster and an inbox consumer through publish
// failures, lost confirms, dropped connections, duplicates and reorders:
// every event has its effect once.
func TestChaos(t *testing.T) {
	tr := newCluster(t).transport(t)
	defer tr.Publisher.Close()
	newSub := tr.NewSubscriber
	tr.NewSubscriber = func(tb testing.TB) transport.Subscriber {
		s := newSub(tb)
		tb.Cleanup(func() { _ = s.Close() })
		return s
	}
	transporttest.RunChaos(t, tr, transporttest.Chaos{})
}

// While a key has a message waiting in the retry topic, its later messages
// wait behind it; other keys flow.
func TestKeyOrderThroughRetries(t *testing.T) {
	c := newCluster(t)
	opts := c.options()
	opts.Partitions = 1 // every key on one partition: the other key must still flow
	p, err := kafka.NewPublisher(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := kafka.NewSubscriber(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic, group := transporttest.Name("t"), transporttest.Name("g")
	sub, err := s.Subscribe(ctx, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(id, key string) transport.Message {
		return transport.Message{ID: id, Key: key, Data: []byte(id)}
	}
	if err := p.Publish(ctx, topic, msg("a1", "a")); err != nil {
		t.Fatal(err)
	}
	d, err := sub.Receive(ctx)
	if err != nil || d.ID != "a1" {
		t.Fatalf("Receive: %v %v, want a1", d.ID, err)
	}
	nacked := time.Now()
	if err := d.Nack(ctx, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, topic, msg("a2", "a"), msg("b1", "b"), msg("a3", "a")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 4 {
		d, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("Receive after %v: %v", got, err)
		}
		if d.ID == "a1" {
			if since := time.Since(nacked); since < 500*time.Millisecond {
				t.Errorf("a1 redelivered after %v, before its delay", since)
			}
			if d.Attempt != 2 {
				t.Errorf("a1: Attempt %d, want 2", d.Attempt)
			}
		} else if d.Attempt != 1 {
			t.Errorf("%s: Attempt %d, want 1", d.ID, d.Attempt)
		}
		got = append(got, d.ID)
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if want := "[b1 a1 a2 a3]"; fmt.Sprint(got) != want {
		t.Errorf("delivered %v, want %s", got, want)
	}
}

// A member that takes a partition over reads the retries pending on it
// before delivering the partition's later records of those keys.
func TestKeyOrderAcrossRestart(t *testing.T) {
	c := newCluster(t)
	opts := c.options()
	opts.Partitions = 1
	p, err := kafka.NewPublisher(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic, group := transporttest.Name("t"), transporttest.Name("g")
	s1, err := kafka.NewSubscriber(opts)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := s1.Subscribe(ctx, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, topic, transport.Message{ID: "a1", Key: "a"}); err != nil {
		t.Fatal(err)
	}
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Nack(ctx, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil { // a1 waits in the retry topic
		t.Fatal(err)
	}
	if err := p.Publish(ctx, topic, transport.Message{ID: "a2", Key: "a"}); err != nil {
		t.Fatal(err)
	}
	s2, err := kafka.NewSubscriber(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	sub, err = s2.Subscribe(ctx, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		d, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("Receive after %v: %v", got, err)
		}
		got = append(got, d.ID)
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != "[a1 a2]" {
		t.Errorf("delivered %v, want [a1 a2]", got)
	}
}

func TestInvalidOptions(t *testing.T) {
	if _, err := kafka.NewPublisher(kafka.Options{}); !errors.Is(err, transport.ErrInvalid) {
		t.Errorf("NewPublisher without brokers: %v, want ErrInvalid", err)
	}
	if _, err := kafka.NewSubscriber(kafka.Options{}); !errors.Is(err, transport.ErrInvalid) {
		t.Errorf("NewSubscriber without brokers: %v, want ErrInvalid", err)
	}
}
