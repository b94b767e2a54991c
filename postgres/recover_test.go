package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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

// The conformance suites of the recoverability stores. Each test gets a DB
// in a schema of its own; a restart closes the DB and opens another, on a
// new pool, on the same schema.

// storeDB opens a DB in a fresh schema (on a pool configure sets up; nil:
// the default) and returns it with a function that reopens it as a process
// restart would.
func storeDB(tb testing.TB, configure func(*pgxpool.Config)) (db *DB, reopen func() *DB) {
	tb.Helper()
	schema := newSchema(tb)
	open := func() *DB {
		if configure == nil {
			return openOn(tb, newPool(tb, ""), Options{Schema: schema})
		}
		return openOn(tb, newPoolWith(tb, configure), Options{Schema: schema})
	}
	db = open()
	cur := db
	return db, func() *DB {
		if err := cur.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		cur = open()
		return cur
	}
}

// unprepared runs a pool's statements unprepared in mode, as a transaction
// pooler needs, with results in text in a zone far from UTC.
func unprepared(mode pgx.QueryExecMode) func(cfg *pgxpool.Config) {
	return func(cfg *pgxpool.Config) {
		cfg.ConnConfig.DefaultQueryExecMode = mode
		cfg.ConnConfig.RuntimeParams["timezone"] = "Asia/Kathmandu"
	}
}

// modes are the pool set-ups the suites run on.
var modes = []struct {
	name      string
	configure func(*pgxpool.Config)
}{
	{"Default", nil},
	{"SimpleProtocol", unprepared(pgx.QueryExecModeSimpleProtocol)},
	{"Exec", unprepared(pgx.QueryExecModeExec)},
}

func TestDeadLetters(t *testing.T) {
	testURL(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			deadlettertest.Run(t, func(tb testing.TB, cfg deadletter.Config) deadlettertest.Backend {
				return deadLetterBackend(tb, cfg, m.configure)
			})
		})
	}
}

func deadLetterBackend(tb testing.TB, cfg deadletter.Config, configure func(*pgxpool.Config)) deadlettertest.Backend {
	db, reopen := storeDB(tb, configure)
	var backend func(db *DB) deadlettertest.Backend
	backend = func(db *DB) deadlettertest.Backend {
		return deadlettertest.Backend{Store: db.DeadLetters(cfg), Tx: eventstoretest.UnitOfWork(db),
			Reopen: func() deadlettertest.Backend { return backend(reopen()) }}
	}
	return backend(db)
}

func TestIdempotencyKeys(t *testing.T) {
	testURL(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			idempotencytest.Run(t, func(tb testing.TB, cfg idempotency.Config) idempotencytest.Backend {
				return idempotencyBackend(tb, cfg, m.configure)
			})
		})
	}
}

func idempotencyBackend(tb testing.TB, cfg idempotency.Config, configure func(*pgxpool.Config)) idempotencytest.Backend {
	db, reopen := storeDB(tb, configure)
	var backend func(db *DB) idempotencytest.Backend
	backend = func(db *DB) idempotencytest.Backend {
		return idempotencytest.Backend{Store: db.IdempotencyKeys(cfg), Tx: eventstoretest.UnitOfWork(db),
			Reopen: func() idempotencytest.Backend { return backend(reopen()) }}
	}
	return backend(db)
}

func TestInbox(t *testing.T) {
	testURL(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			inboxtest.Run(t, func(tb testing.TB, cfg inbox.Config) inboxtest.Backend {
				return inboxBackend(tb, cfg, m.configure)
			})
		})
	}
}

func inboxBackend(tb testing.TB, cfg inbox.Config, configure func(*pgxpool.Config)) inboxtest.Backend {
	db, reopen := storeDB(tb, configure)
	var backend func(db *DB) inboxtest.Backend
	backend = func(db *DB) inboxtest.Backend {
		return inboxtest.Backend{Store: db.Inbox(cfg), Tx: eventstoretest.UnitOfWork(db), Events: db.Events(),
			Reopen: func() inboxtest.Backend { return backend(reopen()) }}
	}
	return backend(db)
}

func TestLeases(t *testing.T) {
	testURL(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			leasetest.Run(t, func(tb testing.TB, cfg lease.Config) leasetest.Backend {
				return leaseBackend(tb, cfg, m.configure)
			})
		})
	}
}

func leaseBackend(tb testing.TB, cfg lease.Config, configure func(*pgxpool.Config)) leasetest.Backend {
	db, reopen := storeDB(tb, configure)
	var backend func(db *DB) leasetest.Backend
	backend = func(db *DB) leasetest.Backend {
		return leasetest.Backend{Store: db.Leases(cfg), Tx: eventstoretest.UnitOfWork(db),
			Reopen: func() leasetest.Backend { return backend(reopen()) }}
	}
	return backend(db)
}

// BenchmarkIdempotency: a claim and a completion of a new key by 64 clients
// (idempotencytest.Bench), in group commits.
func BenchmarkIdempotency(b *testing.B) {
	testURL(b)
	idempotencytest.Bench(b, func(tb testing.TB, cfg idempotency.Config) idempotencytest.Backend {
		db := openTest(tb, Options{})
		return idempotencytest.Backend{Store: db.IdempotencyKeys(cfg)}
	})
}

// BenchmarkIdempotencyAlone is BenchmarkIdempotency with every call in a
// transaction of its own: what the group commit saves.
func BenchmarkIdempotencyAlone(b *testing.B) {
	testURL(b)
	idempotencytest.Bench(b, func(tb testing.TB, cfg idempotency.Config) idempotencytest.Backend {
		k := newIdempotencyKeys(openTest(tb, Options{}))
		k.noGroup = true
		return idempotencytest.Backend{Store: idempotency.New(k, cfg)}
	})
}

// BenchmarkInbox: a unit of work with an append and an inbox claim against
// one with the append alone (inboxtest.Bench).
func BenchmarkInbox(b *testing.B) {
	testURL(b)
	inboxtest.Bench(b, func(tb testing.TB, cfg inbox.Config) inboxtest.Backend {
		db := openTest(tb, Options{})
		return inboxtest.Backend{Store: db.Inbox(cfg), Tx: eventstoretest.UnitOfWork(db), Events: db.Events()}
	})
}
