package eventstoretest

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// Sizes of the shared benchmarks, fixed so that figures compare across
// backends and over time.
const (
	benchWriters     = 64
	benchBatch       = 100
	benchLog         = 100_000
	benchLogShort    = 10_000
	benchStreamLen   = 1000
	benchDataSize    = 256
	benchBuildBatch  = 500 // events per append while building the read benchmarks' data
	benchMetaPadding = "web-checkout"
)

// BenchEvent returns the i-th event of the shared benchmarks, with a new ID:
// 256 bytes of JSON data and about 64 bytes of metadata (as stored by
// [recado.Metadata.AppendJSON]). Backends' raw driver benchmarks use it so
// that every figure is for the same payload.
func BenchEvent(i int) recado.Event {
	data := fmt.Appendf(make([]byte, 0, benchDataSize),
		`{"order":"order-%010d","customer":"customer-%06d","total":{"amount":%d,"currency":"EUR"},"lines":%d,"note":"`,
		i, i%1_000_000, 100+i%10_000, 1+i%9)
	pad := benchDataSize - len(data) - len(`"}`)
	data = append(data, strings.Repeat("x", max(pad, 0))...)
	data = append(data, `"}`...)
	return recado.Event{
		ID:   recado.NewID(),
		Type: "OrderPlaced",
		Data: data,
		Metadata: recado.Metadata{
			CorrelationID: fmt.Sprintf("order-%010d", i),
			Fields:        map[string]string{"source": benchMetaPadding},
		},
	}
}

// benchEvents returns n benchmark events numbered from first.
func benchEvents(first, n int) []recado.Event {
	events := make([]recado.Event, n)
	for i := range events {
		events[i] = BenchEvent(first + i)
	}
	return events
}

// Bench runs the shared benchmarks against the backends newBackend makes, as
// sub-benchmarks of b: AppendConcurrent, AppendBatch100, ReadAll and
// Subscribe (ReadAll10k and Subscribe10k with -short) and ReadStream1000. Each
// reports events/s and allocs/event. ReadAll and Subscribe read the same log,
// built once per Bench call before the timer, as ReadStream1000's stream is,
// in backends that live until b ends.
func Bench(b *testing.B, newBackend func(tb testing.TB) Backend) {
	var (
		readOnce   sync.Once
		readStore  *eventstore.Store
		readErr    error
		logSize    = benchLog
		streamOnce sync.Once
		streamSt   *eventstore.Store
		streamErr  error
	)
	suffix := ""
	if testing.Short() {
		logSize, suffix = benchLogShort, "10k"
	}
	b.Run("AppendConcurrent", func(b *testing.B) { benchAppendConcurrent(b, newBackend(b).Store) })
	b.Run("AppendBatch100", func(b *testing.B) { benchAppendBatch(b, newBackend(b).Store) })
	parent := b
	logStore := func(b *testing.B) *eventstore.Store {
		readOnce.Do(func() { readStore, readErr = buildLog(parent, newBackend, logSize) })
		if readErr != nil {
			b.Fatal(readErr)
		}
		return readStore
	}
	b.Run("ReadAll"+suffix, func(b *testing.B) { benchReadAll(b, logStore(b), logSize) })
	b.Run("Subscribe"+suffix, func(b *testing.B) { benchSubscribe(b, logStore(b), logSize) })
	b.Run("ReadStream1000", func(b *testing.B) {
		streamOnce.Do(func() { streamSt, streamErr = buildStream(parent, newBackend) })
		if streamErr != nil {
			b.Fatal(streamErr)
		}
		benchReadStream(b, streamSt)
	})
}

// meter counts allocations over a benchmark and reports them with the rate.
type meter struct{ mallocs uint64 }

func startMeter(b *testing.B) *meter {
	b.ReportAllocs()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ResetTimer()
	return &meter{mallocs: ms.Mallocs}
}

func (m *meter) report(b *testing.B, events int) {
	b.StopTimer()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if events == 0 {
		return
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(ms.Mallocs-m.mallocs)/float64(events), "allocs/event")
}

// benchAppendConcurrent: 64 goroutines, each appending one event at a time to
// its own stream with the exact expected version; b.N events in all.
func benchAppendConcurrent(b *testing.B, s *eventstore.Store) {
	events := benchEvents(0, b.N) // made before the timer: IDs cost time too
	var next atomic.Int64
	var wg sync.WaitGroup
	m := startMeter(b)
	for g := range benchWriters {
		wg.Go(func() {
			stream := fmt.Sprintf("concurrent-%d", g)
			var version uint64
			for {
				i := int(next.Add(1)) - 1
				if i >= len(events) {
					return
				}
				res, err := s.Append(b.Context(), stream, events[i:i+1], eventstore.ExpectVersion(version))
				if err != nil {
					b.Errorf("Append(%q, expected %d): %v", stream, version, err)
					return
				}
				version = res.LastVersion
			}
		})
	}
	wg.Wait()
	m.report(b, b.N)
}

// benchAppendBatch: one goroutine appending 100 events at a time to fresh
// streams, expecting no stream; b.N appends.
func benchAppendBatch(b *testing.B, s *eventstore.Store) {
	batches := make([][]recado.Event, b.N)
	for i := range batches {
		batches[i] = benchEvents(i*benchBatch, benchBatch)
	}
	m := startMeter(b)
	for i, batch := range batches {
		if _, err := s.Append(b.Context(), fmt.Sprintf("batch-%d", i), batch, eventstore.Expect(eventstore.NoStream)); err != nil {
			b.Fatalf("Append batch %d: %v", i, err)
		}
	}
	m.report(b, b.N*benchBatch)
}

// buildLog returns a store holding a log of n benchmark events, which lives
// until tb (the parent benchmark) ends. Errors are returned, not reported on
// tb, because a sub-benchmark's goroutine calls it.
func buildLog(tb testing.TB, nb factory, n int) (*eventstore.Store, error) {
	s := nb(tb).Store
	for i := 0; i < n; i += benchBuildBatch {
		stream := fmt.Sprintf("log-%d", i/benchBuildBatch%100)
		if _, err := s.Append(tb.Context(), stream, benchEvents(i, min(benchBuildBatch, n-i))); err != nil {
			return nil, fmt.Errorf("building the log: append at event %d: %w", i, err)
		}
	}
	return s, nil
}

// benchReadAll: read the whole log, b.N times.
func benchReadAll(b *testing.B, s *eventstore.Store, n int) {
	m := startMeter(b)
	for range b.N {
		got := 0
		for _, err := range s.ReadAll(b.Context(), recado.Position{}) {
			if err != nil {
				b.Fatalf("ReadAll: %v", err)
			}
			got++
		}
		if got != n {
			b.Fatalf("ReadAll read %d events, want %d", got, n)
		}
	}
	m.report(b, b.N*n)
}

// benchSubscribe: subscribe from the start of the log and take every event
// until the subscription says it caught up, b.N times.
func benchSubscribe(b *testing.B, s *eventstore.Store, n int) {
	m := startMeter(b)
	for range b.N {
		got := 0
		for msg, err := range s.Subscribe(b.Context(), recado.Position{}) {
			if err != nil {
				b.Fatalf("Subscribe: %v", err)
			}
			if msg.Kind == eventstore.KindEvent {
				got++
			}
			if msg.Kind == eventstore.KindCaughtUp {
				break
			}
		}
		if got != n {
			b.Fatalf("Subscribe delivered %d events before it caught up, want %d", got, n)
		}
	}
	m.report(b, b.N*n)
}

// buildStream returns a store holding one stream of 1,000 benchmark events,
// which lives until tb (the parent benchmark) ends.
func buildStream(tb testing.TB, nb factory) (*eventstore.Store, error) {
	s := nb(tb).Store
	for i := 0; i < benchStreamLen; i += benchBuildBatch {
		if _, err := s.Append(tb.Context(), "stream-1000", benchEvents(i, min(benchBuildBatch, benchStreamLen-i))); err != nil {
			return nil, fmt.Errorf("building the stream: append at event %d: %w", i, err)
		}
	}
	return s, nil
}

// benchReadStream: read the 1,000-event stream in full, b.N times.
func benchReadStream(b *testing.B, s *eventstore.Store) {
	m := startMeter(b)
	for range b.N {
		got := 0
		for _, err := range s.ReadStream(b.Context(), "stream-1000") {
			if err != nil {
				b.Fatalf("ReadStream: %v", err)
			}
			got++
		}
		if got != benchStreamLen {
			b.Fatalf("ReadStream read %d events, want %d", got, benchStreamLen)
		}
	}
	m.report(b, b.N*benchStreamLen)
}
