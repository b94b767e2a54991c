package memory_test

import (
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

// The conformance suites of the recoverability stores. Memory keeps nothing
// across a restart, so the suites' restart tests are skipped.

func TestDeadLetters(t *testing.T) {
	deadlettertest.Run(t, func(tb testing.TB, cfg deadletter.Config) deadlettertest.Backend {
		db := newDB(tb)
		return deadlettertest.Backend{Store: db.DeadLetters(cfg), Tx: eventstoretest.UnitOfWork(db)}
	})
}

func TestIdempotencyKeys(t *testing.T) {
	idempotencytest.Run(t, func(tb testing.TB, cfg idempotency.Config) idempotencytest.Backend {
		db := newDB(tb)
		return idempotencytest.Backend{Store: db.IdempotencyKeys(cfg), Tx: eventstoretest.UnitOfWork(db)}
	})
}

func TestInbox(t *testing.T) {
	inboxtest.Run(t, func(tb testing.TB, cfg inbox.Config) inboxtest.Backend {
		db := newDB(tb)
		return inboxtest.Backend{Store: db.Inbox(cfg), Tx: eventstoretest.UnitOfWork(db)}
	})
}

func TestLeases(t *testing.T) {
	leasetest.Run(t, func(tb testing.TB, cfg lease.Config) leasetest.Backend {
		db := newDB(tb)
		return leasetest.Backend{Store: db.Leases(cfg), Tx: eventstoretest.UnitOfWork(db)}
	})
}

func BenchmarkIdempotency(b *testing.B) {
	idempotencytest.Bench(b, func(tb testing.TB, cfg idempotency.Config) idempotencytest.Backend {
		return idempotencytest.Backend{Store: newDB(tb).IdempotencyKeys(cfg)}
	})
}

func BenchmarkInbox(b *testing.B) {
	inboxtest.Bench(b, func(tb testing.TB, cfg inbox.Config) inboxtest.Backend {
		db := newDB(tb)
		return inboxtest.Backend{Store: db.Inbox(cfg), Tx: eventstoretest.UnitOfWork(db), Events: db.Events()}
	})
}
