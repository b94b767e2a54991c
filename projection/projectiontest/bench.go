package projectiontest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/projection"
)

// Sizes of the benchmarks (docs/benchmarks.md).
const (
	benchLog        = 1_000_000 // events in the catch-up log
	benchLogShort   = 10_000    // with -short
	benchStreamLen  = 100       // events per stream in the catch-up log
	benchLagTime    = 3 * time.Second
	benchLagShort   = 500 * time.Millisecond
	benchLagWriters = 64
)

// benchRuns numbers the projections of the catch-up benchmarks: each run
// catches up from the start under a name of its own, also when a log is
// reused.
var benchRuns atomic.Int64

// BenchBackend is a backend under benchmark.
type BenchBackend struct {
	Backend
	// Apply writes the backend's transactional read model for one event,
	// in tx: one row per event (an upsert into a table of the same database
	// on SQL backends). CatchUp/ToReadModel measures a runner filling it.
	// Nil skips that benchmark.
	Apply func(ctx context.Context, tx recado.Tx, e projection.Event) error
	// ApplyBatch writes the same read model for several events at once (a
	// multi-row insert), in tx. CatchUp/ToReadModelBatch measures a runner
	// whose handler is a projection.BatchHandler of Apply and ApplyBatch.
	// Nil skips that benchmark.
	ApplyBatch func(ctx context.Context, tx recado.Tx, events []projection.Event) error
	// LagRate is the steady append rate of the Lag benchmark, in events per
	// second; 0 measures the backend's concurrent append rate first (64
	// writers, each appending one event at a time to its own stream) and
	// takes half of it.
	LagRate float64
}

// BenchFactory returns a fresh backend for a benchmark; it registers its
// own cleanup with tb.
type BenchFactory func(tb testing.TB) BenchBackend

// Bench runs the projection benchmarks against the backends newBackend
// makes, as sub-benchmarks of b:
//
//   - CatchUp/ToMap: a runner with an AtLeastOnce handler catches up with
//     the whole log into a map in memory (events/s); each time, the store's
//     ReadAll reads the same log just before (readall-events/s), and
//     of-readall is the ratio of the two rates.
//   - CatchUp/ToReadModel: the same with the backend's transactional read
//     model (BenchBackend.Apply) and checkpoints in its units of work
//     (events/s).
//   - CatchUp/ToReadModelBatch: the same read model written a unit of work's
//     events at a time (BenchBackend.ApplyBatch, a projection.BatchHandler).
//   - Lag: while 64 writers append at a steady rate (BenchBackend.LagRate),
//     the time from each event's append to its handler (p50-ms, p99-ms,
//     and the load in events/s).
//
// The catch-up log has 1,000,000 events (10,000 with -short) of the shared
// benchmarks' payload (eventstoretest.BenchEvent) in streams of 100 events,
// built once before the timer; run the catch-up benchmarks with
// -benchtime=1x.
func Bench(b *testing.B, newBackend BenchFactory) {
	size := benchLog
	if testing.Short() {
		size = benchLogShort
	}
	var (
		once     sync.Once
		be       BenchBackend
		last     recado.Position
		buildErr error
	)
	parent := b
	log := func(b *testing.B) (BenchBackend, recado.Position) {
		once.Do(func() { be, last, buildErr = buildLog(parent, newBackend, size) })
		if buildErr != nil {
			b.Fatal(buildErr)
		}
		return be, last
	}
	b.Run("CatchUp/ToMap", func(b *testing.B) {
		be, last := log(b)
		var reading, catching time.Duration
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			n := 0
			for _, err := range be.Stores.Events.ReadAll(b.Context(), recado.Position{}) {
				if err != nil {
					b.Fatal(err)
				}
				n++
			}
			if n != size {
				b.Fatalf("ReadAll read %d events, want %d", n, size)
			}
			mid := time.Now()
			counts := make(map[string]int)
			h := projection.AtLeastOnce[recado.Tx](func(_ context.Context, e projection.Event) error {
				counts[e.Stream]++ // one partition: one goroutine
				return nil
			})
			catchUp(b, be, fmt.Sprintf("bench-map-%d", benchRuns.Add(1)), h, last)
			if len(counts) != size/benchStreamLen {
				b.Fatalf("the map has %d streams, want %d", len(counts), size/benchStreamLen)
			}
			reading, catching = reading+mid.Sub(start), catching+time.Since(mid)
		}
		b.StopTimer()
		rate, readRate := float64(size*b.N)/catching.Seconds(), float64(size*b.N)/reading.Seconds()
		b.ReportMetric(rate, "events/s")
		b.ReportMetric(readRate, "readall-events/s")
		b.ReportMetric(rate/readRate, "of-readall")
	})
	b.Run("CatchUp/ToReadModel", func(b *testing.B) {
		be, last := log(b)
		if be.Apply == nil {
			b.Skip("the backend has no transactional read model (BenchBackend.Apply)")
		}
		b.ResetTimer()
		for range b.N {
			catchUp(b, be, fmt.Sprintf("bench-rm-%d", benchRuns.Add(1)), projection.HandlerFunc[recado.Tx](be.Apply), last)
		}
		b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("CatchUp/ToReadModelBatch", func(b *testing.B) {
		be, last := log(b)
		if be.Apply == nil || be.ApplyBatch == nil {
			b.Skip("the backend writes no read model in batches (BenchBackend.ApplyBatch)")
		}
		b.ResetTimer()
		for range b.N {
			catchUp(b, be, fmt.Sprintf("bench-rmb-%d", benchRuns.Add(1)), batchHandler{be.Apply, be.ApplyBatch}, last)
		}
		b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("Lag", func(b *testing.B) { benchLag(b, newBackend(b)) })
}

// batchHandler is a projection.BatchHandler of a BenchBackend's functions.
type batchHandler struct {
	apply      func(ctx context.Context, tx recado.Tx, e projection.Event) error
	applyBatch func(ctx context.Context, tx recado.Tx, events []projection.Event) error
}

func (h batchHandler) Apply(ctx context.Context, tx recado.Tx, e projection.Event) error {
	return h.apply(ctx, tx, e)
}

func (h batchHandler) ApplyBatch(ctx context.Context, tx recado.Tx, events []projection.Event) error {
	return h.applyBatch(ctx, tx, events)
}

// buildLog appends n benchmark events in streams of benchStreamLen.
func buildLog(b *testing.B, newBackend BenchFactory, n int) (BenchBackend, recado.Position, error) {
	be := newBackend(b)
	var last recado.Position
	for i := 0; i < n; i += benchStreamLen {
		events := make([]recado.Event, benchStreamLen)
		for j := range events {
			events[j] = eventstoretest.BenchEvent(i + j)
		}
		res, err := be.Stores.Events.Append(b.Context(), fmt.Sprintf("order-%d", i/benchStreamLen), events)
		if err != nil {
			return be, last, err
		}
		last = res.LastPosition
	}
	return be, last, nil
}

// catchUp runs a runner of a new projection until it has reached last.
func catchUp(b *testing.B, be BenchBackend, name string, h projection.Handler[recado.Tx], last recado.Position) {
	r, err := projection.NewRunner(UnitOfWork(be.Tx), be.Stores, projection.Options[recado.Tx]{
		Name: name, Handler: h, Filter: eventstore.Filter{StreamPrefixes: []string{"order-"}},
		PollInterval: 10 * time.Millisecond,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	if err := r.WaitFor(b.Context(), last); err != nil {
		b.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// benchLag measures the time from append to handler under a steady load.
func benchLag(b *testing.B, be BenchBackend) {
	rate := be.LagRate
	if rate <= 0 {
		rate = appendRate(b, be.Stores.Events) / 2
	}
	d := benchLagTime
	if testing.Short() {
		d = benchLagShort
	}
	var mu sync.Mutex
	var delays []time.Duration
	h := projection.AtLeastOnce[recado.Tx](func(_ context.Context, e projection.Event) error {
		delay := time.Since(e.Time)
		mu.Lock()
		delays = append(delays, delay)
		mu.Unlock()
		return nil
	})
	r, err := projection.NewRunner(UnitOfWork(be.Tx), be.Stores, projection.Options[recado.Tx]{
		Name: "bench-lag", Handler: h, Filter: eventstore.Filter{StreamPrefixes: []string{"lag-"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	b.ResetTimer()
	last, n := steadyLoad(b, be.Stores.Events, rate, d)
	if err := r.WaitFor(b.Context(), last); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if len(delays) != n {
		b.Fatalf("the handler saw %d events, want %d", len(delays), n)
	}
	slices.Sort(delays)
	ms := func(q float64) float64 {
		return float64(delays[min(int(q*float64(len(delays))), len(delays)-1)]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(float64(n)/d.Seconds(), "events/s")
}

// appendRate measures the store's concurrent append rate for a second.
func appendRate(b *testing.B, s *eventstore.Store) float64 {
	var n atomic.Int64
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for w := range benchLagWriters {
		wg.Go(func() {
			for v := uint64(0); time.Now().Before(deadline); v++ {
				_, err := s.Append(b.Context(), fmt.Sprintf("rate-%d", w), []recado.Event{eventstoretest.BenchEvent(int(v))},
					eventstore.ExpectVersion(v))
				if err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load())
}

// steadyLoad appends for d at rate events per second, spread over 64
// writers each appending one event at a time to its own stream, and returns
// the last position and how many events it appended.
func steadyLoad(b *testing.B, s *eventstore.Store, rate float64, d time.Duration) (recado.Position, int) {
	tokens := make(chan struct{}, benchLagWriters)
	go func() { // one token per event, at the rate, for d
		defer close(tokens)
		start := time.Now()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		given := 0
		for now := range tick.C {
			el := now.Sub(start)
			if el >= d {
				return
			}
			for due := int(rate * el.Seconds()); given < due; given++ {
				tokens <- struct{}{}
			}
		}
	}()
	var mu sync.Mutex
	var last recado.Position
	n := 0
	var wg sync.WaitGroup
	for w := range benchLagWriters {
		wg.Go(func() {
			v := uint64(0)
			for range tokens {
				res, err := s.Append(b.Context(), fmt.Sprintf("lag-%d", w), []recado.Event{eventstoretest.BenchEvent(int(v))},
					eventstore.ExpectVersion(v))
				if err != nil {
					b.Error(err)
					return
				}
				v++
				mu.Lock()
				n++
				if last.Before(res.LastPosition) {
					last = res.LastPosition
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return last, n
}
