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
	committed := s.Committed()
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
			committed := s.Committed()
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
		unit any
	}{
		{"another type", struct{}{}},
		{"a *sql.Tx-like string", "tx"},
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
		})
	}
}

// TestFinishedTx: every method of a Tx whose function has returned, and every
// store call given it, fails with ErrTxDone, which wraps sql.ErrTxDone; also
// after the DB has closed.
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
		{"Append", func() error {
			_, err := db.Events().Append(ctx, "s", events("e", 1), eventstore.InTx(done))
			return err
		}},
		{"Delete", func() error { return db.Events().Delete(ctx, "s", eventstore.InTx(done)) }},
		{"Tombstone", func() error { return db.Events().Tombstone(ctx, "s", eventstore.InTx(done)) }},
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
	calls = calls[:4] // the stores report ErrClosed first
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
		for m, err := range eventstore.Subscribe(ctx, reader.Events(), recado.Position{}) {
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
