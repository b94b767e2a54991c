package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// Two DBs on one schema, each on a pool of its own whose sessions are named
// apps[i]: two processes sharing the stores.
func twoDBs(t *testing.T) (dbs [2]*DB, apps [2]string) {
	t.Helper()
	schema := newSchema(t)
	for i := range dbs {
		apps[i] = appName()
		dbs[i] = openOn(t, newPool(t, apps[i]), Options{Schema: schema})
	}
	return dbs, apps
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// TestLeaseTwoDBs: two processes compete for one lease: exactly one of their
// concurrent Acquires wins; after it expires the other takes it with the
// next token; the old holder's guarded unit of work holds the new holder's
// Acquire off until it commits, and afterwards its Guard fails and its write
// rolls back.
func TestLeaseTwoDBs(t *testing.T) {
	dbs, apps := twoDBs(t)
	ctx := t.Context()
	clock := resiliencetest.NewClock(t0)
	stores := [2]*lease.Store{dbs[0].Leases(lease.Config{Now: clock.Now}), dbs[1].Leases(lease.Config{Now: clock.Now})}
	const ttl = 10 * time.Second

	var mu sync.Mutex
	var won []lease.Lease
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			l, err := stores[i%2].Acquire(ctx, "runner", fmt.Sprintf("node-%d", i), ttl)
			switch {
			case err == nil:
				mu.Lock()
				won = append(won, l)
				mu.Unlock()
			case !errors.Is(err, lease.ErrHeld):
				t.Errorf("Acquire %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if len(won) != 1 || won[0].Token != 1 {
		t.Fatalf("concurrent Acquires from two DBs won %+v, want exactly one, token 1", won)
	}

	// A holds the lease through DB 0; B wants it through DB 1.
	a, err := stores[0].Acquire(ctx, "orders", "node-a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	fenced := func(l lease.Lease, typ string) error {
		return dbs[0].Tx(ctx, func(tx *Tx) error {
			if err := stores[0].Guard(ctx, tx, l); err != nil {
				return err
			}
			_, err := dbs[0].Events().Append(ctx, "orders-projection", testEvents(typ, 1), eventstore.InTx(tx))
			return err
		})
	}
	acquired := make(chan lease.Lease, 1)
	err = dbs[0].Tx(ctx, func(tx *Tx) error {
		if err := stores[0].Guard(ctx, tx, a); err != nil {
			return err
		}
		clock.Advance(ttl) // A's lease expires while its guarded unit is open
		go func() {
			b, err := stores[1].Acquire(ctx, "orders", "node-b", ttl)
			if err != nil {
				t.Errorf("Acquire by node-b: %v", err)
			}
			acquired <- b
		}()
		waitUntil(t, "node-b's Acquire waits for the guarded unit of work", func() bool { return waitingForLock(t, apps[1]) })
		_, err := dbs[0].Events().Append(ctx, "orders-projection", testEvents("WrittenWhileGuarded", 1), eventstore.InTx(tx))
		return err
	})
	if err != nil {
		t.Fatalf("guarded unit of work: %v", err)
	}
	b := <-acquired
	if b.Token != a.Token+1 {
		t.Errorf("node-b's token = %d, want %d", b.Token, a.Token+1)
	}
	if err := fenced(a, "WrittenByStaleHolder"); !errors.Is(err, lease.ErrLost) {
		t.Errorf("unit of work guarded by the stale lease = %v, want ErrLost", err)
	}
	if _, err := stores[0].Renew(ctx, a, ttl); !errors.Is(err, lease.ErrLost) {
		t.Errorf("Renew of the stale lease = %v, want ErrLost", err)
	}
	got, err := collect(dbs[1].Events().ReadStream(ctx, "orders-projection"))
	if err != nil || len(got) != 1 || got[0].Type != "WrittenWhileGuarded" {
		t.Errorf("fenced stream = %v, %v; want only the write made while the lease was guarded", got, err)
	}
}

// TestIdempotencyTwoDBs: of concurrent claims of one key from two processes
// exactly one is Claimed; the other process sees the key in progress, then
// completed with the response.
func TestIdempotencyTwoDBs(t *testing.T) {
	dbs, _ := twoDBs(t)
	ctx := t.Context()
	stores := [2]*idempotency.Store{dbs[0].IdempotencyKeys(idempotency.Config{}), dbs[1].IdempotencyKeys(idempotency.Config{})}
	fp := []byte("fingerprint")
	var mu sync.Mutex
	var claimed []idempotency.Claim
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			c, err := stores[i%2].Claim(ctx, nil, "alice", "k1", fp)
			switch {
			case err != nil:
				t.Errorf("Claim %d: %v", i, err)
			case c.Status == idempotency.Claimed:
				mu.Lock()
				claimed = append(claimed, c)
				mu.Unlock()
			case c.Status != idempotency.InProgress:
				t.Errorf("Claim %d = %v, want claimed or in progress", i, c.Status)
			}
		})
	}
	wg.Wait()
	if len(claimed) != 1 {
		t.Fatalf("%d of 16 concurrent claims from two DBs were Claimed, want exactly 1", len(claimed))
	}
	if err := stores[1].Complete(ctx, nil, claimed[0], []byte("201 Created")); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		c, err := s.Claim(ctx, nil, "alice", "k1", fp)
		if err != nil || c.Status != idempotency.Completed || string(c.Response) != "201 Created" {
			t.Errorf("DB %d: claim after completion = %v %q, %v", i, c.Status, c.Response, err)
		}
	}
}

// TestInboxTwoDBs: two processes deliver one message many times at once, each
// delivery claiming it and appending its effect in one unit of work: the
// effect happens once.
func TestInboxTwoDBs(t *testing.T) {
	dbs, _ := twoDBs(t)
	ctx := t.Context()
	stores := [2]*inbox.Store{dbs[0].Inbox(inbox.Config{}), dbs[1].Inbox(inbox.Config{})}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			db := dbs[i%2]
			err := db.Tx(ctx, func(tx *Tx) error {
				first, err := stores[i%2].Claim(ctx, tx, "billing", "m1")
				if err != nil || !first {
					return err
				}
				_, err = db.Events().Append(ctx, "invoices", testEvents("InvoiceIssued", 1), eventstore.InTx(tx))
				return err
			})
			if err != nil {
				t.Errorf("delivery %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got, err := collect(dbs[0].Events().ReadStream(ctx, "invoices"))
	if err != nil || len(got) != 1 {
		t.Errorf("effects = %d events, %v; want exactly 1", len(got), err)
	}
}

// TestDeadLetterParkRacesDelivery: one process delivers the last open letter
// of a key while another parks a message behind it. Whichever comes first,
// the message is never left parked behind nothing: either Park finds the key
// free (ErrNotBlocked), or the delivery requests the message it parked.
func TestDeadLetterParkRacesDelivery(t *testing.T) {
	dbs, _ := twoDBs(t)
	ctx := t.Context()
	stores := [2]*deadletter.Store{dbs[0].DeadLetters(deadletter.Config{}), dbs[1].DeadLetters(deadletter.Config{})}
	msg := func(i int) recado.Event {
		return recado.Event{ID: fmt.Sprintf("m-%d", i), Type: "OrderPlaced", Stream: "order-1"}
	}
	parked, notBlocked := 0, 0
	for round := range 40 {
		key := fmt.Sprintf("order-%d", round)
		l, err := stores[0].Add(ctx, nil, deadletter.Failure{Source: "projection:orders", Key: key, Message: msg(2 * round), Err: errors.New("boom")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stores[0].Replay(ctx, l.ID); err != nil {
			t.Fatal(err)
		}
		var p deadletter.Letter
		var parkErr, deliverErr error
		var wg sync.WaitGroup
		wg.Go(func() { deliverErr = stores[0].Delivered(ctx, nil, l.ID) })
		wg.Go(func() { p, parkErr = stores[1].Park(ctx, nil, "projection:orders", key, msg(2*round+1)) })
		wg.Wait()
		if deliverErr != nil {
			t.Fatalf("round %d: Delivered: %v", round, deliverErr)
		}
		switch {
		case errors.Is(parkErr, deadletter.ErrNotBlocked):
			notBlocked++
		case parkErr != nil:
			t.Fatalf("round %d: Park: %v", round, parkErr)
		default:
			parked++
			got, err := stores[1].Get(ctx, p.ID)
			if err != nil || got.State != deadletter.Requested {
				t.Fatalf("round %d: the message parked while its key's last letter was delivered is %v (%v), want requested", round, got.State, err)
			}
			if err := stores[1].Delivered(ctx, nil, p.ID); err != nil {
				t.Fatal(err)
			}
		}
		if keys, err := stores[1].Blocked(ctx, "projection:orders"); err != nil || len(keys) != 0 {
			t.Fatalf("round %d: blocked keys %v, %v; want none", round, keys, err)
		}
	}
	t.Logf("parked behind the delivery %d times, found the key free %d times", parked, notBlocked)
}

// TestCleanupSkipsHeldRows: cleanup deletes in batches and never waits for a
// row another transaction holds: it leaves it for a later cleanup. The
// dead-letter queue's cleanup also deletes the lock rows of the keys whose
// letters it deleted.
func TestCleanupSkipsHeldRows(t *testing.T) {
	db := openTest(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), guard) // a wait for the held row would end here
	defer cancel()
	clock := resiliencetest.NewClock(t0)
	ib := db.Inbox(inbox.Config{Now: clock.Now, Retention: time.Hour, CleanupBatch: 2})
	for i := range 5 {
		if _, err := ib.Claim(ctx, nil, "billing", fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	dl := db.DeadLetters(deadletter.Config{Now: clock.Now, Retention: time.Hour, CleanupBatch: 2})
	for i := range 3 {
		l, err := dl.Add(ctx, nil, deadletter.Failure{Source: "s", Key: fmt.Sprintf("k%d", i), Message: recado.Event{Type: "T"}, Err: errors.New("boom")})
		if err != nil {
			t.Fatal(err)
		}
		if err := dl.Discard(ctx, l.ID, "obsolete"); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Hour + time.Microsecond)

	holder, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background())
	if _, err := holder.Exec(ctx, "SELECT FROM "+db.schema+".inbox WHERE message_id = 'm2' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	if n, err := ib.Cleanup(ctx); err != nil || n != 4 {
		t.Fatalf("inbox Cleanup with a row held = %d, %v; want the 4 others", n, err)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := ib.Cleanup(ctx); err != nil || n != 1 {
		t.Errorf("inbox Cleanup after the row was released = %d, %v; want 1", n, err)
	}

	var keys int
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM "+db.schema+".dead_letter_keys").Scan(&keys); err != nil || keys != 3 {
		t.Fatalf("key rows before cleanup = %d, %v; want 3", keys, err)
	}
	if n, err := dl.Cleanup(ctx); err != nil || n != 3 {
		t.Fatalf("dead letters Cleanup = %d, %v; want 3", n, err)
	}
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM "+db.schema+".dead_letter_keys").Scan(&keys); err != nil || keys != 0 {
		t.Errorf("key rows after cleanup = %d, %v; want 0", keys, err)
	}
}

// TestStoresAfterClose: every store refuses calls after Close with its
// contract's ErrClosed.
func TestStoresAfterClose(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	dl, ik, ib, ls := db.DeadLetters(deadletter.Config{}), db.IdempotencyKeys(idempotency.Config{}), db.Inbox(inbox.Config{}), db.Leases(lease.Config{})
	cs := db.Checkpoints(checkpoint.Config{})
	db.Close()
	if _, err := dl.Add(ctx, nil, deadletter.Failure{Source: "s", Err: errors.New("boom")}); !errors.Is(err, deadletter.ErrClosed) {
		t.Errorf("deadletter Add after Close = %v", err)
	}
	if _, err := dl.List(ctx, deadletter.Query{}); !errors.Is(err, deadletter.ErrClosed) {
		t.Errorf("deadletter List after Close = %v", err)
	}
	if _, err := ik.Claim(ctx, nil, "s", "k", nil); !errors.Is(err, idempotency.ErrClosed) {
		t.Errorf("idempotency Claim after Close = %v", err)
	}
	if _, err := ib.Claim(ctx, nil, "c", "m"); !errors.Is(err, inbox.ErrClosed) {
		t.Errorf("inbox Claim after Close = %v", err)
	}
	if _, err := ib.Handled(ctx, "c", "m"); !errors.Is(err, inbox.ErrClosed) {
		t.Errorf("inbox Handled after Close = %v", err)
	}
	if _, err := ls.Acquire(ctx, "l", "h", time.Second); !errors.Is(err, lease.ErrClosed) {
		t.Errorf("lease Acquire after Close = %v", err)
	}
	if _, err := ls.Get(ctx, "l"); !errors.Is(err, lease.ErrClosed) {
		t.Errorf("lease Get after Close = %v", err)
	}
	if _, err := cs.Register(ctx, "p", 1); !errors.Is(err, checkpoint.ErrClosed) {
		t.Errorf("checkpoint Register after Close = %v", err)
	}
	if _, err := cs.Names(ctx); !errors.Is(err, checkpoint.ErrClosed) {
		t.Errorf("checkpoint Names after Close = %v", err)
	}
}

// TestIdempotencyGroups: many clients claim and complete keys of their own
// at once, and all claim one shared key: grouped, each gets its own
// response, and exactly one claims the shared key.
func TestIdempotencyGroups(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	s := db.IdempotencyKeys(idempotency.Config{})
	var mu sync.Mutex
	shared := 0
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			key := fmt.Sprintf("own-%d", i)
			c, err := s.Claim(ctx, nil, "alice", key, []byte(key))
			if err != nil || c.Status != idempotency.Claimed {
				t.Errorf("claim of %s = %v, %v", key, c.Status, err)
				return
			}
			if err := s.Complete(ctx, nil, c, []byte("response of "+key)); err != nil {
				t.Errorf("complete %s: %v", key, err)
			}
			sc, err := s.Claim(ctx, nil, "alice", "shared", []byte("fp"))
			switch {
			case err != nil:
				t.Errorf("claim of the shared key: %v", err)
			case sc.Status == idempotency.Claimed:
				mu.Lock()
				shared++
				mu.Unlock()
			case sc.Status != idempotency.InProgress:
				t.Errorf("claim of the shared key = %v", sc.Status)
			}
		})
	}
	wg.Wait()
	if shared != 1 {
		t.Errorf("%d clients claimed the shared key, want 1", shared)
	}
	for i := range 64 {
		key := fmt.Sprintf("own-%d", i)
		c, err := s.Claim(ctx, nil, "alice", key, []byte(key))
		if err != nil || c.Status != idempotency.Completed || string(c.Response) != "response of "+key {
			t.Errorf("%s: %v %q, %v", key, c.Status, c.Response, err)
		}
	}
}

// TestIdempotencyGroupHeldKey: a claim whose key a unit of work holds (its
// claim not committed yet) waits for the unit, while claims of other keys go
// on; it then sees the unit's claim.
func TestIdempotencyGroupHeldKey(t *testing.T) {
	app := appName()
	db := openOn(t, newPool(t, app), Options{Schema: newSchema(t)})
	ctx := t.Context()
	s := db.IdempotencyKeys(idempotency.Config{})
	waiting := make(chan idempotency.Claim, 1)
	err := db.Tx(ctx, func(tx *Tx) error {
		if c, err := s.Claim(ctx, tx, "alice", "held", []byte("fp")); err != nil || c.Status != idempotency.Claimed {
			return fmt.Errorf("claim in the unit of work: %v, %v", c.Status, err)
		}
		go func() {
			c, err := s.Claim(ctx, nil, "alice", "held", []byte("fp"))
			if err != nil {
				t.Errorf("claim of the held key: %v", err)
			}
			waiting <- c
		}()
		waitUntil(t, "the claim of the held key waits", func() bool { return waitingForLock(t, app) })
		for i := range 8 {
			if c, err := s.Claim(ctx, nil, "alice", fmt.Sprintf("free-%d", i), []byte("fp")); err != nil || c.Status != idempotency.Claimed {
				return fmt.Errorf("claim of a free key while another is held: %v, %v", c.Status, err)
			}
		}
		select {
		case c := <-waiting:
			return fmt.Errorf("the claim of the held key returned %v before the unit of work ended", c.Status)
		default:
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := <-waiting; c.Status != idempotency.InProgress {
		t.Errorf("claim of the key after the unit of work committed its claim = %v, want in progress", c.Status)
	}
}

// TestIdempotencyGroupKeyInsertedMeanwhile: another process inserts a key
// between a group's read and its write: the group is decided again, on the
// row that process stored.
func TestIdempotencyGroupKeyInsertedMeanwhile(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	k := newIdempotencyKeys(db)
	var once sync.Once
	groups := 0
	k.beforeWrite = func() {
		groups++
		once.Do(func() {
			other := idempotency.New(&idempotencyKeys{db: db, lock: k.lock, insert: k.insert, update: k.update, delete: k.delete, noGroup: true}, idempotency.Config{})
			if _, err := other.Claim(ctx, nil, "alice", "k1", []byte("other payload")); err != nil {
				t.Errorf("the other process's claim: %v", err)
			}
		})
	}
	s := idempotency.New(k, idempotency.Config{})
	c, err := s.Claim(ctx, nil, "alice", "k1", []byte("payload"))
	if err != nil || c.Status != idempotency.Mismatch {
		t.Errorf("claim of a key another process claimed meanwhile with another payload = %v, %v; want mismatch", c.Status, err)
	}
	if groups != 2 {
		t.Errorf("the group was decided %d times, want 2", groups)
	}
}

// TestLeaseRenewWhileGuarded: the holder renews and releases its lease while
// a unit of work it guards is open (its workers run such units all the
// time); a new holder's Acquire still waits for the unit.
func TestLeaseRenewWhileGuarded(t *testing.T) {
	app := appName()
	db := openOn(t, newPool(t, app), Options{Schema: newSchema(t)})
	ctx := t.Context()
	clock := resiliencetest.NewClock(t0)
	s := db.Leases(lease.Config{Now: clock.Now})
	l, err := s.Acquire(ctx, "orders", "node-a", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	acquired := make(chan error, 1)
	err = db.Tx(ctx, func(tx *Tx) error {
		if err := s.Guard(ctx, tx, l); err != nil {
			return err
		}
		other := db.Leases(lease.Config{Now: clock.Now})
		bounded, cancel := context.WithTimeout(ctx, guard) // a wait for the unit of work would end here
		defer cancel()
		renewed, err := other.Renew(bounded, l, 20*time.Second)
		if err != nil {
			return fmt.Errorf("Renew while a guarded unit of work is open: %w", err)
		}
		if err := other.Release(bounded, renewed); err != nil {
			return fmt.Errorf("Release while a guarded unit of work is open: %w", err)
		}
		go func() {
			_, err := other.Acquire(ctx, "orders", "node-b", 10*time.Second)
			acquired <- err
		}()
		waitUntil(t, "node-b's Acquire waits for the guarded unit of work", func() bool { return waitingForLock(t, app) })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-acquired; err != nil {
		t.Errorf("Acquire after the guarded unit of work ended: %v", err)
	}
}

// TestStoresOddSchemaName: the stores work in a schema whose name holds
// quotes, placeholders and format verbs, none of which runs as SQL.
func TestStoresOddSchemaName(t *testing.T) {
	name := newSchema(t) + `"'$1%[1]s\`
	t.Cleanup(func() {
		if _, err := newPool(t, "").Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %q: %v", name, err)
		}
	})
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			pool := newPool(t, "")
			if mode.configure != nil {
				pool = newPoolWith(t, mode.configure)
			}
			db := openOn(t, pool, Options{Schema: name})
			ctx := t.Context()
			id := mode.name
			if _, err := db.Leases(lease.Config{}).Acquire(ctx, id, "h", time.Minute); err != nil {
				t.Errorf("lease: %v", err)
			}
			if c, err := db.IdempotencyKeys(idempotency.Config{}).Claim(ctx, nil, "s", id, nil); err != nil || c.Status != idempotency.Claimed {
				t.Errorf("idempotency key: %v, %v", c.Status, err)
			}
			if first, err := db.Inbox(inbox.Config{}).Claim(ctx, nil, "c", id); err != nil || !first {
				t.Errorf("inbox: %v, %v", first, err)
			}
			dl := db.DeadLetters(deadletter.Config{})
			if _, err := dl.Add(ctx, nil, deadletter.Failure{Source: "s", Key: id, Message: recado.Event{Type: "T"}, Err: errors.New("boom")}); err != nil {
				t.Errorf("dead letter: %v", err)
			}
			if keys, err := dl.Blocked(ctx, "s"); err != nil || !slices.Contains(keys, id) {
				t.Errorf("blocked keys = %v, %v", keys, err)
			}
			cs := db.Checkpoints(checkpoint.Config{})
			if _, err := cs.Register(ctx, id, 1); err != nil {
				t.Errorf("checkpoint Register: %v", err)
			}
			if _, err := cs.Save(ctx, nil, checkpoint.Checkpoint{Name: id, Copy: 1, Position: recado.NewPosition(1, 2)}); err != nil {
				t.Errorf("checkpoint Save: %v", err)
			}
			if cps, err := cs.Checkpoints(ctx, id, 1); err != nil || len(cps) != 1 || cps[0].Position != recado.NewPosition(1, 2) {
				t.Errorf("checkpoints = %+v, %v", cps, err)
			}
			if names, err := cs.Names(ctx); err != nil || !slices.Contains(names, id) {
				t.Errorf("checkpoint Names = %v, %v", names, err)
			}
		})
	}
}

// TestIdempotencyGroupCallerGivesUp: a caller that gives up while its call
// waits for a group returns at once and its call never runs; one that gives
// up while its group commits returns at once too, saying the outcome is
// unknown, and the group commits the call.
func TestIdempotencyGroupCallerGivesUp(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	k := newIdempotencyKeys(db)
	entered, release := make(chan struct{}, 16), make(chan struct{})
	k.beforeWrite = func() { entered <- struct{}{}; <-release }
	s := idempotency.New(k, idempotency.Config{})
	fp := []byte("fp")
	claim := func(ctx context.Context, key string) chan error {
		done := make(chan error, 1)
		go func() { _, err := s.Claim(ctx, nil, "alice", key, fp); done <- err }()
		return done
	}
	queued := func(n int) func() bool {
		return func() bool { k.groups.mu.Lock(); defer k.groups.mu.Unlock(); return len(k.groups.queue) == n }
	}
	// Both leaders are held between their groups' round trips.
	var leaders []chan error
	for i := range keyGroupLeaders {
		leaders = append(leaders, claim(ctx, fmt.Sprintf("leader-%d", i)))
		<-entered
	}
	waiting, giveUp := context.WithCancel(ctx)
	abandoned := claim(waiting, "abandoned")
	waitUntil(t, "a third call queues", queued(1))
	giveUp()
	if err := <-abandoned; !errors.Is(err, context.Canceled) {
		t.Errorf("a call given up while queued = %v, want context.Canceled", err)
	}
	// Two more calls queue; when the first leader is done, the next of them
	// leads a group with both, which is held in turn.
	next := claim(ctx, "next")
	waitUntil(t, "a call queues", queued(2))
	committing, giveUpLate := context.WithCancel(ctx)
	late := claim(committing, "late")
	waitUntil(t, "another call queues", queued(3))
	release <- struct{}{}
	if err := <-leaders[0]; err != nil {
		t.Fatal(err)
	}
	<-entered // the group of "next" and "late"
	giveUpLate()
	if err := <-late; !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "may commit") {
		t.Errorf("a call given up while its group commits = %v, want context.Canceled, outcome unknown", err)
	}
	close(release)
	for _, done := range []chan error{leaders[1], next} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for key, want := range map[string]idempotency.Status{"abandoned": idempotency.Claimed, "late": idempotency.InProgress} {
		if c, err := s.Claim(ctx, nil, "alice", key, fp); err != nil || c.Status != want {
			t.Errorf("claim of %q afterwards = %v, %v; want %v", key, c.Status, err, want)
		}
	}
}
