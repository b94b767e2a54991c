package memory_test

import (
	"testing"
	"time"

	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/projection/projectiontest"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

func newProjectionBackend(tb testing.TB, now func() time.Time) projectiontest.Backend {
	db := newDB(tb)
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

func TestProjections(t *testing.T) { projectiontest.Run(t, newProjectionBackend) }
