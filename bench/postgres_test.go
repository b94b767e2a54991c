package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/postgres"
)

// The PostgreSQL benchmarks write the same events through recado's postgres
// package and through watermill-sql's publisher with its default PostgreSQL
// schema adapter (one table per topic, payload JSON, metadata JSON, rows
// ordered by transaction id), on the same server with its durability settings
// untouched: every call is one transaction, committed and flushed before it
// returns. Each sub-benchmark round writes into a schema of its own, dropped
// when the round ends. The payloads are eventstoretest.BenchEvent's: 256 bytes
// of JSON data, and the metadata's correlation ID and one field (recado stores
// them as its metadata JSON, watermill as its metadata map).
//
// Sub-benchmarks are named lib=recado and lib=watermill, so that benchstat
// can put them side by side (benchstat -col /lib).

const envPostgres = "RECADO_TEST_POSTGRES"

const (
	pgBatch   = 100 // events per call in BenchmarkPostgresBatch100
	pgWriters = 64  // goroutines in BenchmarkPostgresAppendConcurrent
	pgTopic   = "bench"
)

// pgURL returns the server to measure against, or skips the benchmark.
func pgURL(b *testing.B) string {
	b.Helper()
	url := os.Getenv(envPostgres)
	if url == "" {
		b.Skipf("set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run the PostgreSQL benchmarks", envPostgres)
	}
	return url
}

// pgSchema creates a fresh schema and drops it, with everything in it, when
// b's round ends.
func pgSchema(b *testing.B, url string) string {
	b.Helper()
	var r [6]byte
	_, _ = rand.Read(r[:])
	schema := "bench_" + hex.EncodeToString(r[:])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		b.Fatalf("create schema %s: %v", schema, err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			b.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			b.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// pgPool returns a pool of at most conns connections (0: pgx's default) whose
// sessions resolve unqualified names in schema, closed when b's round ends.
func pgPool(b *testing.B, url, schema string, conns int32) *pgxpool.Pool {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatalf("parse %s: %v", envPostgres, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	if conns > 0 {
		cfg.MaxConns = conns
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatalf("pool: %v", err)
	}
	b.Cleanup(pool.Close)
	return pool
}

// recadoStore opens recado's PostgreSQL store in a fresh schema on a pool of
// pgx's default size (the package's default setup).
func recadoStore(b *testing.B, url string) *eventstore.Store {
	b.Helper()
	schema := pgSchema(b, url)
	db, err := postgres.Open(context.Background(), pgPool(b, url, schema, 0), postgres.Options{Schema: schema})
	if err != nil {
		b.Fatalf("postgres.Open: %v", err)
	}
	b.Cleanup(func() {
		if err := db.Close(); err != nil {
			b.Errorf("Close: %v", err)
		}
	})
	return db.Events()
}

// watermillPublisher returns a publisher with watermill-sql's default
// PostgreSQL schema adapter on a pool of conns connections in a fresh schema,
// with the topic's table created (as the publisher's AutoInitializeSchema
// would on its first call, but before the timer).
func watermillPublisher(b *testing.B, url string, conns int32) *wsql.Publisher {
	b.Helper()
	pool := pgPool(b, url, pgSchema(b, url), conns)
	adapter := wsql.DefaultPostgreSQLSchema{}
	queries, err := adapter.SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams{Topic: pgTopic})
	if err != nil {
		b.Fatal(err)
	}
	err = pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		for _, q := range queries {
			if _, err := tx.Exec(context.Background(), q.Query, q.Args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatalf("watermill schema: %v", err)
	}
	pub, err := wsql.NewPublisher(wsql.BeginnerFromPgx(pool), wsql.PublisherConfig{SchemaAdapter: adapter}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close() })
	return pub
}

// watermillMessage returns the i-th benchmark event as a watermill message:
// the same ID, data and metadata values.
func watermillMessage(ctx context.Context, i int) *message.Message {
	e := eventstoretest.BenchEvent(i)
	msg := message.NewMessage(e.ID, e.Data)
	msg.Metadata.Set("correlation_id", e.Metadata.CorrelationID)
	for k, v := range e.Metadata.Fields {
		msg.Metadata.Set(k, v)
	}
	msg.SetContext(ctx)
	return msg
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
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(ms.Mallocs-m.mallocs)/float64(events), "allocs/event")
}

// BenchmarkPostgresBatch100: one goroutine writing 100 events per call, b.N
// calls. recado appends each batch to a new stream expecting no stream (as
// eventstoretest's Store/AppendBatch100); watermill publishes each batch to
// one topic (one multi-row INSERT).
func BenchmarkPostgresBatch100(b *testing.B) {
	url := pgURL(b)
	b.Run("lib=recado", func(b *testing.B) {
		store := recadoStore(b, url)
		batches := make([][]recado.Event, b.N) // made before the timer: IDs cost time too
		for i := range batches {
			batches[i] = make([]recado.Event, pgBatch)
			for j := range batches[i] {
				batches[i][j] = eventstoretest.BenchEvent(i*pgBatch + j)
			}
		}
		m := startMeter(b)
		for i, batch := range batches {
			if _, err := store.Append(b.Context(), fmt.Sprintf("batch-%d", i), batch, eventstore.Expect(eventstore.NoStream)); err != nil {
				b.Fatalf("Append batch %d: %v", i, err)
			}
		}
		m.report(b, b.N*pgBatch)
	})
	b.Run("lib=watermill", func(b *testing.B) {
		pub := watermillPublisher(b, url, 0)
		batches := make([][]*message.Message, b.N)
		for i := range batches {
			batches[i] = make([]*message.Message, pgBatch)
			for j := range batches[i] {
				batches[i][j] = watermillMessage(b.Context(), i*pgBatch+j)
			}
		}
		m := startMeter(b)
		for i, batch := range batches {
			if err := pub.Publish(pgTopic, batch...); err != nil {
				b.Fatalf("Publish batch %d: %v", i, err)
			}
		}
		m.report(b, b.N*pgBatch)
	})
}

// BenchmarkPostgresAppendConcurrent: 64 goroutines, each writing one event
// per call, b.N events in all. recado: each goroutine appends to its own
// stream with the exact expected version (as eventstoretest's
// Store/AppendConcurrent), on the package's default pool, through its group
// commit. watermill: each goroutine publishes to one topic, on a pool of 64
// connections, so that no goroutine waits for a connection (with pgx's
// default pool, four commits would be in flight at most).
func BenchmarkPostgresAppendConcurrent(b *testing.B) {
	url := pgURL(b)
	b.Run("lib=recado", func(b *testing.B) {
		store := recadoStore(b, url)
		events := make([]recado.Event, b.N)
		for i := range events {
			events[i] = eventstoretest.BenchEvent(i)
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		m := startMeter(b)
		for g := range pgWriters {
			wg.Go(func() {
				stream := fmt.Sprintf("concurrent-%d", g)
				var version uint64
				for {
					i := int(next.Add(1)) - 1
					if i >= len(events) {
						return
					}
					res, err := store.Append(b.Context(), stream, events[i:i+1], eventstore.ExpectVersion(version))
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
	})
	b.Run("lib=watermill", func(b *testing.B) {
		pub := watermillPublisher(b, url, pgWriters)
		msgs := make([]*message.Message, b.N)
		for i := range msgs {
			msgs[i] = watermillMessage(b.Context(), i)
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		m := startMeter(b)
		for range pgWriters {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= len(msgs) {
						return
					}
					if err := pub.Publish(pgTopic, msgs[i]); err != nil {
						b.Errorf("Publish %d: %v", i, err)
						return
					}
				}
			})
		}
		wg.Wait()
		m.report(b, b.N)
	})
}
