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

	"github.com/recado-dev/recado/eventstore"
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
	cfg, err := pgxpool.ParseConfig(testURL(tb))
	if err != nil {
		tb.Fatalf("parse %s: %v", envURL, err)
	}
	if appName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = appName
	}
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

// closingStore lets the conformance suite close the DB through its store.
type closingStore struct {
	*EventStore
	db *DB
}

func (s closingStore) Close() error { return s.db.Close() }

func newStore(tb testing.TB) eventstore.Store {
	db := openTest(tb, Options{})
	return closingStore{db.Events(), db}
}

func TestConformance(t *testing.T) {
	testURL(t)
	eventstoretest.Run(t, newStore)
}

func BenchmarkStore(b *testing.B) {
	testURL(b)
	eventstoretest.Bench(b, newStore)
}
