package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/deadletter/deadlettertest"
	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/idempotency/idempotencytest"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/inbox/inboxtest"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/lease/leasetest"
)

// The conformance suites of the recoverability stores, each backend on a
// fresh file. Reopen closes the DB and opens the same file again, as a
// process restart does.

// testFile opens a DB on a fresh file and returns it with a function that
// closes it and opens the same file again; tb closes whichever is open last.
func testFile(tb testing.TB) (*DB, func() *DB) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "recado.db")
	open := func() *DB {
		db, err := Open(path, Options{})
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
	db := open()
	return db, func() *DB {
		if err := db.Close(); err != nil {
			tb.Fatalf("Close before reopening: %v", err)
		}
		db = open()
		return db
	}
}

func TestDeadLetters(t *testing.T) {
	deadlettertest.Run(t, func(tb testing.TB, cfg deadletter.Config) deadlettertest.Backend {
		db, reopen := testFile(tb)
		var backend func(db *DB) deadlettertest.Backend
		backend = func(db *DB) deadlettertest.Backend {
			return deadlettertest.Backend{Store: db.DeadLetters(cfg), Tx: eventstoretest.UnitOfWork(db),
				Reopen: func() deadlettertest.Backend { return backend(reopen()) }}
		}
		return backend(db)
	})
}

func TestIdempotencyKeys(t *testing.T) {
	idempotencytest.Run(t, func(tb testing.TB, cfg idempotency.Config) idempotencytest.Backend {
		db, reopen := testFile(tb)
		var backend func(db *DB) idempotencytest.Backend
		backend = func(db *DB) idempotencytest.Backend {
			return idempotencytest.Backend{Store: db.IdempotencyKeys(cfg), Tx: eventstoretest.UnitOfWork(db),
				Reopen: func() idempotencytest.Backend { return backend(reopen()) }}
		}
		return backend(db)
	})
}

func TestInbox(t *testing.T) {
	inboxtest.Run(t, func(tb testing.TB, cfg inbox.Config) inboxtest.Backend {
		db, reopen := testFile(tb)
		var backend func(db *DB) inboxtest.Backend
		backend = func(db *DB) inboxtest.Backend {
			return inboxtest.Backend{Store: db.Inbox(cfg), Tx: eventstoretest.UnitOfWork(db), Events: db.Events(),
				Reopen: func() inboxtest.Backend { return backend(reopen()) }}
		}
		return backend(db)
	})
}

func TestLeases(t *testing.T) {
	leasetest.Run(t, func(tb testing.TB, cfg lease.Config) leasetest.Backend {
		db, reopen := testFile(tb)
		var backend func(db *DB) leasetest.Backend
		backend = func(db *DB) leasetest.Backend {
			return leasetest.Backend{Store: db.Leases(cfg), Tx: eventstoretest.UnitOfWork(db),
				Reopen: func() leasetest.Backend { return backend(reopen()) }}
		}
		return backend(db)
	})
}

// The figures of docs/benchmarks.md (Recoverability), measured in the same
// run as Store/AppendConcurrent (BenchmarkStore).

func BenchmarkIdempotency(b *testing.B) {
	idempotencytest.Bench(b, func(tb testing.TB, cfg idempotency.Config) idempotencytest.Backend {
		return idempotencytest.Backend{Store: openTest(tb, Options{}).IdempotencyKeys(cfg)}
	})
}

func BenchmarkInbox(b *testing.B) {
	inboxtest.Bench(b, func(tb testing.TB, cfg inbox.Config) inboxtest.Backend {
		db := openTest(tb, Options{})
		return inboxtest.Backend{Store: db.Inbox(cfg), Tx: eventstoretest.UnitOfWork(db), Events: db.Events()}
	})
}
