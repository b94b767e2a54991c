package sqlite

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/recado-dev/recado"

	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/command/commandtest"
	"github.com/recado-dev/recado/command/driver"
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

// TestCommandStoresRefuseForeignTx: the command and snapshot drivers join
// only a live *sqlite.Tx of their own DB, and write nothing otherwise; the
// snapshot front reports the refusal as ErrInvalid.
func TestCommandStoresRefuseForeignTx(t *testing.T) {
	ctx := t.Context()
	db, other := openTest(t, Options{}), openTest(t, Options{})
	var finished *Tx
	if err := db.Tx(ctx, func(tx *Tx) error { finished = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	cmds, snaps := &commandRecords{db: db}, &snapshots{db: db}
	rec := func(id string) *driver.Record {
		return &driver.Record{ID: id, Queue: "orders", Type: "PlaceOrder", Status: driver.Accepted,
			Accepted: commandtest.T0, Updated: commandtest.T0}
	}
	check := func(name string, unit func(f func(tx recado.Tx)) error) {
		t.Run(name, func(t *testing.T) {
			if err := unit(func(tx recado.Tx) {
				if _, _, err := cmds.Insert(ctx, tx, rec(name)); !errors.Is(err, driver.ErrForeignTx) {
					t.Errorf("Insert = %v, want ErrForeignTx", err)
				}
				err := cmds.Update(ctx, tx, func(w driver.Writer) error {
					t.Error("Update ran its function")
					return nil
				})
				if !errors.Is(err, driver.ErrForeignTx) {
					t.Errorf("Update = %v, want ErrForeignTx", err)
				}
				if _, err := snaps.Save(ctx, tx, driver.Snapshot{Stream: name, Schema: "order/v1", Version: 1}); !errors.Is(err, driver.ErrForeignTx) {
					t.Errorf("Save = %v, want ErrForeignTx", err)
				}
				if _, err := db.Snapshots(command.SnapshotConfig{}).Save(ctx, tx, command.Snapshot{Stream: name, Schema: "order/v1", Version: 1, EventID: "e", Data: []byte("{}")}); !errors.Is(err, command.ErrInvalid) {
					t.Errorf("front Save = %v, want ErrInvalid", err)
				}
			}); err != nil {
				t.Fatal(err)
			}
			if _, found, err := cmds.Get(ctx, name); err != nil || found {
				t.Errorf("Get after a refused insert = %v, %v; want not found", found, err)
			}
			if _, found, err := snaps.Get(ctx, name); err != nil || found {
				t.Errorf("snapshot Get after a refused save = %v, %v; want not found", found, err)
			}
		})
	}
	check("another DB", func(f func(tx recado.Tx)) error {
		return other.Tx(ctx, func(tx *Tx) error { f(tx); return nil })
	})
	check("finished", func(f func(tx recado.Tx)) error { f(finished); return nil })
	check("not SQLite", func(f func(tx recado.Tx)) error { f(otherTx{}); return nil })
}

// TestPendingUsesIndex: the workers' scan reads the pending records through
// their partial index, never the whole table, and matches Query.Match.
func TestPendingUsesIndex(t *testing.T) {
	ctx := t.Context()
	db := openTest(t, Options{})
	var plan []string
	err := db.Tx(ctx, func(tx *Tx) error {
		rows, err := tx.QueryContext(ctx, "EXPLAIN QUERY PLAN "+pendingCommands, "orders", 16, "[1,2]", 10)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				return err
			}
			plan = append(plan, detail)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(plan, "\n")
	if !strings.Contains(joined, "recado_commands_pending") || strings.Contains(joined, "SCAN recado_commands") ||
		strings.Contains(joined, "TEMP B-TREE") {
		t.Errorf("plan of Pending:\n%s\nwant the pending index, in its order", joined)
	}

	cmds := &commandRecords{db: db}
	var want []string
	for i := range 40 {
		r := &driver.Record{ID: fmt.Sprint("c", i), Queue: []string{"orders", "mail"}[i%2], Type: "T", Data: []byte("{}"),
			KeyHash: uint32(i * 7), Status: []driver.Status{driver.Accepted, driver.Running, driver.Succeeded, driver.Failed}[i%4],
			Accepted: commandtest.T0, Updated: commandtest.T0}
		if _, _, err := cmds.Insert(ctx, nil, r); err != nil {
			t.Fatal(err)
		}
		q := driver.Query{Queue: "orders", Partitions: 4, Owned: []uint32{0, 3}}
		if q.Match(r) {
			want = append(want, r.ID)
		}
	}
	got, err := cmds.Pending(ctx, driver.Query{Queue: "orders", Partitions: 4, Owned: []uint32{0, 3}, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, r := range got {
		ids = append(ids, r.ID)
		if i > 0 && r.Seq <= got[i-1].Seq {
			t.Errorf("Pending out of Seq order at %d", i)
		}
	}
	if !slices.Equal(ids, want) || len(want) == 0 {
		t.Errorf("Pending = %v, want %v", ids, want)
	}
	if got, _ := cmds.Pending(ctx, driver.Query{Queue: "orders", Partitions: 4, Owned: []uint32{0, 3}, Limit: 2}); len(got) != 2 || got[0].ID != want[0] {
		t.Errorf("Pending with limit 2 = %v", got)
	}
}
