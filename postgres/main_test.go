package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const envURL = "RECADO_TEST_POSTGRES"

// testURL returns the server to test against, or skips the test.
func testURL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv(envURL)
	if url == "" {
		tb.Skipf("set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run the PostgreSQL tests", envURL)
	}
	return url
}

// newSchema returns a fresh schema name, dropped when tb ends.
func newSchema(tb testing.TB) string {
	tb.Helper()
	url := testURL(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "recado_test_" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// newPool returns a pool on the test server, closed when tb ends. appName
// names its sessions (for pg_terminate_backend in the tests).
func newPool(tb testing.TB, appName string) *pgxpool.Pool {
	tb.Helper()
	return newPoolWith(tb, func(cfg *pgxpool.Config) {
		if appName != "" {
			cfg.ConnConfig.RuntimeParams["application_name"] = appName
		}
	})
}

// newPoolWith returns a pool on the test server configured by configure,
// closed when tb ends.
func newPoolWith(tb testing.TB, configure func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(testURL(tb))
	if err != nil {
		tb.Fatalf("parse %s: %v", envURL, err)
	}
	configure(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// openTest opens a DB in a fresh schema, closed when tb ends.
func openTest(tb testing.TB, opts Options) *DB {
	tb.Helper()
	if opts.Schema == "" {
		opts.Schema = newSchema(tb)
	}
	return openOn(tb, newPool(tb, ""), opts)
}

// openOn opens a DB on pool, closed when tb ends.
func openOn(tb testing.TB, pool *pgxpool.Pool, opts Options) *DB {
	tb.Helper()
	db, err := Open(context.Background(), pool, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return db
}

// newBackend opens a DB in a fresh schema on a pool cfg configures (nil:
// the default), for the conformance suite.
func newBackend(tb testing.TB, cfg func(*pgxpool.Config)) eventstoretest.Backend {
	tb.Helper()
	pool := newPool(tb, "")
	if cfg != nil {
		pool = newPoolWith(tb, cfg)
	}
	db := openOn(tb, pool, Options{Schema: newSchema(tb)})
	return eventstoretest.Backend{
		Store:    db.Events(),
		Close:    db.Close,
		Tx:       eventstoretest.UnitOfWork(db),
		Features: eventstoretest.Features{Delete: true, UnitOfWork: true, Close: true, LeakCheck: true},
	}
}

func TestConformance(t *testing.T) {
	testURL(t)
	eventstoretest.Run(t, func(tb testing.TB) eventstoretest.Backend { return newBackend(tb, nil) })
}

func BenchmarkStore(b *testing.B) {
	testURL(b)
	eventstoretest.Bench(b, func(tb testing.TB) eventstoretest.Backend { return newBackend(tb, nil) })
}
