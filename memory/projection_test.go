package memory_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/projection/projectiontest"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/lease"
)

func projectionBackend(db *memory.DB, now func() time.Time) projectiontest.Backend {
	return projectiontest.Backend{
		Stores: projection.Stores{
			Events:      db.Events(),
			Checkpoints: db.Checkpoints(checkpoint.Config{Now: now}),
			Leases:      db.Leases(lease.Config{Now: now}),
			DeadLetters: db.DeadLetters(deadletter.Config{Now: now}),
		},
		Tx: eventstoretest.UnitOfWork(db),
	}
}

func TestProjections(t *testing.T) {
	projectiontest.Run(t, func(tb testing.TB, now func() time.Time) projectiontest.Backend {
		return projectionBackend(newDB(tb), now)
	})
}

// BenchmarkProjection runs projectiontest.Bench. Memory's transactional read
// model is an inbox entry per event, claimed in the runner's unit of work.
func BenchmarkProjection(b *testing.B) {
	projectiontest.Bench(b, func(tb testing.TB) projectiontest.BenchBackend {
		db := newDB(tb)
		rows := db.Inbox(inbox.Config{})
		return projectiontest.BenchBackend{
			Backend: projectionBackend(db, time.Now),
			Apply: func(ctx context.Context, tx recado.Tx, e projection.Event) error {
				first, err := rows.Claim(ctx, tx, fmt.Sprintf("%s/%d", e.Projection, e.Copy), e.ID)
				if err == nil && !first {
					err = fmt.Errorf("event %s applied twice", e.ID)
				}
				return err
			},
		}
	})
}
