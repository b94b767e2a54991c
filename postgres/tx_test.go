package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
)

// readModel creates a table for the unit-of-work tests in db's schema.
func readModel(t *testing.T, db *DB) string {
	t.Helper()
	table := db.schema + ".orders"
	if _, err := db.pool.Exec(t.Context(), "CREATE TABLE "+table+" (id text PRIMARY KEY, position text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return table
}

func count(t *testing.T, db *DB, table string) int {
	t.Helper()
	var n int
	if err := db.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTxCommitsAppendAndReadModelTogether(t *testing.T) {
	db := openTest(t, Options{})
	table := readModel(t, db)
	ctx := t.Context()
	committed := db.events.Committed()
	events := testEvents("OrderPlaced", 2)
	var res eventstore.AppendResult
	err := db.Tx(ctx, func(tx *Tx) error {
		var err error
		res, err = db.Events().Append(ctx, "order-1", events, eventstore.InTx(tx), eventstore.Expect(eventstore.NoStream))
		if err != nil {
			return err
		}
		var mode string
		if err := tx.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&mode); err != nil || mode != "auto" {
			return fmt.Errorf("plan_cache_mode after an append in the unit of work = %q, %v; want the session's own (auto)", mode, err)
		}
		_, err = tx.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, $2)", "order-1", res.LastPosition.String())
		return err
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	select {
	case <-committed:
	default:
		t.Errorf("Committed() channel not closed after a unit of work that appended")
	}
	got, err := collect(db.Events().ReadStream(ctx, "order-1"))
	if err != nil || len(got) != 2 || got[1].Position != res.LastPosition {
		t.Fatalf("ReadStream = %d events, %v; want 2 ending at %s", len(got), err, res.LastPosition)
	}
	var pos string
	if err := db.pool.QueryRow(ctx, "SELECT position FROM "+table+" WHERE id = 'order-1'").Scan(&pos); err != nil || pos != res.LastPosition.String() {
		t.Errorf("read model position = %q, %v; want %q", pos, err, res.LastPosition)
	}
}

func TestTxRollsBackAppendAndReadModelTogether(t *testing.T) {
	db := openTest(t, Options{})
	table := readModel(t, db)
	ctx := t.Context()
	boom := errors.New("boom")
	err := db.Tx(ctx, func(tx *Tx) error {
		if _, err := db.Events().Append(ctx, "order-1", testEvents("OrderPlaced", 1), eventstore.InTx(tx)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES ('order-1', '1')"); err != nil {
			return err
		}
		if err := db.Events().Delete(ctx, "order-1", eventstore.InTx(tx)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Tx error = %v, want fn's error", err)
	}
	if _, err := collect(db.Events().ReadStream(ctx, "order-1")); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("ReadStream after rollback: %v, want ErrStreamNotFound", err)
	}
	if n := count(t, db, table); n != 0 {
		t.Errorf("read model has %d rows after rollback, want 0", n)
	}
	if got, _ := collect(db.Events().ReadAll(ctx, recado.Position{})); len(got) != 0 {
		t.Errorf("log has %d events after rollback, want 0", len(got))
	}
}

func TestTxConflictLeavesTransactionUsable(t *testing.T) {
	db := openTest(t, Options{})
	table := readModel(t, db)
	ctx := t.Context()
	if _, err := db.Events().Append(ctx, "s", testEvents("A", 2)); err != nil {
		t.Fatal(err)
	}
	err := db.Tx(ctx, func(tx *Tx) error {
		_, err := db.Events().Append(ctx, "s", testEvents("B", 1), eventstore.InTx(tx), eventstore.ExpectVersion(1))
		var ce *eventstore.ConflictError
		if !errors.As(err, &ce) || ce.Actual != 2 {
			return fmt.Errorf("append with a stale version: %v, want a conflict at version 2", err)
		}
		if _, err := db.Events().Append(ctx, "s", testEvents("C", 1), eventstore.InTx(tx), eventstore.ExpectVersion(2)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO "+table+" VALUES ('s', '3')")
		return err
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	got, err := collect(db.Events().ReadStream(ctx, "s"))
	if err != nil || len(got) != 3 || got[2].Type != "C" {
		t.Errorf("ReadStream = %d events, %v; want 3 ending with C", len(got), err)
	}
}

func TestTxAfterClose(t *testing.T) {
	db := openTest(t, Options{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	err := db.Tx(t.Context(), func(tx *Tx) error { return nil })
	if !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Tx after Close: %v, want ErrClosed", err)
	}
	if _, err := db.Horizon(t.Context()); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Horizon after Close: %v, want ErrClosed", err)
	}
}

// TestOpenConcurrently: processes starting at once on a new schema migrate it
// once; opening a migrated schema changes nothing.
func TestOpenConcurrently(t *testing.T) {
	schema := newSchema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		pool := newPool(t, "")
		wg.Go(func() {
			db, err := Open(context.Background(), pool, Options{Schema: schema})
			if err != nil {
				errs <- err
				return
			}
			errs <- db.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	db := openOn(t, newPool(t, ""), Options{Schema: schema})
	rows, err := db.pool.Query(t.Context(), "SELECT contract, version FROM "+db.schema+".schema_versions ORDER BY 1, 2")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var c string
		var v int
		err := r.Scan(&c, &v)
		return fmt.Sprintf("%s/%d", c, v), err
	})
	var want []string // every contract at each of its versions, once
	for _, c := range allContracts() {
		for v := range c.migrations {
			want = append(want, fmt.Sprintf("%s/%d", c.name, v+1))
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("schema_versions = %v, %v; want %v", got, err, want)
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		opts Options
		ok   bool
	}{
		{Options{}, true},
		{Options{Schema: "x", MaxBatch: 10, Writers: 2}, true},
		{Options{MaxBatch: -1}, false},
		{Options{Writers: -1}, false},
		{Options{Schema: string(make([]byte, 64))}, false},
	}
	for _, tc := range tests {
		if err := tc.opts.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v.Validate() = %v, want ok %v", tc.opts, err, tc.ok)
		}
	}
	if _, err := Open(context.Background(), (*pgxpool.Pool)(nil), Options{}); err == nil {
		t.Errorf("Open(nil pool) succeeded")
	}
}

func collect(seq func(func(recado.Event, error) bool)) ([]recado.Event, error) {
	var out []recado.Event
	for e, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
	return out, nil
}

// TestOpenRefusesLogAheadOfCounter: a log whose positions are ahead of the
// cluster's transaction counter (a dump restored elsewhere) is refused.
func TestOpenRefusesLogAheadOfCounter(t *testing.T) {
	db := openTest(t, Options{})
	_, err := db.pool.Exec(t.Context(), "INSERT INTO "+db.schema+`.events VALUES
(9000000000000000000, 1, 'id', 's', 1, 't', '', '', now())`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), db.pool, Options{Schema: db.opts.Schema}); err == nil {
		t.Errorf("Open of a log ahead of the transaction counter succeeded")
	}
}

// TestTxSameIDRace: two units of work append the same event ID at once; the
// second waits for the first's insert, which commits. The second gets the
// documented answer (a retry: Duplicate with the stored positions, when it is
// the same append to the same stream; a *DuplicateIDError otherwise) and its
// transaction is not aborted: it goes on and commits.
func TestTxSameIDRace(t *testing.T) {
	for _, sameStream := range []bool{true, false} {
		name := "OtherStream"
		if sameStream {
			name = "SameStream"
		}
		t.Run(name, func(t *testing.T) {
			app := appName()
			db := openOn(t, newPool(t, app), Options{Schema: newSchema(t)})
			s := db.Events()
			ctx := t.Context()
			event := testEvents("E", 1)
			inserted, commit := make(chan struct{}), make(chan struct{})
			var first eventstore.AppendResult
			firstDone := make(chan error, 1)
			go func() {
				firstDone <- db.Tx(ctx, func(tx *Tx) error {
					var err error
					if first, err = s.Append(ctx, "a", event, eventstore.InTx(tx)); err != nil {
						return err
					}
					close(inserted)
					<-commit
					return nil
				})
			}()
			<-inserted
			stream := "b"
			if sameStream {
				stream = "a"
			}
			err := db.Tx(ctx, func(tx *Tx) error {
				go func() {
					waitUntil(t, "the second unit of work waits for the first", func() bool { return waitingForLock(t, app) })
					close(commit)
				}()
				res, err := s.Append(ctx, stream, event, eventstore.InTx(tx))
				if sameStream {
					if err != nil || !res.Duplicate || res.FirstPosition != first.FirstPosition {
						return fmt.Errorf("the same append again: %+v, %v; want the first's result as a duplicate", res, err)
					}
				} else if !errors.Is(err, eventstore.ErrDuplicateID) {
					return fmt.Errorf("the same ID in another stream: %+v, %v; want ErrDuplicateID", res, err)
				}
				// The transaction goes on.
				_, err = s.Append(ctx, "c", testEvents("After", 1), eventstore.InTx(tx))
				return err
			})
			if err != nil {
				t.Fatalf("second unit of work: %v", err)
			}
			if err := <-firstDone; err != nil {
				t.Fatalf("first unit of work: %v", err)
			}
			got, err := collect(s.ReadAll(ctx, recado.Position{}))
			if err != nil || len(got) != 2 || got[0].ID != event[0].ID || got[0].Stream != "a" || got[1].Stream != "c" {
				t.Errorf("log = %v, %v; want the event in a once, then c's", got, err)
			}
		})
	}
}

// TestReadAllInsideTx: a unit of work that has a transaction id (from an
// append, or from a write of its own that recado does not see) holds the
// horizon; a ReadAll inside it, after other events committed behind it,
// returns what is readable instead of waiting for its own transaction.
func TestReadAllInsideTx(t *testing.T) {
	for _, how := range []string{"Append", "OwnWrite"} {
		t.Run(how, func(t *testing.T) {
			db := openTest(t, Options{})
			s := db.Events()
			ctx := t.Context()
			before := testEvents("Before", 1)
			if _, err := s.Append(ctx, "s", before); err != nil {
				t.Fatal(err)
			}
			err := db.Tx(ctx, func(tx *Tx) error {
				if how == "Append" {
					if _, err := s.Append(ctx, "mine", testEvents("Mine", 1), eventstore.InTx(tx)); err != nil {
						return err
					}
				} else if _, err := tx.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
					return err
				}
				if _, err := s.Append(ctx, "s", testEvents("Behind", 1)); err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(ctx, guard)
				defer cancel()
				got, err := collect(s.ReadAll(ctx, recado.Position{}))
				if err != nil || len(got) != 1 || got[0].ID != before[0].ID {
					return fmt.Errorf("ReadAll inside the unit of work: %d events, %v; want the one committed before it", len(got), err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := 2
			if how == "Append" {
				want = 3
			}
			if got, err := collect(s.ReadAll(ctx, recado.Position{})); err != nil || len(got) != want {
				t.Errorf("ReadAll after the unit of work: %d events, %v; want %d", len(got), err, want)
			}
		})
	}
}

// otherTx is a unit of work of some other backend.
type otherTx struct{}

func (otherTx) OnCommit(func()) {}

// TestInTxRefusesOtherUnits: a unit of work of another DB (of this package
// or another backend), or one that has ended, is refused by appends, deletes
// and State: the driver says driver.ErrForeignTx, the store ErrInvalid, and
// nothing is written.
func TestInTxRefusesOtherUnits(t *testing.T) {
	db, other := openTest(t, Options{}), openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	if _, err := s.Append(ctx, "s", testEvents("E", 1)); err != nil {
		t.Fatal(err)
	}
	var ended *Tx
	if err := db.Tx(ctx, func(tx *Tx) error { ended = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	check := func(what string, tx recado.Tx) {
		t.Helper()
		if _, err := s.Append(ctx, "s", testEvents("E", 1), eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Append with %s: %v, want ErrInvalid", what, err)
		}
		if err := s.Delete(ctx, "s", eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Delete with %s: %v, want ErrInvalid", what, err)
		}
		if err := s.Tombstone(ctx, "s", eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("Tombstone with %s: %v, want ErrInvalid", what, err)
		}
		if _, err := s.State(ctx, "s", eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("State with %s: %v, want ErrInvalid", what, err)
		}
		r := &driver.Request{Stream: "s", Events: testEvents("E", 1), Tx: tx}
		if err := db.events.Append(ctx, r); !errors.Is(err, driver.ErrForeignTx) || r.Outcome != driver.Pending {
			t.Errorf("driver Append with %s: %v, outcome %d; want ErrForeignTx, undecided", what, err, r.Outcome)
		}
		r = &driver.Request{Stream: "s", Tx: tx, Tombstone: true}
		if err := db.events.Delete(ctx, r); !errors.Is(err, driver.ErrForeignTx) || r.Outcome != driver.Pending {
			t.Errorf("driver Delete with %s: %v, outcome %d; want ErrForeignTx, undecided", what, err, r.Outcome)
		}
		if _, err := db.events.State(ctx, "s", tx); !errors.Is(err, driver.ErrForeignTx) {
			t.Errorf("driver State with %s: %v, want ErrForeignTx", what, err)
		}
	}
	check("a unit of work that has ended", ended)
	check("a unit of work of another backend", otherTx{})
	check("a nil *postgres.Tx", (*Tx)(nil))
	err := other.Tx(ctx, func(tx *Tx) error {
		check("a unit of work of another DB", tx)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := collect(s.ReadStream(ctx, "s")); err != nil || len(got) != 1 {
		t.Errorf("stream after the refused calls: %d events, %v; want 1", len(got), err)
	}
	if got, err := collect(other.Events().ReadAll(ctx, recado.Position{})); err != nil || len(got) != 0 {
		t.Errorf("the other DB's log after the refused calls: %d events, %v; want none", len(got), err)
	}
}

// TestTxOnCommit: the functions given to OnCommit run once the unit of work
// has committed (what it wrote is visible outside it), in order, before DB.Tx
// returns; not when it rolls back or fn panics. One may append to a stream
// the unit of work wrote to: its row is free by then.
func TestTxOnCommit(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	var ran []string
	err := db.Tx(ctx, func(tx *Tx) error {
		if _, err := s.Append(ctx, "s", testEvents("E", 1), eventstore.InTx(tx)); err != nil {
			return err
		}
		tx.OnCommit(func() {
			st, err := s.State(ctx, "s") // outside the unit of work
			ran = append(ran, fmt.Sprintf("first: version %d, %v", st.Version, err))
		})
		tx.OnCommit(func() {
			_, err := s.Append(ctx, "s", testEvents("E", 1), eventstore.ExpectVersion(1))
			ran = append(ran, fmt.Sprintf("second: %v", err))
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"first: version 1, <nil>", "second: <nil>"}
	if fmt.Sprint(ran) != fmt.Sprint(want) {
		t.Errorf("OnCommit functions ran as %q, want %q", ran, want)
	}

	boom := errors.New("boom")
	rolledBack := func(fn func(tx *Tx) error) {
		t.Helper()
		ran = nil
		func() {
			defer func() { _ = recover() }()
			_ = db.Tx(ctx, func(tx *Tx) error {
				tx.OnCommit(func() { ran = append(ran, "ran") })
				return fn(tx)
			})
		}()
		if len(ran) != 0 {
			t.Errorf("OnCommit function ran after a rollback")
		}
	}
	rolledBack(func(*Tx) error { return boom })
	rolledBack(func(*Tx) error { panic(boom) })
	rolledBack(func(tx *Tx) error {
		_, _ = tx.Exec(ctx, "SELECT 1/0") // the transaction is aborted: the commit fails
		return nil
	})
}

// TestStateInTx: State in a unit of work sees what the unit wrote and has
// not committed; outside it, the committed state.
func TestStateInTx(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	if _, err := s.Append(ctx, "s", testEvents("E", 2)); err != nil {
		t.Fatal(err)
	}
	state := func(opts ...eventstore.AppendOption) string {
		t.Helper()
		st, err := s.State(ctx, "s", opts...)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%+v", st)
	}
	committed := "{Version:2 Exists:true Deleted:false Tombstoned:false}"
	err := db.Tx(ctx, func(tx *Tx) error {
		if _, err := s.Append(ctx, "s", testEvents("E", 1), eventstore.InTx(tx)); err != nil {
			return err
		}
		if got, want := state(eventstore.InTx(tx)), "{Version:3 Exists:true Deleted:false Tombstoned:false}"; got != want {
			t.Errorf("State in the unit of work after an append = %s, want %s", got, want)
		}
		if err := s.Delete(ctx, "s", eventstore.InTx(tx)); err != nil {
			return err
		}
		if got, want := state(eventstore.InTx(tx)), "{Version:3 Exists:false Deleted:true Tombstoned:false}"; got != want {
			t.Errorf("State in the unit of work after a delete = %s, want %s", got, want)
		}
		if got := state(); got != committed {
			t.Errorf("State outside the unit of work = %s, want %s", got, committed)
		}
		return errors.New("roll back")
	})
	if err == nil {
		t.Fatal("Tx committed")
	}
	if got := state(); got != committed {
		t.Errorf("State after the rollback = %s, want %s", got, committed)
	}
	st, err := s.State(ctx, "never")
	if err != nil || st != (eventstore.StreamState{}) {
		t.Errorf("State of a stream never written = %+v, %v; want the zero state", st, err)
	}
}
