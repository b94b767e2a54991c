package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

// The figures of docs/benchmarks.md (SQLite): the shared store benchmarks with
// the durable default, and the ceilings they are measured against (the same
// rows through the driver alone, and the disk's flush rate). See that file for
// the command.

func BenchmarkStore(b *testing.B) { eventstoretest.Bench(b, newBackend) }

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

// The raw benchmarks use the driver alone, the way a user writing the SQL by
// hand would with its fastest natural API: the direct one (sqlite3.Conn,
// prepared sqlite3.Stmt, Bind*/Step/Column*), the one the store itself uses
// for these statements. RawScanSQL is the same scan through database/sql.

// rawConnFor opens path with the writer's settings (WAL, synchronous=FULL) and
// the recado schema, with the driver's direct API.
func rawConnFor(tb testing.TB, path string) *sqlite3.Conn {
	tb.Helper()
	db := rawDB(tb, path) // creates the schema
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
	c, err := sqlite3.Open(dsn(path, "busy_timeout(5000)", "journal_mode(WAL)", "synchronous(FULL)"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// rawDB opens path with the writer's settings and the recado schema, through
// database/sql.
func rawDB(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	db := openSQL(dsn(path, "busy_timeout(5000)", "journal_mode(WAL)", "synchronous(FULL)"))
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

// BenchmarkRawInsertBatch100: 100 rows in one transaction (BEGIN IMMEDIATE,
// as the store's writer) with a prepared INSERT, metadata encoded beforehand:
// the ceiling for Store/AppendBatch100.
func BenchmarkRawInsertBatch100(b *testing.B) {
	c := rawConnFor(b, filepath.Join(b.TempDir(), "raw.db"))
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
	ins, _, err := c.Prepare("INSERT INTO recado_events (id, stream, version, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)")
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i, batch := range rows {
		if err := c.Exec("BEGIN IMMEDIATE"); err != nil {
			b.Fatal(err)
		}
		stream := fmt.Sprintf("batch-%d", i)
		for v, r := range batch {
			err := firstErr(ins.BindText(1, r.id), ins.BindText(2, stream), ins.BindInt64(3, int64(v+1)),
				ins.BindText(4, r.typ), ins.BindBlob(5, r.data), ins.BindBlob(6, r.meta), ins.BindInt64(7, int64(i)))
			if err == nil {
				err = ins.Exec()
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := c.Exec("COMMIT"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRawScan: one query over a 100,000-row log, every column read into
// fresh Go values (strings, copied byte slices, integers): the ceiling for
// Store/ReadAll.
func BenchmarkRawScan(b *testing.B) {
	n, path := scanLog(b)
	c := rawConnFor(b, path)
	q, _, err := c.Prepare("SELECT pos, id, stream, version, type, data, metadata, time FROM recado_events WHERE pos > ? ORDER BY pos")
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	b.ReportAllocs()
	b.ResetTimer()
	var (
		pos, version, ns int64
		id, stream, typ  string
		data, meta       []byte
	)
	for range b.N {
		if err := q.BindInt64(1, 0); err != nil {
			b.Fatal(err)
		}
		got := 0
		for q.Step() {
			pos, id, stream, version = q.ColumnInt64(0), q.ColumnText(1), q.ColumnText(2), q.ColumnInt64(3)
			typ, data, meta, ns = q.ColumnText(4), q.ColumnBlob(5, nil), q.ColumnBlob(6, nil), q.ColumnInt64(7)
			got++
		}
		if err := q.Reset(); err != nil {
			b.Fatal(err)
		}
		if got != n {
			b.Fatalf("scanned %d rows, want %d", got, n)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
	_, _, _, _, _, _, _, _ = pos, id, stream, version, typ, data, meta, ns
}

// BenchmarkRawScanSQL: RawScan through database/sql (rows.Scan into the same
// Go values), for the cost of that layer.
func BenchmarkRawScanSQL(b *testing.B) {
	n, path := scanLog(b)
	db := rawDB(b, path)
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

// scanLog builds the raw scans' log: as many events as the shared ReadAll
// benchmark reads.
func scanLog(b *testing.B) (int, string) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	path := filepath.Join(b.TempDir(), "scan.db")
	buildLogFile(b, path, n)
	return n, path
}

// buildLogFile writes n benchmark events to path through the store, in
// appends of 500 like the shared ReadAll benchmark.
func buildLogFile(tb testing.TB, path string, n int) {
	tb.Helper()
	db, err := Open(path, Options{Durability: SurviveCrash})
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
