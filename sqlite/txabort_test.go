package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado/eventstore"
)

// TestUnitOfWorkAbortedBySQLite: some errors make SQLite roll the whole
// transaction back by itself (RAISE(ROLLBACK), INSERT OR ROLLBACK, an
// interrupted write, disk full, I/O errors). After one, fn may handle the
// error and carry on: every later call in the unit of work must fail with
// ErrTxAborted naming the error, DB.Tx must fail, nothing of the unit of work
// may be stored (neither before nor after the error), and the DB serves the
// next unit of work and appends as before. Each case provokes a real
// rollback by SQLite.
func TestUnitOfWorkAbortedBySQLite(t *testing.T) {
	tests := []struct {
		name  string
		cause string // in the error message of the call that ended the transaction
		// end makes SQLite roll the transaction back; it returns that call's error.
		end func(t *testing.T, ctx context.Context, tx *Tx) error
	}{
		{"append rolled back by a trigger", "poisoned", func(t *testing.T, ctx context.Context, tx *Tx) error {
			_, err := tx.db.Events().Append(ctx, "order-2", events("poison", 1), eventstore.InTx(tx))
			return err
		}},
		{"INSERT OR ROLLBACK", "UNIQUE", func(t *testing.T, ctx context.Context, tx *Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT OR ROLLBACK INTO orders VALUES (?, 1)", "order-1")
			return err
		}},
		{"INSERT OR ROLLBACK met while stepping rows", "UNIQUE", func(t *testing.T, ctx context.Context, tx *Tx) error {
			rows, err := tx.QueryContext(ctx, "INSERT OR ROLLBACK INTO orders VALUES ('order-1', 1) RETURNING id")
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			err = rows.Err()
			rows.Close()
			return err
		}},
		{"write interrupted by its context", "interrupt", func(t *testing.T, ctx context.Context, tx *Tx) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			// cancel_at(x, n) cancels ctx when x reaches n, halfway through the
			// insert: SQLite is interrupted in the middle of writing.
			err := tx.db.conn.Raw(func(dc any) error {
				c, err := rawConn(dc)
				if err != nil {
					return err
				}
				return c.CreateFunction("cancel_at", 2, sqlite3.DIRECTONLY, func(fc sqlite3.Context, arg ...sqlite3.Value) {
					if arg[0].Int64() == arg[1].Int64() {
						cancel()
					}
					fc.ResultInt(0)
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO orders
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 4000)
SELECT 'bulk-' || x, cancel_at(x, 1000) FROM n`)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t, Options{})
			createOrders(t, db)
			addPoison(t, db)
			ctx := t.Context()
			s := db.Events()
			committed := db.events.Committed()
			err := db.Tx(ctx, func(tx *Tx) error {
				if _, err := s.Append(ctx, "order-1", events("placed", 2), eventstore.InTx(tx)); err != nil {
					t.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, "INSERT INTO orders VALUES ('order-1', 42)"); err != nil {
					t.Fatal(err)
				}
				err := tc.end(t, ctx, tx)
				if err == nil || !strings.Contains(err.Error(), tc.cause) {
					t.Fatalf("the call that ends the transaction returned %v, want an error naming %q", err, tc.cause)
				}
				// fn handles the error and carries on: nothing of this may run.
				calls := []struct {
					name string
					call func() error
				}{
					{"Append", func() error {
						_, err := s.Append(ctx, "order-3", events("placed", 1), eventstore.InTx(tx))
						return err
					}},
					{"Delete", func() error { return s.Delete(ctx, "order-1", eventstore.InTx(tx)) }},
					{"Tombstone", func() error { return s.Tombstone(ctx, "order-9", eventstore.InTx(tx)) }},
					{"ExecContext", func() error {
						_, err := tx.ExecContext(ctx, "INSERT INTO orders VALUES ('order-3', 7)")
						return err
					}},
					{"QueryContext", func() error {
						rows, err := tx.QueryContext(ctx, "SELECT id FROM orders")
						if err == nil {
							rows.Close()
						}
						return err
					}},
					{"QueryRowContext", func() error { return tx.QueryRowContext(ctx, "SELECT 1").Scan(new(int)) }},
				}
				for _, c := range calls {
					err := c.call()
					if !errors.Is(err, ErrTxAborted) || !strings.Contains(err.Error(), tc.cause) {
						t.Errorf("%s after the transaction ended = %v, want ErrTxAborted naming %q", c.name, err, tc.cause)
					}
				}
				return nil
			})
			if !errors.Is(err, ErrTxAborted) || !strings.Contains(err.Error(), tc.cause) {
				t.Errorf("Tx = %v, want ErrTxAborted naming %q", err, tc.cause)
			}
			if got := readAll(t, s); len(got) != 0 {
				t.Errorf("log holds %d events of an aborted unit of work, want 0", len(got))
			}
			if got := countOrders(t, db); got != 0 {
				t.Errorf("orders rows = %d after an aborted unit of work, want 0", got)
			}
			if closedNow(committed) {
				t.Error("subscribers woken by an aborted unit of work")
			}
			// The DB goes on: a unit of work and a group commit.
			err = db.Tx(ctx, func(tx *Tx) error {
				if _, err := s.Append(ctx, "order-1", events("placed", 1), eventstore.InTx(tx), eventstore.Expect(eventstore.NoStream)); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, "INSERT INTO orders VALUES ('order-1', 42)")
				return err
			})
			if err != nil {
				t.Fatalf("Tx after an aborted one: %v", err)
			}
			if _, err := s.Append(ctx, "order-2", events("placed", 1), eventstore.Expect(eventstore.NoStream)); err != nil {
				t.Fatalf("Append after an aborted unit of work: %v", err)
			}
			if got, orders := len(readAll(t, s)), countOrders(t, db); got != 2 || orders != 1 {
				t.Errorf("after the next unit of work and append: %d events and %d orders, want 2 and 1", got, orders)
			}
		})
	}
}

// addPoison adds a trigger that makes SQLite roll the whole transaction back
// when an event of type "poison" is inserted.
func addPoison(t *testing.T, db *DB) {
	t.Helper()
	err := db.Tx(t.Context(), func(tx *Tx) error {
		_, err := tx.ExecContext(t.Context(), `CREATE TRIGGER poison BEFORE INSERT ON recado_events
WHEN NEW.type = 'poison' BEGIN SELECT RAISE(ROLLBACK, 'poisoned'); END`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestGroupCommitRolledBackBySQLite: an append during which SQLite rolls the
// whole group's transaction back fails alone; the others of its group commit.
func TestGroupCommitRolledBackBySQLite(t *testing.T) {
	db := openTest(t, Options{})
	addPoison(t, db)
	s := db.Events()
	ctx := t.Context()
	const good = 6
	errs := make(chan error, good)
	var poisoned error
	var wg sync.WaitGroup
	whileWriterHeld(t, db, func() {
		for i := range good {
			wg.Go(func() {
				_, err := s.Append(ctx, fmt.Sprintf("s-%d", i), events("e", 2))
				errs <- err
			})
		}
		wg.Go(func() { _, poisoned = s.Append(ctx, "bad", append(events("e", 1), events("poison", 1)...)) })
		waitQueued(t, db, good+1)
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("append grouped with one SQLite rolled back: %v", err)
		}
	}
	if poisoned == nil || !strings.Contains(poisoned.Error(), "poisoned") {
		t.Errorf("append SQLite rolled back = %v, want its error", poisoned)
	}
	if got := len(readAll(t, s)); got != 2*good {
		t.Errorf("log holds %d events, want %d", got, 2*good)
	}
}
