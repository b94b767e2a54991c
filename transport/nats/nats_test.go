package nats_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/nats"
	"github.com/recado-dev/recado/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open returns a broker for one test, with short ack waits so that the
// suite's redeliveries after a member vanished come quickly.
func open(tb testing.TB, url string) *nats.Broker {
	tb.Helper()
	b, err := nats.Open(context.Background(), nats.Options{URL: url, AckWait: 3 * time.Second, Memory: url == "" && testing.Short()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

func conformance(t *testing.T, url string) {
	transporttest.Run(t, func(tb testing.TB) transporttest.Transport {
		b := open(tb, url)
		p, err := b.Publisher()
		if err != nil {
			tb.Fatal(err)
		}
		tr := transporttest.Transport{
			Publisher: p,
			NewSubscriber: func(tb testing.TB) transport.Subscriber {
				s, err := b.Subscriber()
				if err != nil {
					tb.Fatal(err)
				}
				return s
			},
			Features: transporttest.Features{Dedup: true},
		}
		if url == "" {
			tr.Outage = func(tb testing.TB) func() {
				b.StopServer()
				return func() {
					if err := b.StartServer(); err != nil {
						tb.Fatal(err)
					}
				}
			}
		}
		return tr
	})
}

func TestEmbedded(t *testing.T) { conformance(t, "") }

// TestExternal runs the suite against the server RECADO_TEST_NATS names
// (.ci/run sets it).
func TestExternal(t *testing.T) {
	url := os.Getenv("RECADO_TEST_NATS")
	if url == "" {
		t.Skip("RECADO_TEST_NATS is not set")
	}
	before := streams(t, url)
	t.Cleanup(func() { deleteStreamsSince(t, url, before) })
	conformance(t, url)
}

// deleteStreamsSince leaves the shared server as it was: it deletes the
// streams that are not in before.
func deleteStreamsSince(t testing.TB, url string, before map[string]bool) {
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for name := range streams(t, url) {
		if !before[name] {
			_ = js.DeleteStream(context.Background(), name)
		}
	}
}

func streams(t testing.TB, url string) map[string]bool {
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	names := map[string]bool{}
	l := js.StreamNames(context.Background())
	for n := range l.Name() {
		names[n] = true
	}
	return names
}

// The relay, the embedded server and an inbox consumer through publish
// failures, lost confirms, dropped connections, duplicates and reorders:
// every event has its effect once.
func TestChaos(t *testing.T) {
	b := open(t, "")
	p, err := b.Publisher()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	transporttest.RunChaos(t, transporttest.Transport{
		Publisher: p,
		NewSubscriber: func(tb testing.TB) transport.Subscriber {
			s, err := b.Subscriber()
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { _ = s.Close() })
			return s
		},
	}, transporttest.Chaos{})
}

// BenchmarkTransport runs the shared benchmarks on the embedded server
// (streams on disk), or on RECADO_TEST_NATS when set.
func BenchmarkTransport(b *testing.B) {
	url := os.Getenv("RECADO_TEST_NATS")
	if url != "" {
		before := streams(b, url)
		b.Cleanup(func() { deleteStreamsSince(b, url, before) })
	}
	transporttest.Bench(b, func(tb testing.TB) transporttest.Transport {
		br := open(tb, url)
		p, err := br.Publisher()
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = p.Close() })
		return transporttest.Transport{Publisher: p, NewSubscriber: func(tb testing.TB) transport.Subscriber {
			s, err := br.Subscriber()
			if err != nil {
				tb.Fatal(err)
			}
			return s
		}}
	})
}

// A message that recado's headers do not describe (another publisher's) is
// delivered with the reason, for the handler to fail and dead-letter, not
// dropped.
func TestForeignMessage(t *testing.T) {
	b := open(t, "")
	s, err := b.Subscriber()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	topic := transporttest.Name("t")
	sub, err := s.Subscribe(context.Background(), topic, "g")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(context.Background(), "recado."+topic, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != "nats-recado_"+topic+"-1" || string(d.Data) != "hello" || !strings.Contains(d.Metadata.Fields["header_error"], "no Recado-Id header") {
		t.Errorf("got %+v, want the stream sequence as ID, the data and the header error", d.Message)
	}
	_ = d.Ack(ctx)
}
