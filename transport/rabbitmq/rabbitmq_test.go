package rabbitmq_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/internal/faultnet"
	"github.com/recado-dev/recado/transport/rabbitmq"
	"github.com/recado-dev/recado/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// brokerURL returns the broker that RECADO_TEST_AMQP names (.ci/run sets
// it), or skips the test.
func brokerURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("RECADO_TEST_AMQP")
	if u == "" {
		tb.Skip("RECADO_TEST_AMQP is not set: no RabbitMQ to test against (.ci/run sets it)")
	}
	return u
}

// through returns the broker's URL with its host replaced by addr.
func through(tb testing.TB, raw, addr string) string {
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

func host(tb testing.TB, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatal(err)
	}
	if u.Port() == "" {
		return u.Host + ":5672"
	}
	return u.Host
}

// names records the topics and groups a test used, so that it deletes
// them from the shared broker at the end.
type names struct {
	mu     sync.Mutex
	topics map[string]bool
	groups map[[2]string]bool
}

func (n *names) add(topic, group string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.topics[topic] = true
	if group != "" {
		n.groups[[2]string{topic, group}] = true
	}
}

func (n *names) delete(tb testing.TB, u string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := rabbitmq.NewSubscriber(ctx, rabbitmq.Options{URL: u})
	if err != nil {
		tb.Errorf("deleting the test's queues: %v", err)
		return
	}
	defer s.Close()
	n.mu.Lock()
	defer n.mu.Unlock()
	for g := range n.groups {
		if err := s.DeleteGroup(ctx, g[0], g[1]); err != nil {
			tb.Errorf("DeleteGroup(%s, %s): %v", g[0], g[1], err)
		}
	}
	for topic := range n.topics {
		if err := s.DeleteTopic(ctx, topic); err != nil {
			tb.Errorf("DeleteTopic(%s): %v", topic, err)
		}
	}
}

// cleaned returns a record of names that tb deletes when it ends.
func cleaned(tb testing.TB, u string) *names {
	n := &names{topics: map[string]bool{}, groups: map[[2]string]bool{}}
	tb.Cleanup(func() { n.delete(tb, u) })
	return n
}

type recordingPublisher struct {
	transport.Publisher
	n *names
}

func (p recordingPublisher) Publish(ctx context.Context, topic string, msgs ...transport.Message) error {
	if transport.CheckName("topic", topic) == nil {
		p.n.add(topic, "")
	}
	return p.Publisher.Publish(ctx, topic, msgs...)
}

type recordingSubscriber struct {
	transport.Subscriber
	n *names
}

func (s recordingSubscriber) Subscribe(ctx context.Context, topic, group string) (transport.Subscription, error) {
	if transport.CheckName("topic", topic) == nil && transport.CheckName("group", group) == nil {
		s.n.add(topic, group)
	}
	return s.Subscriber.Subscribe(ctx, topic, group)
}

// newTransport returns publishers and subscribers of the broker that
// connect through a proxy, which the suite's outage cuts (direct, for
// benchmarks, without an outage).
func newTransport(tb testing.TB, queueType string, direct bool) transporttest.Transport {
	u := brokerURL(tb)
	proxy, err := faultnet.NewProxy(host(tb, u))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = proxy.Close() })
	n := cleaned(tb, u)
	opts := rabbitmq.Options{URL: through(tb, u, proxy.Addr()), QueueType: queueType, ReconnectWait: 50 * time.Millisecond}
	if direct {
		opts.URL = u
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := rabbitmq.NewPublisher(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return transporttest.Transport{
		Publisher: recordingPublisher{p, n},
		NewSubscriber: func(tb testing.TB) transport.Subscriber {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := rabbitmq.NewSubscriber(ctx, opts)
			if err != nil {
				tb.Fatal(err)
			}
			return recordingSubscriber{s, n}
		},
		Outage: func(testing.TB) func() {
			proxy.Cut()
			return proxy.Restore
		},
	}
}

func TestConformance(t *testing.T) {
	for _, typ := range []string{"quorum", "classic"} {
		t.Run(typ, func(t *testing.T) {
			transporttest.Run(t, func(tb testing.TB) transporttest.Transport { return newTransport(tb, typ, false) })
		})
	}
}

// The relay, RabbitMQ and an inbox consumer through publish failures, lost
// confirms, dropped connections, duplicates and reorders: every event has
// its effect once.
func TestChaos(t *testing.T) {
	tr := newTransport(t, "", false)
	defer tr.Publisher.Close()
	newSub := tr.NewSubscriber
	tr.NewSubscriber = func(tb testing.TB) transport.Subscriber {
		s := newSub(tb)
		tb.Cleanup(func() { _ = s.Close() })
		return s
	}
	transporttest.RunChaos(t, tr, transporttest.Chaos{})
}

// BenchmarkTransport runs the shared benchmarks on the broker that
// RECADO_TEST_AMQP names, with each queue type.
func BenchmarkTransport(b *testing.B) {
	for _, typ := range []string{"quorum", "classic"} {
		b.Run("queue="+typ, func(b *testing.B) {
			transporttest.Bench(b, func(tb testing.TB) transporttest.Transport { return newTransport(tb, typ, true) })
		})
	}
}

// A message without recado's headers, which another publisher sent, is not
// handed to the subscription: the group's dead-letter queue keeps it.
func TestForeignMessageDeadLettered(t *testing.T) {
	u := brokerURL(t)
	n := cleaned(t, u)
	topic, group := transporttest.Name("t"), transporttest.Name("g")
	n.add(topic, group)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := rabbitmq.NewSubscriber(ctx, rabbitmq.Options{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sub, err := s.Subscribe(ctx, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial(u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(ctx, "recado."+topic, "", false, false, amqp.Publishing{Body: []byte("foreign")}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer rcancel()
	if d, err := sub.Receive(rctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive: %+v, %v; want nothing", d.Message, err)
	}
	dead := "recado." + topic + "." + group + ".dead"
	for {
		m, ok, err := ch.Get(dead, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if string(m.Body) != "foreign" {
				t.Errorf("dead-letter queue holds %q, want the foreign message", m.Body)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("nothing in %s", dead)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInvalidOptions(t *testing.T) {
	ctx := context.Background()
	for _, opts := range []rabbitmq.Options{{}, {URL: "amqp://127.0.0.1", QueueType: "stream"}} {
		if _, err := rabbitmq.NewPublisher(ctx, opts); !errors.Is(err, transport.ErrInvalid) {
			t.Errorf("NewPublisher(%+v): %v, want ErrInvalid", opts, err)
		}
		if _, err := rabbitmq.NewSubscriber(ctx, opts); !errors.Is(err, transport.ErrInvalid) {
			t.Errorf("NewSubscriber(%+v): %v, want ErrInvalid", opts, err)
		}
	}
}

// With no broker at the address, the constructors fail with
// ErrUnavailable rather than wait.
func TestUnreachable(t *testing.T) {
	proxy, err := faultnet.NewProxy("127.0.0.1:1") // nothing listens on port 1
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = rabbitmq.NewPublisher(ctx, rabbitmq.Options{URL: "amqp://guest:guest@" + proxy.Addr() + "/"})
	if !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("NewPublisher: %v, want ErrUnavailable", err)
	}
}
