package resilience

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestBreakerForceOpen(t *testing.T) {
	var changes []string
	b, clock := newTestBreaker(t, BreakerConfig{Name: "payment", MinCalls: 1, OpenPeriod: fixed(time.Second),
		OnStateChange: func(_ string, from, to State) { changes = append(changes, from.String()+">"+to.String()) }})
	b.ForceOpen()
	b.ForceOpen() // already forced: no change
	ran := false
	err := b.Execute(func() error { ran = true; return nil })
	var oe *OpenError
	if !errors.As(err, &oe) || ran || oe.State != StateForcedOpen || !oe.Until.IsZero() {
		t.Fatalf("Execute on a forced-open breaker: %v (%+v), ran %v; want an *OpenError in state forced-open, no Until", err, oe, ran)
	}
	if got := err.Error(); got != `resilience: circuit breaker "payment" forced open` {
		t.Errorf("error text %q", got)
	}
	clock.Advance(time.Hour)
	if s := b.State(); s != StateForcedOpen {
		t.Errorf("an hour later: state %v, want still forced open (only an operator ends it)", s)
	}
	b.Release()
	if s := b.Snapshot(); s.State != StateClosed || s.Calls != 0 || s.Opens != 0 {
		t.Errorf("after Release: %+v, want closed with an empty window", s)
	}
	if want := "[closed>forced-open forced-open>closed]"; fmt.Sprint(changes) != want {
		t.Errorf("state changes %v, want %s", changes, want)
	}
}

func TestBreakerForceOpenStopsTheOpenTimer(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, OpenPeriod: fixed(time.Second)})
	call(b, errBoom)
	b.ForceOpen()
	clock.Advance(time.Second) // the open period's timer must not end the forced state
	if s := b.State(); s != StateForcedOpen {
		t.Errorf("state %v after the open period, want forced open", s)
	}
}

func TestBreakerForceClosed(t *testing.T) {
	b, _ := newTestBreaker(t, BreakerConfig{MinCalls: 1})
	b.ForceClosed()
	for range 100 {
		if err := b.Execute(func() error { return errBoom }); !errors.Is(err, errBoom) {
			t.Fatalf("forced closed: Execute = %v, want the callee's error", err)
		}
	}
	if s := b.Snapshot(); s.State != StateForcedClosed || s.Calls != 0 {
		t.Errorf("after 100 failures: %+v, want forced closed, nothing counted", s)
	}
	b.Release()
	call(b, errBoom)
	if s := b.State(); s != StateOpen {
		t.Errorf("released, then a failure: state %v, want open (counting again)", s)
	}
}

func TestBreakerReleaseClosesAnOpenBreaker(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, OpenPeriod: fixed(time.Minute)})
	call(b, errBoom)
	b.Release()
	if !call(b, nil) || b.State() != StateClosed {
		t.Fatalf("after Release: state %v, want closed and admitting", b.State())
	}
	clock.Advance(time.Minute) // the old open period's timer does nothing now
	if s := b.State(); s != StateClosed {
		t.Errorf("state %v, want closed", s)
	}
}

func TestRetryDoesNotRetryIntoForcedOpenBreaker(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{})
	b.ForceOpen()
	r, err := NewRetry(RetryConfig{MaxAttempts: 5})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	_, err = Do(context.Background(), &Pipeline{Retry: r, Breaker: b, Clock: clock}, failing(&calls))
	if !errors.Is(err, ErrOpen) || calls != 0 || clock.Timers() != 0 {
		t.Errorf("err = %v, calls %d, timers %d; want ErrOpen at once, no call, no back-off", err, calls, clock.Timers())
	}
}

// Probes that never finish must not keep a breaker half-open.
func TestBreakerHalfOpenMaxWait(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, HalfOpenMaxWait: 10 * time.Second,
		OpenPeriod: fixed(time.Second)})
	call(b, errBoom)
	clock.Advance(time.Second)
	stuck, err := b.Allow() // a probe that hangs
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(9 * time.Second)
	_, err = b.Allow()
	var oe *OpenError
	if !errors.As(err, &oe) || oe.State != StateHalfOpen || !oe.Until.Equal(t0.Add(11*time.Second)) {
		t.Fatalf("while the probe runs: %v (%+v), want half-open until the wait ends at +11s", err, oe)
	}
	clock.Advance(time.Second)
	_, err = b.Allow()
	if !errors.As(err, &oe) || oe.State != StateOpen {
		t.Fatalf("after HalfOpenMaxWait: %v, want the breaker open again", err)
	}
	if s := b.Snapshot(); s.Opens != 2 {
		t.Errorf("Opens = %d, want 2: a hung probe is a failed probe", s.Opens)
	}
	clock.Advance(time.Second)
	if !call(b, nil) || b.State() != StateClosed {
		t.Fatalf("a fresh probe: state %v, want closed", b.State())
	}
	stuck.Done(nil) // the hung probe ends at last: too late to count
	if s := b.Snapshot(); s.State != StateClosed || s.Calls != 0 {
		t.Errorf("after the late probe: %+v, want closed, nothing counted", s)
	}
}
