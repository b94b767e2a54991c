// Package leasetest is the conformance suite every backend of package lease
// runs from its own tests.
//
//	func TestLeases(t *testing.T) {
//		leasetest.Run(t, func(tb testing.TB, cfg lease.Config) leasetest.Backend {
//			db := memory.New()
//			tb.Cleanup(func() { db.Close() })
//			return leasetest.Backend{Store: db.Leases(cfg), Tx: ...}
//		})
//	}
//
// The suite drives the Store's clock through the [lease.Config] it passes to
// the factory, so expiry is tested without sleeping. It proves: acquiring,
// renewing and releasing; expiry at the exact instant; fencing tokens that
// grow with each new holder; stale tokens refused by Renew, Release and
// Guard; exactly one winner of concurrent Acquires; Guard inside a unit of
// work, holding off a new holder until the unit ends; bad input; and, for
// backends that keep data, that a restart loses nothing.
package leasetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// Backend is a backend under test.
type Backend struct {
	// Store is a Store of a fresh, empty DB, made with the Config the
	// factory was given.
	Store *lease.Store
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
type Factory func(tb testing.TB, cfg lease.Config) Backend

// T0 is the time the suite's clock starts at.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

// Run runs the suite as subtests of t, each with its own backend.
func Run(t *testing.T, newBackend Factory) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := resiliencetest.NewClock(T0)
			b := newBackend(t, lease.Config{Now: clock.Now})
			tc.run(t, &env{Backend: b, clock: clock, newBackend: newBackend})
		})
	}
}

type env struct {
	Backend
	clock      *resiliencetest.Clock
	newBackend Factory
}

var tests = []struct {
	name string
	run  func(t *testing.T, e *env)
}{
	{"Acquire", testAcquire},
	{"Held", testHeld},
	{"Expiry", testExpiry},
	{"Renew", testRenew},
	{"Release", testRelease},
	{"TokensGrow", testTokensGrow},
	{"ConcurrentAcquire", testConcurrentAcquire},
	{"Guard", testGuard},
	{"GuardInTx", testGuardInTx},
	{"GuardHoldsOffNewHolder", testGuardHoldsOff},
	{"ForeignTx", testForeignTx},
	{"Invalid", testInvalid},
	{"Restart", testRestart},
}

const ttl = 10 * time.Second

func mustAcquire(t *testing.T, s *lease.Store, name, holder string) lease.Lease {
	t.Helper()
	l, err := s.Acquire(t.Context(), name, holder, ttl)
	if err != nil {
		t.Fatalf("Acquire(%q, %q): %v", name, holder, err)
	}
	return l
}

func now(e *env) time.Time { return e.clock.Now().UTC().Truncate(time.Microsecond) }

func testAcquire(t *testing.T, e *env) {
	l := mustAcquire(t, e.Store, "projection:orders", "node-a")
	want := lease.Lease{Name: "projection:orders", Holder: "node-a", Token: 1, Acquired: now(e), Expires: now(e).Add(ttl)}
	if !l.Acquired.Equal(want.Acquired) || !l.Expires.Equal(want.Expires) || l.Name != want.Name || l.Holder != want.Holder || l.Token != want.Token {
		t.Fatalf("Acquire = %+v, want %+v", l, want)
	}
	got, err := e.Store.Get(t.Context(), "projection:orders")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Holder != "node-a" || got.Token != 1 || !got.Expires.Equal(want.Expires) || !got.Acquired.Equal(want.Acquired) {
		t.Errorf("Get = %+v, want %+v", got, want)
	}
	if got.Expires.Location() != time.UTC {
		t.Errorf("Get: Expires in %v, want UTC", got.Expires.Location())
	}
	if _, err := e.Store.Get(t.Context(), "never"); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("Get(never acquired) = %v, want ErrNotFound", err)
	}
}

func testHeld(t *testing.T, e *env) {
	first := mustAcquire(t, e.Store, "l", "node-a")
	for _, holder := range []string{"node-b", "node-a"} {
		_, err := e.Store.Acquire(t.Context(), "l", holder, ttl)
		var held *lease.HeldError
		if !errors.Is(err, lease.ErrHeld) || !errors.As(err, &held) {
			t.Fatalf("Acquire by %s of a held lease = %v, want ErrHeld with *HeldError", holder, err)
		}
		if held.Holder != "node-a" || !held.Expires.Equal(first.Expires) {
			t.Errorf("HeldError = %+v, want holder node-a until %v", held, first.Expires)
		}
	}
	e.clock.Advance(ttl - time.Microsecond)
	if _, err := e.Store.Acquire(t.Context(), "l", "node-b", ttl); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("Acquire a microsecond before expiry = %v, want ErrHeld", err)
	}
}

func testExpiry(t *testing.T, e *env) {
	a := mustAcquire(t, e.Store, "l", "node-a")
	e.clock.Advance(ttl) // exactly at Expires: the lease has ended
	b := mustAcquire(t, e.Store, "l", "node-b")
	if b.Token != a.Token+1 {
		t.Errorf("token after expiry = %d, want %d", b.Token, a.Token+1)
	}
	if _, err := e.Store.Renew(t.Context(), a, ttl); !errors.Is(err, lease.ErrLost) {
		t.Errorf("Renew by the former holder = %v, want ErrLost", err)
	}
	if err := e.Store.Release(t.Context(), a); !errors.Is(err, lease.ErrLost) {
		t.Errorf("Release by the former holder = %v, want ErrLost", err)
	}
	if err := e.Store.Guard(t.Context(), nil, a); !errors.Is(err, lease.ErrLost) {
		t.Errorf("Guard of the former holder = %v, want ErrLost", err)
	}
	if err := e.Store.Guard(t.Context(), nil, b); err != nil {
		t.Errorf("Guard of the new holder: %v", err)
	}
}

func testRenew(t *testing.T, e *env) {
	l := mustAcquire(t, e.Store, "l", "node-a")
	e.clock.Advance(ttl / 2)
	r, err := e.Store.Renew(t.Context(), l, ttl)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if r.Token != l.Token || !r.Expires.Equal(now(e).Add(ttl)) || !r.Acquired.Equal(l.Acquired) {
		t.Errorf("Renew = %+v, want token %d, expiry %v, acquired %v", r, l.Token, now(e).Add(ttl), l.Acquired)
	}
	e.clock.Advance(ttl - time.Microsecond) // past the first expiry, before the renewed one
	if _, err := e.Store.Acquire(t.Context(), "l", "node-b", ttl); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("Acquire of a renewed lease = %v, want ErrHeld", err)
	}
	if err := e.Store.Guard(t.Context(), nil, r); err != nil {
		t.Errorf("Guard of a renewed lease: %v", err)
	}
	e.clock.Advance(time.Microsecond)
	if _, err := e.Store.Renew(t.Context(), r, ttl); !errors.Is(err, lease.ErrLost) {
		t.Errorf("Renew after expiry, nobody else holding = %v, want ErrLost", err)
	}
}

func testRelease(t *testing.T, e *env) {
	a := mustAcquire(t, e.Store, "l", "node-a")
	if err := e.Store.Release(t.Context(), a); err != nil {
		t.Fatalf("Release: %v", err)
	}
	got, err := e.Store.Get(t.Context(), "l")
	if err != nil || got.Holder != "" || got.Token != a.Token || got.HeldAt(now(e)) {
		t.Errorf("Get after Release = %+v, %v; want no holder, token %d", got, err, a.Token)
	}
	if err := e.Store.Release(t.Context(), a); !errors.Is(err, lease.ErrLost) {
		t.Errorf("second Release = %v, want ErrLost", err)
	}
	if _, err := e.Store.Renew(t.Context(), a, ttl); !errors.Is(err, lease.ErrLost) {
		t.Errorf("Renew after Release = %v, want ErrLost", err)
	}
	b := mustAcquire(t, e.Store, "l", "node-b") // at once, no waiting for the expiry
	if b.Token != a.Token+1 {
		t.Errorf("token after release = %d, want %d", b.Token, a.Token+1)
	}
}

func testTokensGrow(t *testing.T, e *env) {
	var last uint64
	for i := range 5 {
		l := mustAcquire(t, e.Store, "l", fmt.Sprintf("node-%d", i%2))
		if l.Token <= last {
			t.Fatalf("acquire %d: token %d, not above %d", i, l.Token, last)
		}
		last = l.Token
		if i%2 == 0 {
			if err := e.Store.Release(t.Context(), l); err != nil {
				t.Fatal(err)
			}
		} else {
			e.clock.Advance(ttl)
		}
	}
	other := mustAcquire(t, e.Store, "other", "node-a")
	if other.Token != 1 {
		t.Errorf("first token of another lease = %d, want 1 (tokens count per lease)", other.Token)
	}
}

func testConcurrentAcquire(t *testing.T, e *env) {
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.Store.Acquire(t.Context(), "l", fmt.Sprintf("node-%d", i), ttl)
		})
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, lease.ErrHeld):
			t.Errorf("Acquire %d: %v, want nil or ErrHeld", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent Acquires won, want exactly 1", won, n)
	}
	if l, err := e.Store.Get(t.Context(), "l"); err != nil || l.Token != 1 {
		t.Errorf("Get = %+v, %v; want token 1", l, err)
	}
}

func testGuard(t *testing.T, e *env) {
	a := mustAcquire(t, e.Store, "l", "node-a")
	if err := e.Store.Guard(t.Context(), nil, a); err != nil {
		t.Fatalf("Guard of the holder: %v", err)
	}
	forged := a
	forged.Token++
	if err := e.Store.Guard(t.Context(), nil, forged); !errors.Is(err, lease.ErrLost) {
		t.Errorf("Guard with a token that is not current = %v, want ErrLost", err)
	}
	other := a
	other.Holder = "node-b"
	if err := e.Store.Guard(t.Context(), nil, other); !errors.Is(err, lease.ErrLost) {
		t.Errorf("Guard with another holder = %v, want ErrLost", err)
	}
	e.clock.Advance(ttl)
	if err := e.Store.Guard(t.Context(), nil, a); !errors.Is(err, lease.ErrLost) {
		t.Errorf("Guard at expiry, nobody else holding = %v, want ErrLost", err)
	}
}

func testGuardInTx(t *testing.T, e *env) {
	if e.Tx == nil {
		t.Skip("backend has no unit of work")
	}
	a := mustAcquire(t, e.Store, "l", "node-a")
	if err := e.Tx(t.Context(), func(tx recado.Tx) error { return e.Store.Guard(t.Context(), tx, a) }); err != nil {
		t.Fatalf("Guard in a unit of work: %v", err)
	}
	e.clock.Advance(ttl)
	mustAcquire(t, e.Store, "l", "node-b")
	err := e.Tx(t.Context(), func(tx recado.Tx) error { return e.Store.Guard(t.Context(), tx, a) })
	if !errors.Is(err, lease.ErrLost) {
		t.Errorf("Guard of a stale token in a unit of work = %v, want ErrLost", err)
	}
}

// testGuardHoldsOff checks that a new holder's Acquire does not complete while
// a unit of work that guarded the old lease is still open: the guarded writes
// commit before the new holder can write.
func testGuardHoldsOff(t *testing.T, e *env) {
	if e.Tx == nil {
		t.Skip("backend has no unit of work")
	}
	a := mustAcquire(t, e.Store, "l", "node-a")
	acquired := make(chan error, 1)
	err := e.Tx(t.Context(), func(tx recado.Tx) error {
		if err := e.Store.Guard(t.Context(), tx, a); err != nil {
			return err
		}
		e.clock.Advance(ttl) // the lease expires while the unit is open
		go func() {
			_, err := e.Store.Acquire(t.Context(), "l", "node-b", ttl)
			acquired <- err
		}()
		// Give the Acquire time to run into the guard (this wait makes a
		// violation likely to show, it does not time anything).
		time.Sleep(20 * time.Millisecond)
		select {
		case err := <-acquired:
			return fmt.Errorf("Acquire by a new holder returned (%v) while a unit of work guarded by the old lease was open", err)
		default:
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-acquired; err != nil {
		t.Errorf("Acquire after the guarded unit of work ended: %v", err)
	}
}

func testForeignTx(t *testing.T, e *env) {
	if e.Tx == nil {
		t.Skip("backend has no unit of work")
	}
	a := mustAcquire(t, e.Store, "l", "node-a")
	other := e.newBackend(t, lease.Config{Now: e.clock.Now})
	err := other.Tx(t.Context(), func(tx recado.Tx) error { return e.Store.Guard(t.Context(), tx, a) })
	if !errors.Is(err, lease.ErrInvalid) {
		t.Errorf("Guard in a unit of work of another DB = %v, want ErrInvalid", err)
	}
	var ended recado.Tx
	if err := e.Tx(t.Context(), func(tx recado.Tx) error { ended = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e.Store.Guard(t.Context(), ended, a); !errors.Is(err, lease.ErrInvalid) {
		t.Errorf("Guard in a unit of work that has ended = %v, want ErrInvalid", err)
	}
}

func testInvalid(t *testing.T, e *env) {
	ctx := t.Context()
	long := strings.Repeat("n", lease.MaxNameLen+1)
	a := mustAcquire(t, e.Store, "l", "node-a")
	cases := []struct {
		name string
		call func() error
	}{
		{"empty name", func() error { _, err := e.Store.Acquire(ctx, "", "h", ttl); return err }},
		{"long name", func() error { _, err := e.Store.Acquire(ctx, long, "h", ttl); return err }},
		{"name not UTF-8", func() error { _, err := e.Store.Acquire(ctx, "l\xff", "h", ttl); return err }},
		{"name with NUL", func() error { _, err := e.Store.Acquire(ctx, "l\x00", "h", ttl); return err }},
		{"empty holder", func() error { _, err := e.Store.Acquire(ctx, "x", "", ttl); return err }},
		{"long holder", func() error {
			_, err := e.Store.Acquire(ctx, "x", strings.Repeat("h", lease.MaxHolderLen+1), ttl)
			return err
		}},
		{"zero ttl", func() error { _, err := e.Store.Acquire(ctx, "x", "h", 0); return err }},
		{"negative ttl", func() error { _, err := e.Store.Renew(ctx, a, -time.Second); return err }},
		{"no token", func() error { return e.Store.Guard(ctx, nil, lease.Lease{Name: "l", Holder: "node-a"}) }},
		{"get long name", func() error { _, err := e.Store.Get(ctx, long); return err }},
	}
	for _, c := range cases {
		err := c.call()
		var le *lease.Error
		if !errors.Is(err, lease.ErrInvalid) || !errors.As(err, &le) {
			t.Errorf("%s: %v, want an *Error wrapping ErrInvalid", c.name, err)
		}
	}
	if _, err := e.Store.Get(ctx, "x"); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("after refused input, Get(x) = %v, want ErrNotFound (nothing stored)", err)
	}
	if l, err := e.Store.Get(ctx, "l"); err != nil || l.Token != a.Token || !l.Expires.Equal(a.Expires) {
		t.Errorf("after refused input, Get(l) = %+v, %v; want %+v", l, err, a)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Store.Acquire(cancelled, "y", "h", ttl); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context = %v, want context.Canceled", err)
	}
}

func testRestart(t *testing.T, e *env) {
	if e.Reopen == nil {
		t.Skip("backend keeps nothing across a restart")
	}
	a := mustAcquire(t, e.Store, "l", "node-a")
	b := e.Reopen()
	got, err := b.Store.Get(t.Context(), "l")
	if err != nil || got.Holder != a.Holder || got.Token != a.Token || !got.Expires.Equal(a.Expires) {
		t.Fatalf("Get after a restart = %+v, %v; want %+v", got, err, a)
	}
	if _, err := b.Store.Acquire(t.Context(), "l", "node-b", ttl); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("Acquire after a restart = %v, want ErrHeld", err)
	}
	if _, err := b.Store.Renew(t.Context(), a, ttl); err != nil {
		t.Errorf("Renew after a restart: %v", err)
	}
}
