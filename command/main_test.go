package command_test

import (
	"path/filepath"
	"testing"

	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/command/commandtest"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/sqlite"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memoryBackend returns the stores of a new memory DB.
func memoryBackend(tb testing.TB, cfg command.StoreConfig) commandtest.Backend {
	db := memory.New()
	tb.Cleanup(func() { _ = db.Close() })
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

// sqliteBackend returns the stores of a DB on a new file, with the default
// (durable) options.
func sqliteBackend(tb testing.TB, cfg command.StoreConfig) commandtest.Backend {
	db, err := sqlite.Open(filepath.Join(tb.TempDir(), "recado.db"), sqlite.Options{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { _ = db.Close() })
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
