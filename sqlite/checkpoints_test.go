package sqlite

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/projection/checkpoint/checkpointtest"
	"github.com/recado-dev/recado/projection/projectiontest"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// The conformance suite of the checkpoint store on a file (Reopen closes the
// DB and opens the same file again, as a process restart does), and the
// projection runner's suite and benchmarks on SQLite.

func TestCheckpoints(t *testing.T) {
	checkpointtest.Run(t, func(tb testing.TB, cfg checkpoint.Config) checkpointtest.Backend {
		db, reopen := testFile(tb)
		var backend func(db *DB) checkpointtest.Backend
		backend = func(db *DB) checkpointtest.Backend {
			return checkpointtest.Backend{Store: db.Checkpoints(cfg), Tx: eventstoretest.UnitOfWork(db),
				Reopen: func() checkpointtest.Backend { return backend(reopen()) }}
		}
		return backend(db)
	})
}

func projectionBackend(db *DB, now func() time.Time) projectiontest.Backend {
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
		return projectionBackend(openTest(tb, Options{}), now)
	})
}

// BenchmarkProjection runs projectiontest.Bench on a file with the durable
// defaults. CatchUp/ToMap is the SQLiteToMemory, CatchUp/ToReadModel
// its SQLiteToSQLite: the read model is a table of the same file, a row per
// event upserted in the runner's unit of work, which commits it with the
// checkpoint.
func BenchmarkProjection(b *testing.B) {
	projectiontest.Bench(b, func(tb testing.TB) projectiontest.BenchBackend {
		db := openTest(tb, Options{})
		err := db.Tx(tb.Context(), func(tx *Tx) error {
			_, err := tx.ExecContext(tb.Context(), `CREATE TABLE bench_read_model (
	projection TEXT NOT NULL, event_id TEXT NOT NULL, stream TEXT NOT NULL, version INTEGER NOT NULL,
	PRIMARY KEY (projection, event_id)) WITHOUT ROWID`)
			return err
		})
		if err != nil {
			tb.Fatal(err)
		}
		return projectiontest.BenchBackend{
			Backend: projectionBackend(db, time.Now),
			Apply: func(ctx context.Context, rtx recado.Tx, e projection.Event) error {
				tx := rtx.(*Tx)
				res, err := tx.ExecContext(ctx, `INSERT INTO bench_read_model (projection, event_id, stream, version)
VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`, fmt.Sprintf("%s/%d", e.Projection, e.Copy), e.ID, e.Stream, int64(e.Version))
				if err != nil {
					return err
				}
				if n, err := res.RowsAffected(); err != nil || n != 1 {
					return fmt.Errorf("event %s applied twice (%d rows, %v)", e.ID, n, err)
				}
				return nil
			},
		}
	})
}
