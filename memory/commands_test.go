package memory_test

import (
	"testing"

	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/command/commandtest"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// commandBackend returns the stores of a new DB for package command's
// suite. Memory keeps nothing across a restart: the suite's restart test
// runs a new worker over the same DB.
func commandBackend(tb testing.TB, cfg command.StoreConfig) commandtest.Backend {
	db := newDB(tb)
	return commandtest.Backend{
		Commands:    db.Commands(cfg),
		Snapshots:   db.Snapshots(command.SnapshotConfig{Now: cfg.Now}),
		Events:      db.Events(),
		Leases:      db.Leases(lease.Config{Now: cfg.Now}),
		DeadLetters: db.DeadLetters(deadletter.Config{Now: cfg.Now}),
		Tx:          eventstoretest.UnitOfWork(db),
		Close:       db.Close,
	}
}

func TestCommands(t *testing.T) { commandtest.Run(t, commandBackend) }

func TestSnapshots(t *testing.T) { commandtest.RunSnapshots(t, commandBackend) }
