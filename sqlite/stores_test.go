package sqlite

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// What the recoverability stores do that is SQLite's own: their schema
// contracts and migrations, units of work that SQLite aborts, group commits
// that SQLite rolls back, and two processes sharing one file.

// schemaVersions returns the version of every contract recorded in the file.
func schemaVersions(t *testing.T, db *DB) map[string]int {
	t.Helper()
	got := make(map[string]int)
	err := db.Tx(t.Context(), func(tx *Tx) error {
		rows, err := tx.QueryContext(t.Context(), "SELECT contract, version FROM recado_schema")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var c string
			var v int
			if err := rows.Scan(&c, &v); err != nil {
				return err
			}
			got[c] = v
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// useStores writes to and reads back from each recoverability store of db,
// under names that tag makes unique.
func useStores(t *testing.T, db *DB, tag string) {
	t.Helper()
	ctx := t.Context()
	if first, err := db.Inbox(inbox.Config{}).Claim(ctx, nil, "billing", tag); err != nil || !first {
		t.Errorf("inbox Claim = %v, %v", first, err)
	}
	keys := db.IdempotencyKeys(idempotency.Config{})
	c, err := keys.Claim(ctx, nil, "alice", tag, []byte("fp"))
	if err == nil {
		err = keys.Complete(ctx, nil, c, []byte("r"))
	}
	if err != nil || c.Status != idempotency.Claimed {
		t.Errorf("idempotency Claim and Complete: %v, %v", c.Status, err)
	}
	if _, err := db.Leases(lease.Config{}).Acquire(ctx, tag, "node-a", time.Minute); err != nil {
		t.Errorf("lease Acquire: %v", err)
	}
	dl := db.DeadLetters(deadletter.Config{})
	l, err := dl.Add(ctx, nil, deadletter.Failure{Source: "projection:" + tag, Key: "k", Message: recado.Event{ID: tag, Type: "T"}, Err: errors.New("boom")})
	if err != nil {
		t.Fatalf("dead letter Add: %v", err)
	}
	if got, err := dl.Get(ctx, l.ID); err != nil || got.Message.ID != tag {
		t.Errorf("dead letter Get = %+v, %v", got, err)
	}
	cps := db.Checkpoints(checkpoint.Config{})
	if _, err := cps.Register(ctx, tag, 2); err != nil {
		t.Fatalf("checkpoint Register: %v", err)
	}
	saved := checkpoint.Checkpoint{Name: tag, Copy: 1, Partition: 1, Position: recado.NewPosition(7, 0)}
	if _, err := cps.Save(ctx, nil, saved); err != nil {
		t.Fatalf("checkpoint Save: %v", err)
	}
	if got, err := cps.Checkpoints(ctx, tag, 1); err != nil || len(got) != 2 || got[1].Position != saved.Position {
		t.Errorf("checkpoint Checkpoints = %+v, %v", got, err)
	}
}

func TestMigrateRecoverabilityStores(t *testing.T) {
	want := map[string]int{"events": 2, "deadletters": 1, "idempotency": 1, "inbox": 1, "leases": 1, "commands": 1, "snapshots": 1, "checkpoints": 1}
	t.Run("empty file", func(t *testing.T) {
		db := openTest(t, Options{})
		if got := schemaVersions(t, db); !maps.Equal(got, want) {
			t.Errorf("schema versions = %v, want %v", got, want)
		}
		useStores(t, db, "a")
	})
	t.Run("file of the previous schema", func(t *testing.T) {
		// A file as the version before these stores left it: only the events
		// contract, at its latest version, with an event in it.
		path := filepath.Join(t.TempDir(), "prev.db")
		raw := openSQL(dsn(path, "busy_timeout(5000)", "journal_mode(WAL)"))
		conn, err := raw.Conn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := migrateContracts(t.Context(), conn, path, contracts()[:1]); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"INSERT INTO recado_events (id, stream, version, type, data, time) VALUES ('e1', 'order-1', 1, 'Placed', x'7B7D', 0)",
			"INSERT INTO recado_streams (name, version) VALUES ('order-1', 1)",
		} {
			if _, err := conn.ExecContext(t.Context(), q); err != nil {
				t.Fatal(err)
			}
		}
		var tables int
		if err := conn.QueryRowContext(t.Context(), "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'recado_%' AND type = 'table'").Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 3 { // recado_schema, recado_events, recado_streams
			t.Fatalf("the previous schema has %d tables, want 3", tables)
		}
		if err := errors.Join(conn.Close(), raw.Close()); err != nil {
			t.Fatal(err)
		}

		db, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("Open of the previous schema: %v", err)
		}
		if got := schemaVersions(t, db); !maps.Equal(got, want) {
			t.Errorf("schema versions after the upgrade = %v, want %v", got, want)
		}
		if got := readStream(t, db.Events(), "order-1"); len(got) != 1 || got[0].ID != "e1" {
			t.Errorf("the event of the previous schema reads as %+v", got)
		}
		useStores(t, db, "a")
		// Opening again migrates nothing and keeps what the stores hold.
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = openPath(t, path)
		if got := schemaVersions(t, db); !maps.Equal(got, want) {
			t.Errorf("schema versions after reopening = %v, want %v", got, want)
		}
		if ok, err := db.Inbox(inbox.Config{}).Handled(t.Context(), "billing", "a"); err != nil || !ok {
			t.Errorf("inbox entry after reopening: %v, %v", ok, err)
		}
		useStores(t, db, "b")
	})
	t.Run("contract newer than this code", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "new.db")
		db := openPath(t, path)
		err := db.Tx(t.Context(), func(tx *Tx) error {
			_, err := tx.ExecContext(t.Context(), "UPDATE recado_schema SET version = 7 WHERE contract = 'inbox'")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db, err = Open(path, Options{})
		if err == nil {
			db.Close()
			t.Fatal("Open of a file whose inbox contract is at version 7 succeeded")
		}
		if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), `"inbox"`) {
			t.Errorf("Open = %v, want ErrSchemaTooNew naming the inbox contract", err)
		}
	})
}

// openPath opens path and closes the DB when the test ends.
func openPath(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestStoresInUnitOfWorkAbortedBySQLite: a unit of work whose transaction
// SQLite ends (here a trigger's RAISE(ROLLBACK) on an append) keeps nothing
// of what the recoverability stores and the checkpoint store did in it,
// before or after; their later calls in it fail with ErrTxAborted, and DB.Tx
// does.
func TestStoresInUnitOfWorkAbortedBySQLite(t *testing.T) {
	db := openTest(t, Options{})
	addPoison(t, db)
	ctx := t.Context()
	claims := db.Inbox(inbox.Config{})
	keys := db.IdempotencyKeys(idempotency.Config{})
	letters := db.DeadLetters(deadletter.Config{})
	leases := db.Leases(lease.Config{})
	held, err := leases.Acquire(ctx, "projection:orders", "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cps := db.Checkpoints(checkpoint.Config{})
	if _, err := cps.Register(ctx, "orders", 1); err != nil {
		t.Fatal(err)
	}
	at := func(n uint64) checkpoint.Checkpoint {
		return checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: recado.NewPosition(n, 0)}
	}
	failure := deadletter.Failure{Source: "projection:orders", Key: "order-1", Message: recado.Event{ID: "m1", Type: "T"}, Err: errors.New("boom")}
	err = db.Tx(ctx, func(tx *Tx) error {
		if err := leases.Guard(ctx, tx, held); err != nil {
			t.Fatal(err)
		}
		if first, err := claims.Claim(ctx, tx, "billing", "m1"); err != nil || !first {
			t.Fatalf("inbox Claim = %v, %v", first, err)
		}
		c, err := keys.Claim(ctx, tx, "alice", "k1", []byte("fp"))
		if err != nil || c.Status != idempotency.Claimed {
			t.Fatalf("idempotency Claim = %v, %v", c.Status, err)
		}
		if err := keys.Complete(ctx, tx, c, []byte("r")); err != nil {
			t.Fatal(err)
		}
		if _, err := letters.Add(ctx, tx, failure); err != nil {
			t.Fatal(err)
		}
		if _, err := cps.Save(ctx, tx, at(5)); err != nil {
			t.Fatal(err)
		}
		_, err = db.Events().Append(ctx, "order-2", events("poison", 1), eventstore.InTx(tx))
		if err == nil || !strings.Contains(err.Error(), "poisoned") {
			t.Fatalf("poisoned append = %v", err)
		}
		// fn carries on: every store call fails, naming the cause.
		calls := map[string]func() error{
			"lease Guard": func() error { return leases.Guard(ctx, tx, held) },
			"inbox Claim": func() error { _, err := claims.Claim(ctx, tx, "billing", "m2"); return err },
			"idempotency Claim": func() error {
				_, err := keys.Claim(ctx, tx, "alice", "k2", []byte("fp"))
				return err
			},
			"dead letter Add": func() error { _, err := letters.Add(ctx, tx, failure); return err },
			"checkpoint Save": func() error { _, err := cps.Save(ctx, tx, at(6)); return err },
			"checkpoint Swap": func() error { _, err := cps.Swap(ctx, tx, "orders", 2); return err },
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, ErrTxAborted) || !strings.Contains(err.Error(), "poisoned") {
				t.Errorf("%s after SQLite ended the transaction = %v, want ErrTxAborted naming the cause", name, err)
			}
		}
		return nil
	})
	if !errors.Is(err, ErrTxAborted) {
		t.Fatalf("Tx = %v, want ErrTxAborted", err)
	}
	for _, id := range []string{"m1", "m2"} {
		if ok, err := claims.Handled(ctx, "billing", id); err != nil || ok {
			t.Errorf("inbox Handled(%s) after the aborted unit = %v, %v; want false", id, ok, err)
		}
	}
	for _, k := range []string{"k1", "k2"} {
		if c, err := keys.Claim(ctx, nil, "alice", k, []byte("other")); err != nil || c.Status != idempotency.Claimed {
			t.Errorf("idempotency Claim(%s) after the aborted unit = %v, %v; want a new claim", k, c.Status, err)
		}
	}
	if got, err := letters.List(ctx, deadletter.Query{}); err != nil || len(got) != 0 {
		t.Errorf("dead letters after the aborted unit: %d, %v; want none", len(got), err)
	}
	if err := leases.Guard(ctx, nil, held); err != nil {
		t.Errorf("the lease after the aborted unit: %v", err)
	}
	if got, err := cps.Checkpoints(ctx, "orders", 1); err != nil || !got[0].Position.IsZero() {
		t.Errorf("checkpoints after the aborted unit = %+v, %v; want none saved", got, err)
	}
	// The DB goes on: the same writes in a unit of work that commits.
	err = db.Tx(ctx, func(tx *Tx) error {
		if err := leases.Guard(ctx, tx, held); err != nil {
			return err
		}
		if _, err := claims.Claim(ctx, tx, "billing", "m1"); err != nil {
			return err
		}
		_, err := letters.Add(ctx, tx, failure)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := letters.Blocked(ctx, "projection:orders"); err != nil || !slices.Equal(keys, []string{"order-1"}) {
		t.Errorf("Blocked after the next unit = %v, %v", keys, err)
	}
}

// TestStoreWritesInGroupCommit: the stores' writes outside a unit of work
// share group commits with appends. One that fails fails alone, whether the
// failure ends only its statement or SQLite rolls back the group's whole
// transaction; the others commit.
func TestStoreWritesInGroupCommit(t *testing.T) {
	db := openTest(t, Options{})
	addPoison(t, db)
	ctx := t.Context()
	err := db.Tx(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TRIGGER refuse BEFORE INSERT ON recado_inbox
WHEN NEW.message_id = 'refused' BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	claims := db.Inbox(inbox.Config{})
	keys := db.IdempotencyKeys(idempotency.Config{})
	const good = 6
	var wg sync.WaitGroup
	errs := make([]error, 2*good)
	var poisoned, refused error
	commits := db.Stats().Commits
	whileWriterHeld(t, db, func() {
		for i := range good {
			wg.Go(func() {
				var first bool
				first, errs[i] = claims.Claim(ctx, nil, "billing", fmt.Sprintf("m%d", i))
				if errs[i] == nil && !first {
					errs[i] = errors.New("not the first claim")
				}
			})
			wg.Go(func() {
				var c idempotency.Claim
				c, errs[good+i] = keys.Claim(ctx, nil, "alice", fmt.Sprintf("k%d", i), []byte("fp"))
				if errs[good+i] == nil && c.Status != idempotency.Claimed {
					errs[good+i] = fmt.Errorf("claim of a new key: %v", c.Status)
				}
			})
		}
		wg.Go(func() { _, refused = claims.Claim(ctx, nil, "billing", "refused") })
		wg.Go(func() { _, poisoned = db.Events().Append(ctx, "bad", events("poison", 1)) })
		waitQueued(t, db, 2*good+2)
	})
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("write %d grouped with failing ones: %v", i, err)
		}
	}
	if refused == nil || !strings.Contains(refused.Error(), "refused by trigger") {
		t.Errorf("claim the trigger refused = %v", refused)
	}
	if poisoned == nil || !strings.Contains(poisoned.Error(), "poisoned") {
		t.Errorf("append SQLite rolled back = %v", poisoned)
	}
	for i := range good {
		if ok, err := claims.Handled(ctx, "billing", fmt.Sprintf("m%d", i)); err != nil || !ok {
			t.Errorf("Handled(m%d) = %v, %v", i, ok, err)
		}
		if c, err := keys.Claim(ctx, nil, "alice", fmt.Sprintf("k%d", i), []byte("fp")); err != nil || c.Status != idempotency.InProgress {
			t.Errorf("Claim(k%d) again = %v, %v; want in progress", i, c.Status, err)
		}
	}
	if ok, _ := claims.Handled(ctx, "billing", "refused"); ok {
		t.Error("the refused claim was stored")
	}
	if got := db.Stats().Commits - commits; got != 0 {
		t.Errorf("Stats().Commits grew by %d for groups without an append", got)
	}
}

// TestStoreWriteCancelledWhileQueued: a write outside a unit of work whose
// context ends before the writer takes it fails with the context's error and
// stores nothing.
func TestStoreWriteCancelledWhileQueued(t *testing.T) {
	db := openTest(t, Options{})
	claims := db.Inbox(inbox.Config{})
	ctx, cancel := context.WithCancel(t.Context())
	var err error
	done := make(chan struct{})
	whileWriterHeld(t, db, func() {
		go func() {
			defer close(done)
			_, err = claims.Claim(ctx, nil, "billing", "m1")
		}()
		waitQueued(t, db, 1)
		cancel()
		<-done
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Claim cancelled while queued = %v, want context.Canceled", err)
	}
	if ok, err := claims.Handled(t.Context(), "billing", "m1"); err != nil || ok {
		t.Errorf("Handled = %v, %v; want false", ok, err)
	}
	if n := db.waiting.Load(); n != 0 {
		t.Errorf("%d writes still counted as waiting", n)
	}
}

// TestDeadLetterUpdateFailsAloneInUnitOfWork: a dead-letter call that fails
// part-way in a unit of work (here a trigger refuses its second write) leaves
// nothing of itself behind, and the unit commits the rest.
func TestDeadLetterUpdateFailsAloneInUnitOfWork(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	letters := db.DeadLetters(deadletter.Config{})
	const src = "projection:orders"
	l, err := letters.Add(ctx, nil, deadletter.Failure{Source: src, Key: "k", Message: recado.Event{ID: "m1", Type: "T"}, Err: errors.New("boom")})
	if err != nil {
		t.Fatal(err)
	}
	parked, err := letters.Park(ctx, nil, src, "k", recado.Event{ID: "m2", Type: "T"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := letters.Replay(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	// Delivered marks the letter replayed, then requests the parked one: the
	// trigger refuses the second write.
	err = db.Tx(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TRIGGER refuse BEFORE UPDATE OF state ON recado_dead_letters
WHEN OLD.state = 2 AND NEW.state = 3 BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	claims := db.Inbox(inbox.Config{})
	err = db.Tx(ctx, func(tx *Tx) error {
		if err := letters.Delivered(ctx, tx, l.ID); err == nil || !strings.Contains(err.Error(), "refused by trigger") {
			t.Errorf("Delivered = %v, want the trigger's error", err)
		}
		_, err := claims.Claim(ctx, tx, "billing", "m1")
		return err
	})
	if err != nil {
		t.Fatalf("Tx after a failed dead-letter call = %v", err)
	}
	if got, err := letters.Get(ctx, l.ID); err != nil || got.State != deadletter.Requested {
		t.Errorf("letter after the failed Delivered = %v, %v; want still requested", got.State, err)
	}
	if got, err := letters.Get(ctx, parked.ID); err != nil || got.State != deadletter.Parked {
		t.Errorf("parked letter = %v, %v; want parked", got.State, err)
	}
	if ok, err := claims.Handled(ctx, "billing", "m1"); err != nil || !ok {
		t.Errorf("the unit's other write: Handled = %v, %v", ok, err)
	}
}

// TestStoresAcrossProcesses: two DBs on one file, as two processes would
// open it, share the stores: of concurrent claims of one message from both
// exactly one wins, and a Guard in a unit of work of one holds off an
// Acquire of the other until the unit ends.
func TestStoresAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	a, b := openPath(t, path), openPath(t, path)
	ctx := t.Context()
	clock := resiliencetest.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	stores := []*inbox.Store{a.Inbox(inbox.Config{}), b.Inbox(inbox.Config{})}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 16 {
		wg.Go(func() {
			first, err := stores[i%2].Claim(ctx, nil, "billing", "m1")
			if err != nil {
				t.Errorf("Claim: %v", err)
			}
			if first {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d of 16 claims from two processes won, want exactly 1", wins)
	}

	la, lb := a.Leases(lease.Config{Now: clock.Now}), b.Leases(lease.Config{Now: clock.Now})
	held, err := la.Acquire(ctx, "l", "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	acquired := make(chan error, 1)
	err = a.Tx(ctx, func(tx *Tx) error {
		if err := la.Guard(ctx, tx, held); err != nil {
			return err
		}
		clock.Advance(time.Minute) // the lease expires while the unit is open
		go func() {
			_, err := lb.Acquire(ctx, "l", "node-b", time.Minute)
			acquired <- err
		}()
		// Give the Acquire time to run into the guard (this wait makes a
		// violation likely to show; it times nothing).
		time.Sleep(50 * time.Millisecond)
		select {
		case err := <-acquired:
			return fmt.Errorf("the other process's Acquire returned (%v) while the guarded unit was open", err)
		default:
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-acquired; err != nil {
		t.Errorf("Acquire after the guarded unit ended: %v", err)
	}
	if got, err := la.Get(ctx, "l"); err != nil || got.Holder != "node-b" || got.Token != held.Token+1 {
		t.Errorf("lease = %+v, %v; want node-b with token %d", got, err, held.Token+1)
	}
}

// TestStoresClosed: once the DB is closed, every call of its recoverability
// stores and of its checkpoint store fails with the store's ErrClosed.
func TestStoresClosed(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	claims := db.Inbox(inbox.Config{})
	keys := db.IdempotencyKeys(idempotency.Config{})
	letters := db.DeadLetters(deadletter.Config{})
	leases := db.Leases(lease.Config{})
	cps := db.Checkpoints(checkpoint.Config{})
	if _, err := cps.Register(ctx, "p", 1); err != nil {
		t.Fatal(err)
	}
	l, err := letters.Add(ctx, nil, deadletter.Failure{Source: "s", Message: recado.Event{ID: "m1", Type: "T"}, Err: errors.New("boom")})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name   string
		closed error
		call   func() error
	}{
		{"inbox Claim", inbox.ErrClosed, func() error { _, err := claims.Claim(ctx, nil, "c", "m"); return err }},
		{"inbox Handled", inbox.ErrClosed, func() error { _, err := claims.Handled(ctx, "c", "m"); return err }},
		{"inbox Cleanup", inbox.ErrClosed, func() error { _, err := claims.Cleanup(ctx); return err }},
		{"idempotency Claim", idempotency.ErrClosed, func() error { _, err := keys.Claim(ctx, nil, "s", "k", nil); return err }},
		{"idempotency Cleanup", idempotency.ErrClosed, func() error { _, err := keys.Cleanup(ctx); return err }},
		{"lease Acquire", lease.ErrClosed, func() error { _, err := leases.Acquire(ctx, "l", "h", time.Minute); return err }},
		{"lease Get", lease.ErrClosed, func() error { _, err := leases.Get(ctx, "l"); return err }},
		{"dead letter Add", deadletter.ErrClosed, func() error {
			_, err := letters.Add(ctx, nil, deadletter.Failure{Source: "s", Err: errors.New("boom")})
			return err
		}},
		{"dead letter Get", deadletter.ErrClosed, func() error { _, err := letters.Get(ctx, l.ID); return err }},
		{"dead letter List", deadletter.ErrClosed, func() error { _, err := letters.List(ctx, deadletter.Query{}); return err }},
		{"dead letter Groups", deadletter.ErrClosed, func() error { _, err := letters.Groups(ctx, deadletter.Query{}); return err }},
		{"dead letter Blocked", deadletter.ErrClosed, func() error { _, err := letters.Blocked(ctx, "s"); return err }},
		{"dead letter Replay", deadletter.ErrClosed, func() error { _, err := letters.Replay(ctx, l.ID); return err }},
		{"dead letter Cleanup", deadletter.ErrClosed, func() error { _, err := letters.Cleanup(ctx); return err }},
		{"checkpoint Register", checkpoint.ErrClosed, func() error { _, err := cps.Register(ctx, "q", 1); return err }},
		{"checkpoint Save", checkpoint.ErrClosed, func() error {
			_, err := cps.Save(ctx, nil, checkpoint.Checkpoint{Name: "p", Copy: 1, Position: recado.NewPosition(1, 0)})
			return err
		}},
		{"checkpoint Get", checkpoint.ErrClosed, func() error { _, err := cps.Get(ctx, "p"); return err }},
		{"checkpoint Checkpoints", checkpoint.ErrClosed, func() error { _, err := cps.Checkpoints(ctx, "p", 1); return err }},
		{"checkpoint Names", checkpoint.ErrClosed, func() error { _, err := cps.Names(ctx); return err }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, c.closed) {
			t.Errorf("%s after Close = %v, want %v", c.name, err, c.closed)
		}
	}
}
