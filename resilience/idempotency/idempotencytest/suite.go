// Package idempotencytest is the conformance suite every backend of package
// idempotency runs from its own tests: the Store's contract, and the HTTP
// middleware over the backend's Store, replaying the examples of the IETF
// Idempotency-Key draft.
//
//	func TestIdempotency(t *testing.T) {
//		idempotencytest.Run(t, func(tb testing.TB, cfg idempotency.Config) idempotencytest.Backend {
//			db := memory.New()
//			tb.Cleanup(func() { db.Close() })
//			return idempotencytest.Backend{Store: db.IdempotencyKeys(cfg), Tx: ...}
//		})
//	}
//
// The suite drives the Store's clock through the [idempotency.Config] it
// passes to the factory. It proves: a key is claimed once, then in progress,
// then completed with its response; a fingerprint mismatch; scopes; exactly
// one winner of concurrent claims; release; the lock timeout and take-over
// with a new token that the old claim cannot complete; expiry after the
// retention and batched cleanup; the response limit; claims and completions
// that commit with their unit of work or not at all; bad input; and, for
// backends that keep data, that a restart loses nothing.
package idempotencytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// Backend is a backend under test.
type Backend struct {
	// Store is a Store of a fresh, empty DB, made with the Config the
	// factory was given.
	Store *idempotency.Store
	// Tx runs fn in a unit of work of the same DB; nil if the backend has
	// none (the unit-of-work tests are then skipped).
	Tx func(ctx context.Context, fn func(tx recado.Tx) error) error
	// Reopen closes the DB and opens it again on the same storage, with the
	// same Config, as a process restart would; nil if the backend keeps
	// nothing across a restart (memory).
	Reopen func() Backend
}

// Factory returns a fresh backend whose Store uses cfg. It registers its own
// cleanup with tb.
type Factory func(tb testing.TB, cfg idempotency.Config) Backend

// T0 is the time the suite's clock starts at.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

// The settings the suite configures, except in the test of the defaults.
const (
	Retention    = time.Hour
	LockTimeout  = 30 * time.Second
	MaxResponse  = 4096
	CleanupBatch = 2
)

// Run runs the suite as subtests of t, each with its own backend.
func Run(t *testing.T, newBackend Factory) {
	groups := []struct {
		name  string
		tests []test
	}{
		{"Store", storeTests},
		{"HTTP", httpTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					clock := resiliencetest.NewClock(T0)
					cfg := idempotency.Config{Now: clock.Now, Retention: Retention, LockTimeout: LockTimeout,
						MaxResponse: MaxResponse, CleanupBatch: CleanupBatch}
					tc.run(t, &env{Backend: newBackend(t, cfg), clock: clock, cfg: cfg, newBackend: newBackend})
				})
			}
		})
	}
}

type test struct {
	name string
	run  func(t *testing.T, e *env)
}

type env struct {
	Backend
	clock      *resiliencetest.Clock
	cfg        idempotency.Config
	newBackend Factory
}

var storeTests = []test{
	{"Lifecycle", testLifecycle},
	{"Mismatch", testMismatch},
	{"Scopes", testScopes},
	{"ConcurrentClaims", testConcurrentClaims},
	{"ConcurrentClaimsInTx", testConcurrentClaimsInTx},
	{"Release", testRelease},
	{"LockTimeout", testLockTimeout},
	{"Expiry", testExpiry},
	{"Cleanup", testCleanup},
	{"Defaults", testDefaults},
	{"TooLarge", testTooLarge},
	{"UnitOfWork", testUnitOfWork},
	{"ForeignTx", testForeignTx},
	{"Invalid", testInvalid},
	{"Restart", testRestart},
}

var (
	fpA = []byte("fingerprint-a")
	fpB = []byte("fingerprint-b")
)

func mustClaim(t *testing.T, s *idempotency.Store, tx recado.Tx, scope, key string, fp []byte) idempotency.Claim {
	t.Helper()
	c, err := s.Claim(t.Context(), tx, scope, key, fp)
	if err != nil {
		t.Fatalf("Claim(%q, %q): %v", scope, key, err)
	}
	return c
}

func wantStatus(t *testing.T, c idempotency.Claim, want idempotency.Status) {
	t.Helper()
	if c.Status != want {
		t.Fatalf("Claim(%q, %q) = %v, want %v", c.Scope, c.Key, c.Status, want)
	}
}

func mustComplete(t *testing.T, s *idempotency.Store, tx recado.Tx, c idempotency.Claim, resp []byte) {
	t.Helper()
	if err := s.Complete(t.Context(), tx, c, resp); err != nil {
		t.Fatalf("Complete(%q): %v", c.Key, err)
	}
}

func needTx(t *testing.T, e *env) {
	if e.Tx == nil {
		t.Skip("backend has no unit of work")
	}
}

func now(e *env) time.Time { return e.clock.Now().UTC().Truncate(time.Microsecond) }

func testLifecycle(t *testing.T, e *env) {
	c := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
	wantStatus(t, c, idempotency.Claimed)
	if c.Token == 0 || !c.Created.Equal(now(e)) {
		t.Errorf("Claimed claim = %+v, want a token and Created %v", c, now(e))
	}
	e.clock.Advance(time.Second)
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", fpA), idempotency.InProgress)
	resp := []byte(`{"order":"42"}`)
	mustComplete(t, e.Store, nil, c, resp)
	for range 2 {
		got := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
		wantStatus(t, got, idempotency.Completed)
		if !bytes.Equal(got.Response, resp) || !got.Created.Equal(c.Created) {
			t.Errorf("Completed claim = %q created %v, want %q created %v", got.Response, got.Created, resp, c.Created)
		}
	}
	if err := e.Store.Complete(t.Context(), nil, c, []byte("again")); !errors.Is(err, idempotency.ErrLost) {
		t.Errorf("second Complete = %v, want ErrLost", err)
	}
	if err := e.Store.Release(t.Context(), nil, c); !errors.Is(err, idempotency.ErrLost) {
		t.Errorf("Release after Complete = %v, want ErrLost", err)
	}
	got := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
	if !bytes.Equal(got.Response, resp) {
		t.Errorf("after refused calls, response = %q, want %q", got.Response, resp)
	}
	// An empty response is a response.
	c2 := mustClaim(t, e.Store, nil, "alice", "k2", nil)
	mustComplete(t, e.Store, nil, c2, nil)
	if got := mustClaim(t, e.Store, nil, "alice", "k2", nil); got.Status != idempotency.Completed || len(got.Response) != 0 {
		t.Errorf("claim of a key completed with an empty response = %v %q", got.Status, got.Response)
	}
}

func testMismatch(t *testing.T, e *env) {
	c := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", fpB), idempotency.Mismatch)
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", nil), idempotency.Mismatch)
	mustComplete(t, e.Store, nil, c, []byte("r"))
	got := mustClaim(t, e.Store, nil, "alice", "k1", fpB)
	wantStatus(t, got, idempotency.Mismatch)
	if got.Response != nil {
		t.Errorf("a Mismatch carries the response %q", got.Response)
	}
}

func testScopes(t *testing.T, e *env) {
	a := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
	wantStatus(t, a, idempotency.Claimed)
	b := mustClaim(t, e.Store, nil, "bob", "k1", fpB)
	wantStatus(t, b, idempotency.Claimed)
	wantStatus(t, mustClaim(t, e.Store, nil, "", "k1", fpA), idempotency.Claimed)
	mustComplete(t, e.Store, nil, a, []byte("alice's"))
	mustComplete(t, e.Store, nil, b, []byte("bob's"))
	if got := mustClaim(t, e.Store, nil, "bob", "k1", fpB); string(got.Response) != "bob's" {
		t.Errorf("bob's response = %q", got.Response)
	}
}

func countClaimed(t *testing.T, n int, claim func() (idempotency.Claim, error)) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range n {
		wg.Go(func() {
			c, err := claim()
			if err != nil {
				t.Errorf("concurrent Claim: %v", err)
				return
			}
			switch c.Status {
			case idempotency.Claimed:
				mu.Lock()
				won++
				mu.Unlock()
			case idempotency.InProgress:
			default:
				t.Errorf("concurrent Claim = %v, want claimed or in progress", c.Status)
			}
		})
	}
	wg.Wait()
	return won
}

func testConcurrentClaims(t *testing.T, e *env) {
	won := countClaimed(t, 16, func() (idempotency.Claim, error) {
		return e.Store.Claim(t.Context(), nil, "alice", "k1", fpA)
	})
	if won != 1 {
		t.Errorf("%d of 16 concurrent claims were Claimed, want exactly 1", won)
	}
}

func testConcurrentClaimsInTx(t *testing.T, e *env) {
	needTx(t, e)
	won := countClaimed(t, 16, func() (idempotency.Claim, error) {
		var c idempotency.Claim
		err := e.Tx(t.Context(), func(tx recado.Tx) error {
			var err error
			c, err = e.Store.Claim(t.Context(), tx, "alice", "k1", fpA)
			return err
		})
		return c, err
	})
	if won != 1 {
		t.Errorf("%d of 16 concurrent claims in units of work were Claimed, want exactly 1", won)
	}
}

func testRelease(t *testing.T, e *env) {
	c := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
	if err := e.Store.Release(t.Context(), nil, c); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := e.Store.Release(t.Context(), nil, c); !errors.Is(err, idempotency.ErrLost) {
		t.Errorf("second Release = %v, want ErrLost", err)
	}
	if err := e.Store.Complete(t.Context(), nil, c, []byte("r")); !errors.Is(err, idempotency.ErrLost) {
		t.Errorf("Complete after Release = %v, want ErrLost", err)
	}
	// A released key is free: even another payload may use it.
	again := mustClaim(t, e.Store, nil, "alice", "k1", fpB)
	wantStatus(t, again, idempotency.Claimed)
	// The released claim stays lost: its holder, carrying on by mistake,
	// can neither complete nor release the new claim of the same key.
	if again.Token == c.Token {
		t.Errorf("the claim after a release has the released claim's token %d", c.Token)
	}
	if err := e.Store.Complete(t.Context(), nil, c, []byte("stale")); !errors.Is(err, idempotency.ErrLost) {
		t.Errorf("Complete with the released claim after a new claim = %v, want ErrLost", err)
	}
	if err := e.Store.Release(t.Context(), nil, c); !errors.Is(err, idempotency.ErrLost) {
		t.Errorf("Release with the released claim after a new claim = %v, want ErrLost", err)
	}
	if err := e.Store.Complete(t.Context(), nil, again, []byte("r")); err != nil {
		t.Errorf("Complete of the new claim: %v", err)
	}
}

func testLockTimeout(t *testing.T, e *env) {
	first := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
	e.clock.Advance(LockTimeout - time.Microsecond)
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", fpA), idempotency.InProgress)
	e.clock.Advance(time.Microsecond)
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", fpB), idempotency.Mismatch)
	second := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
	wantStatus(t, second, idempotency.Claimed)
	if second.Token <= first.Token || !second.Created.Equal(first.Created) {
		t.Errorf("take-over claim = token %d created %v, want a token above %d, created %v", second.Token, second.Created, first.Token, first.Created)
	}
	if err := e.Store.Complete(t.Context(), nil, first, []byte("late")); !errors.Is(err, idempotency.ErrLost) {
		t.Errorf("Complete by the claim taken over = %v, want ErrLost", err)
	}
	if err := e.Store.Release(t.Context(), nil, first); !errors.Is(err, idempotency.ErrLost) {
		t.Errorf("Release by the claim taken over = %v, want ErrLost", err)
	}
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", fpA), idempotency.InProgress)
	mustComplete(t, e.Store, nil, second, []byte("second"))
	if got := mustClaim(t, e.Store, nil, "alice", "k1", fpA); string(got.Response) != "second" {
		t.Errorf("response = %q, want the take-over claim's", got.Response)
	}
}

func testExpiry(t *testing.T, e *env) {
	c := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
	mustComplete(t, e.Store, nil, c, []byte("r"))
	e.clock.Advance(Retention - time.Microsecond)
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", fpA), idempotency.Completed)
	e.clock.Advance(time.Microsecond)
	fresh := mustClaim(t, e.Store, nil, "alice", "k1", fpB) // expired: absent, any payload
	wantStatus(t, fresh, idempotency.Claimed)
	if !fresh.Created.Equal(now(e)) || fresh.Token == c.Token {
		t.Errorf("claim of an expired key = %+v, want created now with a token other than %d", fresh, c.Token)
	}
	// A claim in progress expires too, and its Complete fails.
	old := mustClaim(t, e.Store, nil, "alice", "k2", fpA)
	e.clock.Advance(Retention)
	if err := e.Store.Complete(t.Context(), nil, old, []byte("r")); !errors.Is(err, idempotency.ErrLost) {
		t.Errorf("Complete after the key expired = %v, want ErrLost", err)
	}
}

func testCleanup(t *testing.T, e *env) {
	for i := range 5 {
		c := mustClaim(t, e.Store, nil, "alice", fmt.Sprintf("old-%d", i), fpA)
		if i%2 == 0 {
			mustComplete(t, e.Store, nil, c, []byte("r"))
		}
	}
	e.clock.Advance(time.Minute)
	mustComplete(t, e.Store, nil, mustClaim(t, e.Store, nil, "alice", "recent", fpA), []byte("r"))
	e.clock.Advance(Retention - time.Minute)
	if n, err := e.Store.Cleanup(t.Context()); err != nil || n != 0 {
		t.Fatalf("Cleanup at exactly the retention = %d, %v; want 0", n, err)
	}
	e.clock.Advance(time.Microsecond)
	if n, err := e.Store.Cleanup(t.Context()); err != nil || n != 5 {
		t.Fatalf("Cleanup = %d, %v; want 5 (in batches of %d)", n, err, CleanupBatch)
	}
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "recent", fpA), idempotency.Completed)
	c := mustClaim(t, e.Store, nil, "alice", "old-0", fpB)
	wantStatus(t, c, idempotency.Claimed)
}

func testDefaults(t *testing.T, e *env) {
	b := e.newBackend(t, idempotency.Config{Now: e.clock.Now})
	if b.Store.MaxResponse() != idempotency.DefaultMaxResponse {
		t.Errorf("MaxResponse() = %d, want the default %d", b.Store.MaxResponse(), idempotency.DefaultMaxResponse)
	}
	c := mustClaim(t, b.Store, nil, "alice", "k1", fpA)
	e.clock.Advance(idempotency.DefaultLockTimeout - time.Microsecond)
	wantStatus(t, mustClaim(t, b.Store, nil, "alice", "k1", fpA), idempotency.InProgress)
	e.clock.Advance(time.Microsecond)
	c = mustClaim(t, b.Store, nil, "alice", "k1", fpA)
	wantStatus(t, c, idempotency.Claimed)
	mustComplete(t, b.Store, nil, c, make([]byte, idempotency.DefaultMaxResponse))
	e.clock.Advance(idempotency.DefaultRetention - idempotency.DefaultLockTimeout - time.Microsecond)
	wantStatus(t, mustClaim(t, b.Store, nil, "alice", "k1", fpA), idempotency.Completed)
	e.clock.Advance(time.Microsecond)
	wantStatus(t, mustClaim(t, b.Store, nil, "alice", "k1", fpA), idempotency.Claimed)
}

func testTooLarge(t *testing.T, e *env) {
	c := mustClaim(t, e.Store, nil, "alice", "k1", fpA)
	err := e.Store.Complete(t.Context(), nil, c, make([]byte, MaxResponse+1))
	if !errors.Is(err, idempotency.ErrTooLarge) {
		t.Fatalf("Complete with %d bytes = %v, want ErrTooLarge", MaxResponse+1, err)
	}
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", fpA), idempotency.InProgress)
	full := bytes.Repeat([]byte("x"), MaxResponse)
	mustComplete(t, e.Store, nil, c, full)
	if got := mustClaim(t, e.Store, nil, "alice", "k1", fpA); !bytes.Equal(got.Response, full) {
		t.Errorf("response of exactly MaxResponse bytes came back as %d bytes", len(got.Response))
	}
}

var errRollback = errors.New("idempotencytest: roll back")

func testUnitOfWork(t *testing.T, e *env) {
	needTx(t, e)
	// Claim and complete in one unit that rolls back: nothing stays.
	err := e.Tx(t.Context(), func(tx recado.Tx) error {
		c := mustClaim(t, e.Store, tx, "alice", "k1", fpA)
		wantStatus(t, c, idempotency.Claimed)
		mustComplete(t, e.Store, tx, c, []byte("r"))
		if got := mustClaim(t, e.Store, tx, "alice", "k1", fpA); got.Status != idempotency.Completed {
			t.Errorf("claim in the unit that completed the key = %v, want completed", got.Status)
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx = %v", err)
	}
	c := mustClaim(t, e.Store, nil, "alice", "k1", fpB)
	wantStatus(t, c, idempotency.Claimed) // nothing of the rolled-back unit is left
	// A completion in a unit that rolls back leaves the claim in progress.
	err = e.Tx(t.Context(), func(tx recado.Tx) error {
		mustComplete(t, e.Store, tx, c, []byte("r"))
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx = %v", err)
	}
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", fpB), idempotency.InProgress)
	// And one that commits completes it.
	if err := e.Tx(t.Context(), func(tx recado.Tx) error {
		return e.Store.Complete(t.Context(), tx, c, []byte("done"))
	}); err != nil {
		t.Fatal(err)
	}
	if got := mustClaim(t, e.Store, nil, "alice", "k1", fpB); string(got.Response) != "done" {
		t.Errorf("after the unit committed: %v %q", got.Status, got.Response)
	}
}

func testForeignTx(t *testing.T, e *env) {
	needTx(t, e)
	other := e.newBackend(t, e.cfg)
	err := other.Tx(t.Context(), func(tx recado.Tx) error {
		_, err := e.Store.Claim(t.Context(), tx, "alice", "k1", fpA)
		return err
	})
	if !errors.Is(err, idempotency.ErrInvalid) {
		t.Errorf("Claim in a unit of work of another DB = %v, want ErrInvalid", err)
	}
	var ended recado.Tx
	if err := e.Tx(t.Context(), func(tx recado.Tx) error { ended = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Store.Claim(t.Context(), ended, "alice", "k1", fpA); !errors.Is(err, idempotency.ErrInvalid) {
		t.Errorf("Claim in a unit of work that has ended = %v, want ErrInvalid", err)
	}
	wantStatus(t, mustClaim(t, e.Store, nil, "alice", "k1", fpA), idempotency.Claimed)
}

func testInvalid(t *testing.T, e *env) {
	ctx := t.Context()
	cases := []struct {
		name       string
		scope, key string
		fp         []byte
	}{
		{"empty key", "s", "", fpA},
		{"long key", "s", strings.Repeat("k", idempotency.MaxKeyLen+1), fpA},
		{"key not UTF-8", "s", "k\xff", fpA},
		{"key with NUL", "s", "k\x00", fpA},
		{"long scope", strings.Repeat("s", idempotency.MaxScopeLen+1), "k", fpA},
		{"scope not UTF-8", "\xff", "k", fpA},
		{"long fingerprint", "s", "k", make([]byte, idempotency.MaxFingerprintLen+1)},
	}
	for _, c := range cases {
		_, err := e.Store.Claim(ctx, nil, c.scope, c.key, c.fp)
		var ie *idempotency.Error
		if !errors.Is(err, idempotency.ErrInvalid) || !errors.As(err, &ie) {
			t.Errorf("Claim with %s = %v, want an *Error wrapping ErrInvalid", c.name, err)
		}
	}
	wantStatus(t, mustClaim(t, e.Store, nil, "s", "k", fpA), idempotency.Claimed) // nothing was stored
	longest := mustClaim(t, e.Store, nil, strings.Repeat("s", idempotency.MaxScopeLen), strings.Repeat("k", idempotency.MaxKeyLen),
		make([]byte, idempotency.MaxFingerprintLen))
	wantStatus(t, longest, idempotency.Claimed)
	busy := mustClaim(t, e.Store, nil, "s", "k", fpA)
	if err := e.Store.Complete(ctx, nil, busy, []byte("r")); !errors.Is(err, idempotency.ErrInvalid) {
		t.Errorf("Complete of an in-progress Claim = %v, want ErrInvalid", err)
	}
	if err := e.Store.Release(ctx, nil, idempotency.Claim{Key: "k"}); !errors.Is(err, idempotency.ErrInvalid) {
		t.Errorf("Release of a zero Claim = %v, want ErrInvalid", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Store.Claim(cancelled, nil, "s", "other", fpA); !errors.Is(err, context.Canceled) {
		t.Errorf("Claim with a cancelled context = %v, want context.Canceled", err)
	}
	wantStatus(t, mustClaim(t, e.Store, nil, "s", "other", fpA), idempotency.Claimed)
}

func testRestart(t *testing.T, e *env) {
	if e.Reopen == nil {
		t.Skip("backend keeps nothing across a restart")
	}
	done := mustClaim(t, e.Store, nil, "alice", "done", fpA)
	mustComplete(t, e.Store, nil, done, []byte("r"))
	running := mustClaim(t, e.Store, nil, "alice", "running", fpA)
	b := e.Reopen()
	if got := mustClaim(t, b.Store, nil, "alice", "done", fpA); got.Status != idempotency.Completed || string(got.Response) != "r" {
		t.Errorf("completed key after a restart: %v %q", got.Status, got.Response)
	}
	wantStatus(t, mustClaim(t, b.Store, nil, "alice", "running", fpA), idempotency.InProgress)
	mustComplete(t, b.Store, nil, running, []byte("late"))
}
