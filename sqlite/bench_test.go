package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

// The figures of docs/benchmarks-sqlite.md: the shared store benchmarks with
// the durable default, and the ceilings they are measured against (the same
// rows through the driver alone, and the disk's flush rate). See that file for
// the command.

func BenchmarkStore(b *testing.B) { eventstoretest.Bench(b, newStore) }

func BenchmarkRawInsertBatch100(b *testing.B) { benchRawInsertBatch100(b, driverName) }

func BenchmarkRawScan(b *testing.B) { benchRawScan(b, driverName) }

// BenchmarkFsync: append 4 KiB to a file in the directory the benchmarks' DBs
// live in, and fsync it: the disk's flush rate, which a durable commit pays.
func BenchmarkFsync(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "fsync"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 4096)
	b.ResetTimer()
	for range b.N {
		if _, err := f.Write(block); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
}

// rawDB opens path with the writer's settings (WAL, synchronous=FULL) and the
// recado schema, through database/sql and the driver alone.
func rawDB(tb testing.TB, driver, path string) *sql.DB {
	tb.Helper()
	db, err := sql.Open(driver, dsn(path, "busy_timeout(5000)", "journal_mode(WAL)", "synchronous(FULL)"))
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	tb.Cleanup(func() { db.Close() })
	conn, err := db.Conn(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	if err := migrate(context.Background(), conn, path); err != nil {
		tb.Fatal(err)
	}
	return db
}

// benchRawInsertBatch100: 100 rows in one transaction with a prepared INSERT,
// metadata encoded beforehand: the ceiling for Store/AppendBatch100.
func benchRawInsertBatch100(b *testing.B, driver string) {
	db := rawDB(b, driver, filepath.Join(b.TempDir(), "raw.db"))
	type row struct {
		id, typ    string
		data, meta []byte
	}
	rows := make([][]row, b.N)
	for i := range rows {
		rows[i] = make([]row, 100)
		for j := range rows[i] {
			e := eventstoretest.BenchEvent(i*100 + j)
			rows[i][j] = row{e.ID, e.Type, e.Data, e.Metadata.AppendJSON(nil)}
		}
	}
	ctx := context.Background()
	ins, err := db.PrepareContext(ctx, "INSERT INTO recado_events (id, stream, version, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)")
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i, batch := range rows {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		stmt := tx.StmtContext(ctx, ins)
		stream := fmt.Sprintf("batch-%d", i)
		for v, r := range batch {
			if _, err := stmt.ExecContext(ctx, r.id, stream, v+1, r.typ, r.data, r.meta, int64(i)); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// benchRawScan: one query over a 100,000-row log, every column scanned into Go
// values: the ceiling for Store/ReadAll.
func benchRawScan(b *testing.B, driver string) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	path := filepath.Join(b.TempDir(), "scan.db")
	buildLogFile(b, driver, path, n)
	db := rawDB(b, driver, path)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rows, err := db.QueryContext(ctx, "SELECT pos, id, stream, version, type, data, metadata, time FROM recado_events WHERE pos > ? ORDER BY pos", 0)
		if err != nil {
			b.Fatal(err)
		}
		var (
			pos, version, ns int64
			id, stream, typ  string
			data, meta       []byte
		)
		got := 0
		for rows.Next() {
			if err := rows.Scan(&pos, &id, &stream, &version, &typ, &data, &meta, &ns); err != nil {
				b.Fatal(err)
			}
			got++
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		rows.Close()
		if got != n {
			b.Fatalf("scanned %d rows, want %d", got, n)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
}

// buildLogFile writes n benchmark events to path through the store, in
// appends of 500 like the shared ReadAll benchmark.
func buildLogFile(tb testing.TB, driver, path string, n int) {
	tb.Helper()
	db, err := Open(path, Options{driver: driver, Durability: SurviveCrash})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < n; i += 500 {
		batch := make([]recado.Event, 0, 500)
		for j := i; j < min(i+500, n); j++ {
			batch = append(batch, eventstoretest.BenchEvent(j))
		}
		if _, err := db.Events().Append(context.Background(), fmt.Sprintf("log-%d", i/500%100), batch, eventstore.Expect(eventstore.Any)); err != nil {
			tb.Fatal(err)
		}
	}
}
