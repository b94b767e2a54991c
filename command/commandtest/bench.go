package commandtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/eventstore"
)

// BenchClients is how many callers the benchmarks run at once.
const BenchClients = 64

// benchQueue wires the sample order domain to a backend's stores.
func benchQueue(b *testing.B, be Backend) *command.Queue {
	repo, err := NewOrderRepository(be.Events, nil, 0)
	if err != nil {
		b.Fatal(err)
	}
	bus := command.NewBus(command.BusConfig{Events: be.Events})
	if err := RouteOrders(bus, repo); err != nil {
		b.Fatal(err)
	}
	q, err := command.NewQueue(bus, be.Commands, command.QueueConfig{})
	if err != nil {
		b.Fatal(err)
	}
	return q
}

// benchOrders returns n PlaceOrder commands for new orders, with about 256
// bytes of JSON each, made before the timer.
func benchOrders(n int) []PlaceOrder {
	out := make([]PlaceOrder, n)
	for i := range out {
		out[i] = PlaceOrder{OrderID: fmt.Sprintf("bench-%d-%s", i, recado.NewID()),
			Items: []string{"green tea 250g", "cast iron teapot", "two cups", strings.Repeat("x", 120)}, Total: 1850 + i%100}
	}
	return out
}

// clients runs op for i in [0, b.N) on BenchClients goroutines, and
// reports per-s (b.N per second, under the unit unit) with the 50th and
// 99th percentiles of op's time as p50-ms and p99-ms.
func clients(b *testing.B, unit string, op func(i int) error) {
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
				if err := op(i); err != nil {
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
	ms := func(q int) float64 { return float64(latencies[(len(latencies)-1)*q/100]) / float64(time.Millisecond) }
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
	b.ReportMetric(ms(50), "p50-ms")
	b.ReportMetric(ms(99), "p99-ms")
}

// BenchAccept measures Accept through the Go API: [BenchClients] callers
// accept PlaceOrder commands for new orders, each durable before Accept
// returns, b.N in all. It reports commands/s, p50-ms and p99-ms.
//
//	func BenchmarkAccept(b *testing.B) {
//		b.Run("SQLite", func(b *testing.B) { commandtest.BenchAccept(b, sqliteBackend) })
//	}
func BenchAccept(b *testing.B, newBackend Factory) {
	q := benchQueue(b, newBackend(b, command.StoreConfig{}))
	orders := benchOrders(b.N)
	clients(b, "commands/s", func(i int) error {
		_, err := q.Accept(b.Context(), orders[i])
		return err
	})
}

// BenchThroughput measures commands end to end: [BenchClients] callers
// each accept a PlaceOrder and wait until a worker (with concurrency
// [BenchClients]) has run it: loaded the order, decided, appended its event
// and recorded the command succeeded in one unit of work. It reports
// commands/s, and p50-ms and p99-ms from accept to succeeded.
func BenchThroughput(b *testing.B, newBackend Factory) {
	be := newBackend(b, command.StoreConfig{})
	q := benchQueue(b, be)
	w, err := command.NewWorker(UnitOfWork(be.Tx), q, command.WorkerConfig{Events: be.Events, Leases: be.Leases,
		DeadLetters: be.DeadLetters, Concurrency: BenchClients})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	orders := benchOrders(b.N)
	clients(b, "commands/s", func(i int) error {
		rc, err := q.Accept(b.Context(), orders[i])
		if err != nil {
			return err
		}
		st, err := q.Wait(b.Context(), rc.ID, time.Minute)
		if err == nil && st.State != command.Succeeded {
			err = fmt.Errorf("command %s: %v %+v", rc.ID, st.State, st.Problem)
		}
		return err
	})
}

// BenchAppend is the baseline the command benchmarks compare with, in the
// same run: the event store's Store/AppendConcurrent shape, [BenchClients]
// goroutines each appending one event at a time (about 256 bytes of data,
// 64 of metadata) to a stream of its own with the exact expected version. It
// reports events/s.
func BenchAppend(b *testing.B, newBackend Factory) {
	s := newBackend(b, command.StoreConfig{}).Events
	data := bytes.Repeat([]byte("x"), 240)
	data = append(append([]byte(`{"d":"`), data...), '"', '}')
	md := recado.Metadata{CorrelationID: strings.Repeat("c", 20), CausationID: strings.Repeat("c", 20)}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for g := range BenchClients {
		wg.Go(func() {
			stream := fmt.Sprintf("append-%d-%s", g, recado.NewID())
			for v := uint64(0); next.Add(1) <= int64(b.N); v++ {
				e := recado.Event{ID: recado.NewID(), Type: "Appended", Data: data, Metadata: md}
				if _, err := s.Append(b.Context(), stream, []recado.Event{e}, eventstore.ExpectVersion(v)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchAcceptHTTP measures Accept over HTTP: [BenchClients] clients POST
// PlaceOrder commands as JSON to the HTTP adapter on a local server, each
// answered 202 once durable. It reports commands/s, p50-ms and p99-ms.
func BenchAcceptHTTP(b *testing.B, newBackend Factory) {
	q := benchQueue(b, newBackend(b, command.StoreConfig{}))
	srv := httptest.NewServer(command.NewHTTPHandler(q, command.HTTPConfig{}))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: BenchClients}}
	defer client.CloseIdleConnections()
	bodies := make([][]byte, b.N)
	for i, o := range benchOrders(b.N) {
		bodies[i], _ = json.Marshal(o)
	}
	url := srv.URL + "/commands/PlaceOrder"
	clients(b, "commands/s", func(i int) error {
		resp, err := client.Post(url, "application/json", bytes.NewReader(bodies[i]))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("POST: status %d", resp.StatusCode)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	})
}
