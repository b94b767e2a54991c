package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
)

func createOrders(t *testing.T, db *DB) {
	t.Helper()
	err := db.Tx(t.Context(), func(tx *Tx) error {
		_, err := tx.ExecContext(t.Context(), "CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func countOrders(t *testing.T, db *DB) int {
	t.Helper()
	// On a read connection: what is committed, not what a Tx holds.
	rc, err := db.reads.get(db.closing)
	if err != nil {
		t.Fatal(err)
	}
	defer db.reads.put(rc, false)
	q, _, err := rc.conn.Prepare("SELECT count(*) FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if !q.Step() {
		t.Fatalf("count(*) returned no row: %v", q.Err())
	}
	return q.ColumnInt(0)
}

func closedNow(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestUnitOfWorkCommits(t *testing.T) {
	db := openTest(t, Options{})
	createOrders(t, db)
	ctx := t.Context()
	s := db.Events()
	committed := db.events.Committed()
	var res eventstore.AppendResult
	err := db.Tx(ctx, func(tx *Tx) error {
		var err error
		if res, err = s.Append(ctx, "order-1", events("placed", 2), eventstore.InTx(tx), eventstore.Expect(eventstore.NoStream)); err != nil {
			return err
		}
		if closedNow(committed) {
			t.Error("subscribers woken before the unit of work committed")
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO orders VALUES ('order-1', 42)")
		return err
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if !closedNow(committed) {
		t.Error("subscribers not woken after the unit of work committed")
	}
	if res.FirstVersion != 1 || res.LastVersion != 2 {
		t.Errorf("append in Tx = %+v, want versions 1..2", res)
	}
	if got := len(readStream(t, s, "order-1")); got != 2 {
		t.Errorf("read %d events, want 2", got)
	}
	if got := countOrders(t, db); got != 1 {
		t.Errorf("orders rows = %d, want 1", got)
	}
	// Group commit continues the gap-free log after the Tx's events.
	next, err := s.Append(ctx, "order-2", events("placed", 1))
	if p, _ := next.FirstPosition.Parts(); err != nil || p != 3 {
		t.Errorf("append after Tx at position %d, %v; want 3", p, err)
	}
	if st := db.Stats(); st.Txs != 2 {
		t.Errorf("Stats().Txs = %d, want 2", st.Txs)
	}
}

func TestUnitOfWorkRollsBack(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		fail func(tx *Tx) error
	}{
		{"fn error", func(*Tx) error { return boom }},
		{"append conflict returned", func(tx *Tx) error {
			_, err := tx.db.Events().Append(context.Background(), "order-1", events("again", 1), eventstore.InTx(tx), eventstore.Expect(eventstore.NoStream))
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t, Options{})
			createOrders(t, db)
			ctx := t.Context()
			s := db.Events()
			committed := db.events.Committed()
			err := db.Tx(ctx, func(tx *Tx) error {
				if _, err := s.Append(ctx, "order-1", events("placed", 1), eventstore.InTx(tx)); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, "INSERT INTO orders VALUES ('order-1', 42)"); err != nil {
					return err
				}
				return tc.fail(tx)
			})
			if err == nil {
				t.Fatal("Tx succeeded, want its error")
			}
			if got := len(readAll(t, s)); got != 0 {
				t.Errorf("log holds %d events after rollback, want 0", got)
			}
			if got := countOrders(t, db); got != 0 {
				t.Errorf("orders rows = %d after rollback, want 0", got)
			}
			if closedNow(committed) {
				t.Error("subscribers woken by a rolled back unit of work")
			}
		})
	}
}

func TestUnitOfWorkPanicRollsBack(t *testing.T) {
	db := openTest(t, Options{})
	createOrders(t, db)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic in fn not passed on")
			}
		}()
		_ = db.Tx(t.Context(), func(tx *Tx) error {
			if _, err := tx.ExecContext(t.Context(), "INSERT INTO orders VALUES ('x', 1)"); err != nil {
				t.Fatal(err)
			}
			panic("boom")
		})
	}()
	if got := countOrders(t, db); got != 0 {
		t.Errorf("orders rows = %d after panic, want 0", got)
	}
	// The writer is free again.
	if _, err := db.Events().Append(t.Context(), "s", events("e", 1)); err != nil {
		t.Fatal(err)
	}
}

func TestFailedAppendInTxLeavesNothing(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	stored := events("e", 1)
	if _, err := s.Append(ctx, "a", stored); err != nil {
		t.Fatal(err)
	}
	err := db.Tx(ctx, func(tx *Tx) error {
		bad := append(events("e", 2), stored[0])
		if _, err := s.Append(ctx, "b", bad, eventstore.InTx(tx)); !errors.Is(err, eventstore.ErrDuplicateID) {
			t.Errorf("append with a stored ID in third place: %v, want ErrDuplicateID", err)
		}
		return nil // commit what is left: nothing of the failed append
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(readAll(t, s)); got != 1 {
		t.Errorf("log holds %d events, want 1", got)
	}
}

// otherTx is a unit of work of another backend.
type otherTx struct{}

func (otherTx) OnCommit(func()) {}

func TestInTxRejectsForeignUnits(t *testing.T) {
	db := openTest(t, Options{})
	other := openTest(t, Options{})
	ctx := t.Context()
	var kept *Tx
	err := other.Tx(ctx, func(tx *Tx) error { kept = tx; return nil })
	if err != nil {
		t.Fatal(err)
	}
	var ownDone *Tx
	if err := db.Tx(ctx, func(tx *Tx) error { ownDone = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		unit recado.Tx
	}{
		{"another type", otherTx{}},
		{"nil *Tx", (*Tx)(nil)},
		{"Tx of another DB", kept},
		{"finished Tx", ownDone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := db.Events().Append(ctx, "s", events("e", 1), eventstore.InTx(tc.unit))
			if !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("Append InTx(%T) = %v, want ErrInvalid", tc.unit, err)
			}
			err = db.Events().Delete(ctx, "s", eventstore.InTx(tc.unit))
			if !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("Delete InTx(%T) = %v, want ErrInvalid", tc.unit, err)
			}
			_, err = db.Events().State(ctx, "s", eventstore.InTx(tc.unit))
			if !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("State InTx(%T) = %v, want ErrInvalid", tc.unit, err)
			}
		})
	}
}

// TestFinishedTx: every method of a Tx whose function has returned fails with
// ErrTxDone, which wraps sql.ErrTxDone; also after the DB has closed. (The
// event store refuses a finished Tx as ErrInvalid: TestInTxRejectsForeignUnits;
// its driver says ErrForeignTx and ErrTxDone: TestDriverState.)
func TestFinishedTx(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var done *Tx
	if err := db.Tx(ctx, func(tx *Tx) error { done = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"ExecContext", func() error { _, err := done.ExecContext(ctx, "SELECT 1"); return err }},
		{"QueryContext", func() error { _, err := done.QueryContext(ctx, "SELECT 1"); return err }},
		{"QueryRowContext", func() error { return done.QueryRowContext(ctx, "SELECT 1").Scan(new(int)) }},
		{"QueryRowContext.Err", func() error { return done.QueryRowContext(ctx, "SELECT 1").Err() }},
	}
	check := func(t *testing.T) {
		for _, c := range calls {
			err := c.call()
			if !errors.Is(err, ErrTxDone) || !errors.Is(err, sql.ErrTxDone) {
				t.Errorf("%s on a finished Tx = %v, want ErrTxDone wrapping sql.ErrTxDone", c.name, err)
			}
		}
	}
	t.Run("open", check)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("closed", check)
}

func TestTxWaitsForContext(t *testing.T) {
	db := openTest(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	whileWriterHeld(t, db, func() {
		done := make(chan error, 1)
		go func() { done <- db.Tx(ctx, func(*Tx) error { return nil }) }()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Tx waiting for the writer, cancelled: %v, want context.Canceled", err)
		}
	})
}

func TestSecondProcessSeesEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	writer, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	reader, err := Open(path, Options{PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	got := make(chan recado.Event, 4)
	go func() {
		defer close(got)
		// The subscription's own poll is an hour away: the reader's DB wakes
		// it every PollInterval.
		for m, err := range reader.Events().Subscribe(ctx, recado.Position{}, eventstore.WithPollInterval(time.Hour)) {
			if err != nil {
				return
			}
			if m.Kind == eventstore.KindEvent {
				got <- m.Event
			}
		}
	}()
	want := events("e", 3)
	if _, err := writer.Events().Append(ctx, "s", want); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		e := <-got
		if e.ID != want[i].ID || e.Version != uint64(i+1) {
			t.Fatalf("subscriber of the second DB got %s v%d, want %s v%d", e.ID, e.Version, want[i].ID, i+1)
		}
	}
	cancel()
	for range got {
	}
	// Both write: versions continue across them.
	res, err := reader.Events().Append(t.Context(), "s", events("e", 1), eventstore.ExpectVersion(3))
	if err != nil || res.FirstVersion != 4 {
		t.Errorf("append from the second DB = %+v, %v; want version 4", res, err)
	}
}

// TestOnCommit: the functions given to OnCommit run in order after the unit
// of work commits, before DB.Tx returns, with the writer
// free again (one of them appends); never when it rolls back or SQLite
// aborted it.
func TestOnCommit(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	s := db.Events()
	var ran []string
	inFn := true
	err := db.Tx(ctx, func(tx *Tx) error {
		tx.OnCommit(func() {
			if inFn {
				t.Error("OnCommit function ran before fn returned")
			}
			ran = append(ran, "first")
			if got := len(readStream(t, s, "s")); got != 1 {
				t.Errorf("OnCommit function read %d events of the unit of work, want them committed (1)", got)
			}
			if _, err := s.Append(ctx, "after", events("e", 1)); err != nil { // through group commit
				t.Errorf("append from an OnCommit function: %v", err)
			}
		})
		tx.OnCommit(func() { ran = append(ran, "second") })
		_, err := s.Append(ctx, "s", events("e", 1), eventstore.InTx(tx))
		inFn = false
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ran) != 2 || ran[0] != "first" || ran[1] != "second" {
		t.Errorf("OnCommit functions ran %v, want [first second]", ran)
	}
	if got := len(readStream(t, s, "after")); got != 1 {
		t.Errorf("the OnCommit function's append: %d events, want 1", got)
	}

	boom := errors.New("boom")
	err = db.Tx(ctx, func(tx *Tx) error {
		tx.OnCommit(func() { t.Error("OnCommit function ran after a rollback") })
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Tx = %v, want boom", err)
	}
	addPoison(t, db)
	err = db.Tx(ctx, func(tx *Tx) error {
		tx.OnCommit(func() { t.Error("OnCommit function ran after SQLite aborted the unit of work") })
		_, err := s.Append(ctx, "p", events("poison", 1), eventstore.InTx(tx))
		if err == nil {
			t.Error("poisoned append succeeded")
		}
		return nil
	})
	if !errors.Is(err, ErrTxAborted) {
		t.Fatalf("Tx = %v, want ErrTxAborted", err)
	}
	var kept *Tx
	if err := db.Tx(ctx, func(tx *Tx) error { kept = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	kept.OnCommit(func() { t.Error("OnCommit function of a finished Tx ran") })
	if err := db.Tx(ctx, func(*Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestDriverState: State reads the committed state on a read connection, and
// what the unit of work holds inside one; a unit of work that is not this
// DB's, or has finished, is ErrForeignTx.
func TestDriverState(t *testing.T) {
	db := openTest(t, Options{})
	other := openTest(t, Options{})
	ctx := t.Context()
	d := db.events
	s := db.Events()
	if _, err := s.Append(ctx, "s", events("e", 3)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "s", events("e", 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Tombstone(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		stream string
		want   driver.State
	}{
		{"s", driver.State{Version: 4, Start: 3}},
		{"gone", driver.State{Tombstoned: true}},
		{"none", driver.State{}},
	} {
		if got, err := d.State(ctx, tc.stream, nil); err != nil || got != tc.want {
			t.Errorf("State(%q) = %+v, %v; want %+v", tc.stream, got, err, tc.want)
		}
	}
	var done *Tx
	err := db.Tx(ctx, func(tx *Tx) error {
		done = tx
		if _, err := s.Append(ctx, "s", events("e", 2), eventstore.InTx(tx)); err != nil {
			return err
		}
		if got, err := d.State(ctx, "s", tx); err != nil || got != (driver.State{Version: 6, Start: 3}) {
			t.Errorf("State in the unit of work = %+v, %v; want version 6 from 3", got, err)
		}
		return other.Tx(ctx, func(otx *Tx) error {
			if _, err := d.State(ctx, "s", otx); !errors.Is(err, driver.ErrForeignTx) {
				t.Errorf("State in another DB's unit of work = %v, want ErrForeignTx", err)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.State(ctx, "s", done); !errors.Is(err, driver.ErrForeignTx) || !errors.Is(err, ErrTxDone) {
		t.Errorf("State in a finished unit of work = %v, want ErrForeignTx and ErrTxDone", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.State(ctx, "s", nil); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("State after Close = %v, want ErrClosed", err)
	}
}
