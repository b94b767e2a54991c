package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/command/commandtest"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// commandBackend returns the stores of a DB on a fresh file for package
// command's suite; Reopen closes it and opens the same file again, as a
// restart would.
func commandBackend(tb testing.TB, cfg command.StoreConfig) commandtest.Backend {
	path := filepath.Join(tb.TempDir(), "recado.db")
	var open func() commandtest.Backend
	open = func() commandtest.Backend {
		db, err := Open(path, Options{})
		if err != nil {
			tb.Fatalf("Open: %v", err)
		}
		tb.Cleanup(func() { db.Close() })
		return commandtest.Backend{
			Commands:    db.Commands(cfg),
			Snapshots:   db.Snapshots(command.SnapshotConfig{Now: cfg.Now}),
			Events:      db.Events(),
			Leases:      db.Leases(lease.Config{Now: cfg.Now}),
			DeadLetters: db.DeadLetters(deadletter.Config{Now: cfg.Now}),
			Tx:          eventstoretest.UnitOfWork(db),
			Close:       db.Close,
			Reopen: func() commandtest.Backend {
				if err := db.Close(); err != nil {
					tb.Fatalf("Close: %v", err)
				}
				return open()
			},
		}
	}
	return open()
}

func TestCommands(t *testing.T) { commandtest.Run(t, commandBackend) }

func TestSnapshots(t *testing.T) { commandtest.RunSnapshots(t, commandBackend) }
