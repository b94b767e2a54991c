// Package inboxtest is the conformance suite every backend of package inbox
// runs from its own tests.
//
//	func TestInbox(t *testing.T) {
//		inboxtest.Run(t, func(tb testing.TB, cfg inbox.Config) inboxtest.Backend {
//			db := memory.New()
//			tb.Cleanup(func() { db.Close() })
//			return inboxtest.Backend{Store: db.Inbox(cfg), Tx: ...}
//		})
//	}
//
// The suite drives the Store's clock through the [inbox.Config] it passes to
// the factory. It proves: a message is claimed once per consumer; of
// concurrent claims exactly one wins, in units of work too; a claim commits
// with its unit of work or not at all, is invisible to others until then and
// makes concurrent claims wait for the outcome; retention and batched
// cleanup; bad input; and, for backends that keep data, that a restart loses
// nothing.
package inboxtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// Backend is a backend under test.
type Backend struct {
	// Store is a Store of a fresh, empty DB, made with the Config the
	// factory was given.
	Store *inbox.Store
	// Tx runs fn in a unit of work of the same DB; nil if the backend has
	// none (the unit-of-work tests are then skipped).
	Tx func(ctx context.Context, fn func(tx recado.Tx) error) error
	// Reopen closes the DB and opens it again on the same storage, with the
	// same Config, as a process restart would; nil if the backend keeps
	// nothing across a restart (memory).
	Reopen func() Backend
	// Events is the event store of the same DB, for [Bench]; Run does not
	// use it.
	Events *eventstore.Store
}

// Factory returns a fresh backend whose Store uses cfg. It registers its own
// cleanup with tb.
type Factory func(tb testing.TB, cfg inbox.Config) Backend

// T0 is the time the suite's clock starts at.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

// Retention and CleanupBatch are what the suite configures, except in the
// test of the defaults.
const (
	Retention    = time.Hour
	CleanupBatch = 2
)

// Run runs the suite as subtests of t, each with its own backend.
func Run(t *testing.T, newBackend Factory) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := resiliencetest.NewClock(T0)
			cfg := inbox.Config{Now: clock.Now, Retention: Retention, CleanupBatch: CleanupBatch}
			tc.run(t, &env{Backend: newBackend(t, cfg), clock: clock, cfg: cfg, newBackend: newBackend})
		})
	}
}

type env struct {
	Backend
	clock      *resiliencetest.Clock
	cfg        inbox.Config
	newBackend Factory
}

var tests = []struct {
	name string
	run  func(t *testing.T, e *env)
}{
	{"ClaimOnce", testClaimOnce},
	{"ConcurrentClaims", testConcurrentClaims},
	{"ConcurrentClaimsInTx", testConcurrentClaimsInTx},
	{"Rollback", testRollback},
	{"ClaimTwiceInOneTx", testClaimTwiceInTx},
	{"InvisibleUntilCommit", testInvisibleUntilCommit},
	{"WaitForOpenClaim", testWaitForOpenClaim},
	{"Cleanup", testCleanup},
	{"DefaultRetention", testDefaultRetention},
	{"ForeignTx", testForeignTx},
	{"Invalid", testInvalid},
	{"Restart", testRestart},
}

func claim(t *testing.T, s *inbox.Store, tx recado.Tx, consumer, id string) bool {
	t.Helper()
	first, err := s.Claim(t.Context(), tx, consumer, id)
	if err != nil {
		t.Fatalf("Claim(%q, %q): %v", consumer, id, err)
	}
	return first
}

func handled(t *testing.T, s *inbox.Store, consumer, id string) bool {
	t.Helper()
	ok, err := s.Handled(t.Context(), consumer, id)
	if err != nil {
		t.Fatalf("Handled(%q, %q): %v", consumer, id, err)
	}
	return ok
}

func needTx(t *testing.T, e *env) {
	if e.Tx == nil {
		t.Skip("backend has no unit of work")
	}
}

func testClaimOnce(t *testing.T, e *env) {
	if handled(t, e.Store, "billing", "m1") {
		t.Fatal("Handled before any claim = true")
	}
	if !claim(t, e.Store, nil, "billing", "m1") {
		t.Fatal("first Claim = false, want true")
	}
	if claim(t, e.Store, nil, "billing", "m1") {
		t.Error("second Claim = true, want false")
	}
	if !handled(t, e.Store, "billing", "m1") {
		t.Error("Handled after a claim = false")
	}
	if !claim(t, e.Store, nil, "shipping", "m1") {
		t.Error("Claim of the same message by another consumer = false, want true")
	}
	if !claim(t, e.Store, nil, "billing", "m2") {
		t.Error("Claim of another message = false, want true")
	}
}

// countWins runs n claims of one message at once and returns how many won.
func countWins(t *testing.T, n int, claimOne func() (bool, error)) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range n {
		wg.Go(func() {
			first, err := claimOne()
			if err != nil {
				t.Errorf("concurrent Claim: %v", err)
				return
			}
			if first {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return wins
}

func testConcurrentClaims(t *testing.T, e *env) {
	wins := countWins(t, 16, func() (bool, error) { return e.Store.Claim(t.Context(), nil, "billing", "m1") })
	if wins != 1 {
		t.Errorf("%d of 16 concurrent claims won, want exactly 1", wins)
	}
}

func testConcurrentClaimsInTx(t *testing.T, e *env) {
	needTx(t, e)
	wins := countWins(t, 16, func() (bool, error) {
		var first bool
		err := e.Tx(t.Context(), func(tx recado.Tx) error {
			var err error
			first, err = e.Store.Claim(t.Context(), tx, "billing", "m1")
			return err
		})
		return first, err
	})
	if wins != 1 {
		t.Errorf("%d of 16 concurrent claims in units of work won, want exactly 1", wins)
	}
}

var errRollback = errors.New("inboxtest: roll back")

func testRollback(t *testing.T, e *env) {
	needTx(t, e)
	err := e.Tx(t.Context(), func(tx recado.Tx) error {
		if !claim(t, e.Store, tx, "billing", "m1") {
			t.Error("Claim in a unit of work = false, want true")
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx = %v, want the function's error", err)
	}
	if handled(t, e.Store, "billing", "m1") {
		t.Error("Handled after the unit of work rolled back = true: the claim outlived its unit")
	}
	var first bool
	if err := e.Tx(t.Context(), func(tx recado.Tx) error {
		first = claim(t, e.Store, tx, "billing", "m1")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !first || !handled(t, e.Store, "billing", "m1") {
		t.Errorf("Claim after a rollback = %v, handled = %v; want true, true", first, handled(t, e.Store, "billing", "m1"))
	}
}

func testClaimTwiceInTx(t *testing.T, e *env) {
	needTx(t, e)
	err := e.Tx(t.Context(), func(tx recado.Tx) error {
		if !claim(t, e.Store, tx, "billing", "m1") {
			t.Error("first Claim in a unit of work = false")
		}
		if claim(t, e.Store, tx, "billing", "m1") {
			t.Error("second Claim in the same unit of work = true, want false: a unit sees its own claims")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testInvisibleUntilCommit(t *testing.T, e *env) {
	needTx(t, e)
	err := e.Tx(t.Context(), func(tx recado.Tx) error {
		claim(t, e.Store, tx, "billing", "m1")
		if handled(t, e.Store, "billing", "m1") {
			t.Error("Handled outside the unit of work, before it committed = true")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !handled(t, e.Store, "billing", "m1") {
		t.Error("Handled after the commit = false")
	}
}

func testWaitForOpenClaim(t *testing.T, e *env) {
	needTx(t, e)
	for _, commit := range []bool{true, false} {
		id := fmt.Sprintf("m-%v", commit)
		other := make(chan bool, 1)
		err := e.Tx(t.Context(), func(tx recado.Tx) error {
			claim(t, e.Store, tx, "billing", id)
			go func() {
				first, err := e.Store.Claim(t.Context(), nil, "billing", id)
				if err != nil {
					t.Errorf("concurrent Claim: %v", err)
				}
				other <- first
			}()
			// Give the other claim time to run into this one (the wait
			// makes a violation likely to show; it times nothing).
			time.Sleep(20 * time.Millisecond)
			select {
			case first := <-other:
				return fmt.Errorf("a concurrent Claim returned %v while the first claim's unit of work was open", first)
			default:
			}
			if !commit {
				return errRollback
			}
			return nil
		})
		if commit && err != nil || !commit && !errors.Is(err, errRollback) {
			t.Fatalf("commit=%v: Tx = %v", commit, err)
		}
		if got := <-other; got != !commit {
			t.Errorf("concurrent Claim after the first unit %s = %v, want %v", map[bool]string{true: "committed", false: "rolled back"}[commit], got, !commit)
		}
	}
}

func testCleanup(t *testing.T, e *env) {
	old := []string{"m1", "m2", "m3", "m4", "m5"}
	for _, id := range old {
		claim(t, e.Store, nil, "billing", id)
	}
	e.clock.Advance(time.Minute)
	claim(t, e.Store, nil, "billing", "recent")
	e.clock.Advance(Retention - time.Minute) // the old entries are exactly Retention old: kept
	if n, err := e.Store.Cleanup(t.Context()); err != nil || n != 0 {
		t.Fatalf("Cleanup at exactly the retention = %d, %v; want 0, nil", n, err)
	}
	e.clock.Advance(time.Microsecond)
	n, err := e.Store.Cleanup(t.Context())
	if err != nil || n != len(old) {
		t.Fatalf("Cleanup = %d, %v; want %d (in batches of %d)", n, err, len(old), CleanupBatch)
	}
	for _, id := range old {
		if handled(t, e.Store, "billing", id) {
			t.Errorf("Handled(%s) after cleanup = true", id)
		}
	}
	if !handled(t, e.Store, "billing", "recent") {
		t.Error("a recent entry was cleaned up")
	}
	if n, err := e.Store.Cleanup(t.Context()); err != nil || n != 0 {
		t.Errorf("second Cleanup = %d, %v; want 0, nil", n, err)
	}
}

func testDefaultRetention(t *testing.T, e *env) {
	b := e.newBackend(t, inbox.Config{Now: e.clock.Now})
	claim(t, b.Store, nil, "billing", "m1")
	e.clock.Advance(inbox.DefaultRetention)
	if n, err := b.Store.Cleanup(t.Context()); err != nil || n != 0 || !handled(t, b.Store, "billing", "m1") {
		t.Fatalf("Cleanup after exactly the default retention = %d, %v; want the entry kept", n, err)
	}
	e.clock.Advance(time.Microsecond)
	if n, err := b.Store.Cleanup(t.Context()); err != nil || n != 1 {
		t.Errorf("Cleanup after the default retention = %d, %v; want 1", n, err)
	}
}

func testForeignTx(t *testing.T, e *env) {
	needTx(t, e)
	other := e.newBackend(t, e.cfg)
	err := other.Tx(t.Context(), func(tx recado.Tx) error {
		_, err := e.Store.Claim(t.Context(), tx, "billing", "m1")
		return err
	})
	if !errors.Is(err, inbox.ErrInvalid) {
		t.Errorf("Claim in a unit of work of another DB = %v, want ErrInvalid", err)
	}
	var ended recado.Tx
	if err := e.Tx(t.Context(), func(tx recado.Tx) error { ended = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Store.Claim(t.Context(), ended, "billing", "m1"); !errors.Is(err, inbox.ErrInvalid) {
		t.Errorf("Claim in a unit of work that has ended = %v, want ErrInvalid", err)
	}
	if handled(t, e.Store, "billing", "m1") {
		t.Error("a refused claim was stored")
	}
}

func testInvalid(t *testing.T, e *env) {
	ctx := t.Context()
	cases := []struct{ name, consumer, id string }{
		{"empty consumer", "", "m"},
		{"empty message ID", "c", ""},
		{"long consumer", strings.Repeat("c", inbox.MaxConsumerLen+1), "m"},
		{"long message ID", "c", strings.Repeat("m", inbox.MaxMessageIDLen+1)},
		{"consumer not UTF-8", "c\xff", "m"},
		{"message ID with NUL", "c", "m\x00"},
	}
	for _, c := range cases {
		_, err := e.Store.Claim(ctx, nil, c.consumer, c.id)
		var ie *inbox.Error
		if !errors.Is(err, inbox.ErrInvalid) || !errors.As(err, &ie) {
			t.Errorf("Claim with %s = %v, want an *Error wrapping ErrInvalid", c.name, err)
		}
		if _, err := e.Store.Handled(ctx, c.consumer, c.id); !errors.Is(err, inbox.ErrInvalid) {
			t.Errorf("Handled with %s = %v, want ErrInvalid", c.name, err)
		}
	}
	// The longest allowed names are stored and found.
	longC, longID := strings.Repeat("c", inbox.MaxConsumerLen), strings.Repeat("é", inbox.MaxMessageIDLen/2)
	if !claim(t, e.Store, nil, longC, longID) || !handled(t, e.Store, longC, longID) {
		t.Error("Claim of the longest names was not stored")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Store.Claim(cancelled, nil, "c", "m"); !errors.Is(err, context.Canceled) {
		t.Errorf("Claim with a cancelled context = %v, want context.Canceled", err)
	}
	if handled(t, e.Store, "c", "m") {
		t.Error("a claim with a cancelled context was stored")
	}
}

func testRestart(t *testing.T, e *env) {
	if e.Reopen == nil {
		t.Skip("backend keeps nothing across a restart")
	}
	claim(t, e.Store, nil, "billing", "m1")
	b := e.Reopen()
	if !handled(t, b.Store, "billing", "m1") {
		t.Fatal("Handled after a restart = false")
	}
	if claim(t, b.Store, nil, "billing", "m1") {
		t.Error("Claim after a restart = true, want false")
	}
}
