package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

// The raw benchmarks write and read the same rows as the store, in the same
// schema, through pgx alone: the ceiling the store is measured against.

const rawCols = "major, seq, id, stream, version, type, data, metadata, time"

// rawRow returns the arguments of the i-th benchmark event as a row.
func rawRow(i int, stream string, version int) []any {
	e := eventstoretest.BenchEvent(i)
	return []any{int64(1), int64(i + 1), e.ID, stream, int64(version), e.Type, e.Data,
		e.Metadata.AppendJSON(nil), time.Now()}
}

// rawDB opens a DB in a fresh schema (for its tables) and a pool of conns
// connections to write to it directly.
func rawDB(b *testing.B, conns int32) (*DB, *pgxpool.Pool) {
	db := openTest(b, Options{})
	cfg, err := pgxpool.ParseConfig(testURL(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns, cfg.MinConns = conns, conns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return db, pool
}

// BenchmarkRawCommit: bare single-row INSERT commits from 64 clients.
func BenchmarkRawCommit(b *testing.B) {
	testURL(b)
	db, pool := rawDB(b, 64)
	insert := fmt.Sprintf("INSERT INTO %s.events (%s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", db.schema, rawCols)
	rows := make([][]any, b.N)
	for i := range rows {
		rows[i] = rawRow(i, fmt.Sprintf("raw-%d", i), 1)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(rows) {
					return
				}
				if _, err := pool.Exec(b.Context(), insert, rows[i]...); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

// BenchmarkRawInsertBatch100: 100 rows as one multi-row INSERT in one
// transaction, from one client.
func BenchmarkRawInsertBatch100(b *testing.B) {
	testURL(b)
	db, pool := rawDB(b, 1)
	var sb strings.Builder
	fmt.Fprintf(&sb, "INSERT INTO %s.events (%s) VALUES ", db.schema, rawCols)
	for r := range 100 {
		if r > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(")
		for c := range 9 {
			if c > 0 {
				sb.WriteString(", ")
			}
			fmt.Fprintf(&sb, "$%d", r*9+c+1)
		}
		sb.WriteString(")")
	}
	insert := sb.String()
	batches := make([][]any, b.N)
	for i := range batches {
		for r := range 100 {
			batches[i] = append(batches[i], rawRow(i*100+r, fmt.Sprintf("batch-%d", i), r+1)...)
		}
	}
	b.ResetTimer()
	for _, args := range batches {
		err := pgx.BeginFunc(b.Context(), pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(b.Context(), insert, args...)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRawScan: the 100,000-event log of BenchmarkStore/ReadAll read with
// one plain query, each row scanned into Go values with pgx's rows.Scan (the
// metadata left as bytes, as the driver gives it).
func BenchmarkRawScan(b *testing.B) {
	db, query := rawScanLog(b)
	var (
		major, seq, version int64
		id, stream, typ     string
		data, meta          []byte
		at                  time.Time
	)
	b.ResetTimer()
	for range b.N {
		rows, err := db.pool.Query(b.Context(), query)
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for rows.Next() {
			if err := rows.Scan(&major, &seq, &id, &stream, &version, &typ, &data, &meta, &at); err != nil {
				b.Fatal(err)
			}
			got++
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		if got != rawScanLen {
			b.Fatalf("scanned %d rows, want %d", got, rawScanLen)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*rawScanLen)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRawScanUndecoded: the same query, each row's values only touched,
// not decoded: what pgx delivers at best.
func BenchmarkRawScanUndecoded(b *testing.B) {
	db, query := rawScanLog(b)
	b.ResetTimer()
	for range b.N {
		rows, err := db.pool.Query(b.Context(), query)
		if err != nil {
			b.Fatal(err)
		}
		got, size := 0, 0
		for rows.Next() {
			for _, v := range rows.RawValues() {
				size += len(v)
			}
			got++
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		if got != rawScanLen || size == 0 {
			b.Fatalf("scanned %d rows, want %d", got, rawScanLen)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*rawScanLen)/b.Elapsed().Seconds(), "events/s")
}

const rawScanLen = 100_000

// rawScanLog builds the log of BenchmarkStore/ReadAll (same events, same
// appends) and returns the query that reads it whole.
func rawScanLog(b *testing.B) (*DB, string) {
	testURL(b)
	db := openTest(b, Options{})
	for i := 0; i < rawScanLen; i += 500 {
		events := make([]recado.Event, 500)
		for j := range events {
			events[j] = eventstoretest.BenchEvent(i + j)
		}
		if _, err := db.Events().Append(b.Context(), fmt.Sprintf("log-%d", i/500%100), events); err != nil {
			b.Fatal(err)
		}
	}
	return db, fmt.Sprintf("SELECT %s FROM %s.events ORDER BY major, seq", rawCols, db.schema)
}

// BenchmarkCommitToDelivery: one event appended at a time; a subscriber on
// another pool (as another process would be), woken by LISTEN/NOTIFY,
// delivers it. Reports the median and 90th percentile from the append's
// return (the commit is done) to the delivery.
func BenchmarkCommitToDelivery(b *testing.B) {
	testURL(b)
	writer := openTest(b, Options{})
	reader := openOn(b, newPool(b, ""), Options{Schema: writer.opts.Schema})
	ctx, cancel := context.WithCancel(b.Context())
	delivered := make(chan time.Time, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for m, err := range reader.Events().Subscribe(ctx, recado.Position{}, eventstore.WithPollInterval(time.Minute)) {
			if err != nil {
				return
			}
			if m.Kind == eventstore.KindEvent {
				delivered <- time.Now()
			}
		}
	})
	defer wg.Wait()
	defer cancel()
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if _, err := writer.Events().Append(ctx, "latency", []recado.Event{eventstoretest.BenchEvent(i)}); err != nil {
			b.Fatal(err)
		}
		committed := time.Now()
		at := <-delivered
		samples = append(samples, max(at.Sub(committed), 0))
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "µs-median")
	b.ReportMetric(float64(samples[len(samples)*9/10].Microseconds()), "µs-p90")
}

// BenchmarkDesign compares the gap-safe designs on the AppendConcurrent load
// (64 goroutines, one event per append, own streams, exact versions), from
// one process and from two (two pools on one schema): this package's
// (transaction ids, group commits in flight side by side) against commits
// serialized by a transaction-scoped advisory lock.
func BenchmarkDesign(b *testing.B) {
	testURL(b)
	designs := []struct {
		name      string
		serialize bool
		writers   int
	}{
		{"xid/writers=1", false, 1},
		{"xid/writers=2", false, 2},
		{"xid/writers=4", false, 4},
		{"lock/writers=1", true, 1},
		{"lock/writers=4", true, 4},
	}
	for _, d := range designs {
		for _, procs := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/procs=%d", d.name, procs), func(b *testing.B) {
				schema := newSchema(b)
				stores := make([]*eventstore.Store, procs)
				for i := range stores {
					db := openOn(b, newPool(b, ""), Options{Schema: schema, Writers: d.writers})
					db.events.hooks.serialize = d.serialize
					stores[i] = db.Events()
				}
				events := make([]recado.Event, b.N)
				for i := range events {
					events[i] = eventstoretest.BenchEvent(i)
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for g := range 64 {
					s := stores[g%procs]
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
								b.Error(err)
								return
							}
							version = res.LastVersion
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkAppendIsolation measures the two ways a group commit can keep one
// bad append from failing the others, on their happy path: a group of 64
// one-event appends written with one INSERT (the package's way: a group that
// fails is split and retried, which costs nothing until something fails),
// and with a savepoint around each append's own INSERT (a failing append is
// rolled back to its savepoint). One client, each group one pipelined round
// trip and one commit.
func BenchmarkAppendIsolation(b *testing.B) {
	testURL(b)
	const group = 64
	insert := "INSERT INTO %s.events (" + rawCols + `)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bytea[], $8::bytea[], $9::timestamptz[])`
	columns := func(rows [][]any) []any {
		var (
			majors, seqs, versions []int64
			ids, streams, types    []string
			data, meta             [][]byte
			times                  []time.Time
		)
		for _, r := range rows {
			majors, seqs = append(majors, r[0].(int64)), append(seqs, r[1].(int64))
			ids, streams = append(ids, r[2].(string)), append(streams, r[3].(string))
			versions, types = append(versions, r[4].(int64)), append(types, r[5].(string))
			data, meta, times = append(data, r[6].([]byte)), append(meta, r[7].([]byte)), append(times, r[8].(time.Time))
		}
		return []any{majors, seqs, ids, streams, versions, types, data, meta, times}
	}
	for _, savepoints := range []bool{false, true} {
		name := "OneInsert"
		if savepoints {
			name = "SavepointPerAppend"
		}
		b.Run(name, func(b *testing.B) {
			db, pool := rawDB(b, 1)
			query := fmt.Sprintf(insert, db.schema)
			b.ResetTimer()
			for i := range b.N {
				rows := make([][]any, group)
				for j := range rows {
					rows[j] = rawRow(i*group+j, fmt.Sprintf("iso-%d-%d", i, j), 1)
				}
				batch := &pgx.Batch{}
				batch.Queue("begin")
				if savepoints {
					for _, r := range rows {
						batch.Queue("SAVEPOINT append")
						batch.Queue(query, columns([][]any{r})...)
						batch.Queue("RELEASE SAVEPOINT append")
					}
				} else {
					batch.Queue(query, columns(rows)...)
				}
				batch.Queue("commit")
				if err := pool.SendBatch(b.Context(), batch).Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*group)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
