package idempotencytest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/idempotency"
)

// BenchClients is how many clients Bench runs at once.
const BenchClients = 64

// Bench measures what a request with an idempotency key costs the store: a
// claim of a new key and the completion of its response, two small durable
// writes, by [BenchClients] concurrent clients, b.N requests in all. It
// reports ops/s (requests per second) and p99-ms (the 99th percentile of one
// request's claim plus completion, in milliseconds).
//
//	func BenchmarkIdempotency(b *testing.B) { idempotencytest.Bench(b, newBackend) }
func Bench(b *testing.B, newBackend Factory) {
	s := newBackend(b, idempotency.Config{}).Store
	fp := []byte("0123456789abcdef0123456789abcdef")
	resp := []byte(`{"status":201,"body":"eyJvcmRlciI6NDJ9"}`)
	keys := make([]string, b.N) // made before the timer
	for i := range keys {
		keys[i] = fmt.Sprintf("bench-key-%d", i)
	}
	latencies := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for range BenchClients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				start := time.Now()
				c, err := s.Claim(b.Context(), nil, "bench", keys[i], fp)
				if err == nil && c.Status != idempotency.Claimed {
					err = fmt.Errorf("claim of a new key: %v", c.Status)
				}
				if err == nil {
					err = s.Complete(b.Context(), nil, c, resp)
				}
				if err != nil {
					b.Error(err)
					return
				}
				latencies[i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(latencies[(len(latencies)*99)/100])/float64(time.Millisecond), "p99-ms")
}
