package inproc_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/inproc"
	"github.com/recado-dev/recado/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	transporttest.Run(t, func(tb testing.TB) transporttest.Transport {
		b := inproc.New()
		tb.Cleanup(func() { _ = b.Close() })
		return transporttest.Transport{
			Publisher:     b.Publisher(),
			NewSubscriber: func(testing.TB) transport.Subscriber { return b.Subscriber() },
			Outage: func(testing.TB) func() {
				b.SetDown(true)
				return func() { b.SetDown(false) }
			},
		}
	})
}

// Relay, broker and inbox consumer through publish failures, lost
// confirms, dropped connections, duplicates and reorders: every event has
// its effect once.
func TestChaos(t *testing.T) {
	b := inproc.New()
	defer b.Close()
	transporttest.RunChaos(t, transporttest.Transport{
		Publisher:     b.Publisher(),
		NewSubscriber: func(testing.TB) transport.Subscriber { return b.Subscriber() },
	}, transporttest.Chaos{})
}

func BenchmarkTransport(b *testing.B) {
	transporttest.Bench(b, func(tb testing.TB) transporttest.Transport {
		br := inproc.New()
		tb.Cleanup(func() { _ = br.Close() })
		return transporttest.Transport{Publisher: br.Publisher(),
			NewSubscriber: func(testing.TB) transport.Subscriber { return br.Subscriber() }}
	})
}
