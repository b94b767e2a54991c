package resilience

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// failing returns a function that fails with errs in turn (then succeeds)
// and counts its calls.
func failing(calls *int, errs ...error) func(context.Context) (int, error) {
	return func(context.Context) (int, error) {
		*calls++
		if *calls <= len(errs) {
			return 0, errs[*calls-1]
		}
		return *calls, nil
	}
}

// newTestRetry returns a retry without jitter, and an automatic fake clock
// for the pipeline that runs it.
func newTestRetry(t *testing.T, cfg RetryConfig) (*Retry, *resiliencetest.Clock) {
	t.Helper()
	clock := resiliencetest.NewAutoClock(t0)
	r, err := NewRetry(cfg)
	if err != nil {
		t.Fatalf("NewRetry: %v", err)
	}
	r.random = func() float64 { return 0 } // no jitter: delays are exact
	return r, clock
}

func TestRetryClasses(t *testing.T) {
	tests := []struct {
		name      string
		errs      []error
		wantCalls int
		wantErr   error
	}{
		{"success", nil, 1, nil},
		{"transient then success", []error{errBoom, errBoom}, 3, nil},
		{"transient exhausts attempts", []error{errBoom, errBoom, errBoom, errBoom}, 3, errBoom},
		{"permanent stops at once", []error{MarkPermanent(errBoom)}, 1, errBoom},
		{"cancelled stops at once", []error{context.Canceled}, 1, context.Canceled},
		{"not ready is retried", []error{MarkNotReady(errBoom), MarkNotReady(errBoom)}, 3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, clock := newTestRetry(t, RetryConfig{MaxAttempts: 3})
			calls := 0
			_, err := Do(context.Background(), &Pipeline{Retry: r, Clock: clock}, failing(&calls, tt.errs...))
			if calls != tt.wantCalls {
				t.Errorf("calls = %d, want %d", calls, tt.wantCalls)
			}
			if (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestRetryBacksOffExponentially(t *testing.T) {
	var delays []time.Duration
	r, clock := newTestRetry(t, RetryConfig{MaxAttempts: 5,
		Backoff: Backoff{Initial: time.Second, Max: 5 * time.Second},
		OnRetry: func(_ int, _ error, d time.Duration) { delays = append(delays, d) }})
	calls := 0
	_, err := Do(context.Background(), &Pipeline{Retry: r, Clock: clock}, failing(&calls, errBoom, errBoom, errBoom, errBoom, errBoom))
	if !errors.Is(err, errBoom) {
		t.Fatalf("err = %v, want errBoom", err)
	}
	if got, want := fmt.Sprint(delays), "[1s 2s 4s 5s]"; got != want {
		t.Errorf("delays = %s, want %s", got, want)
	}
	if got := clock.Now().Sub(t0); got != 12*time.Second {
		t.Errorf("slept %v, want 12s", got)
	}
}

func TestRetryFullJitter(t *testing.T) {
	b := defaultBackoff
	for n := 1; n <= 10; n++ {
		ceiling := min(b.Initial<<(n-1), b.Max)
		if got := b.delay(n, func() float64 { return 0.999999 }); got > ceiling/1000 {
			t.Errorf("delay(%d) with random≈1 = %v, want near 0", n, got)
		}
		if got := b.delay(n, func() float64 { return 0 }); got != ceiling {
			t.Errorf("delay(%d) with random=0 = %v, want %v", n, got, ceiling)
		}
	}
}

// fakeDeadlineCtx has a deadline on a fake clock's timeline: it reports it,
// but real time never ends it, however long the tests run.
type fakeDeadlineCtx struct {
	context.Context
	deadline time.Time
}

func withFakeDeadline(d time.Time) context.Context {
	return fakeDeadlineCtx{context.Background(), d}
}

func (c fakeDeadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func TestRetryRespectsDeadline(t *testing.T) {
	r, clock := newTestRetry(t, RetryConfig{MaxAttempts: 10, Backoff: Backoff{Initial: time.Second}})
	ctx := withFakeDeadline(t0.Add(3500 * time.Millisecond))
	calls := 0
	_, err := Do(ctx, &Pipeline{Retry: r, Clock: clock}, failing(&calls, errBoom, errBoom, errBoom, errBoom))
	// Attempts at 0s, 1s, 3s; the next would start at 7s, past the deadline.
	if calls != 3 || !errors.Is(err, errBoom) {
		t.Errorf("calls = %d, err = %v; want 3 calls and errBoom", calls, err)
	}
	if got := clock.Now().Sub(t0); got != 3*time.Second {
		t.Errorf("slept %v, want 3s (no sleep past the deadline)", got)
	}
}

func TestRetryMaxElapsed(t *testing.T) {
	r, clock := newTestRetry(t, RetryConfig{MaxAttempts: 10, MaxElapsed: 2 * time.Second, Backoff: Backoff{Initial: time.Second}})
	calls := 0
	Do(context.Background(), &Pipeline{Retry: r, Clock: clock}, failing(&calls, errBoom, errBoom, errBoom))
	if calls != 2 || clock.Now().Sub(t0) != time.Second {
		t.Errorf("calls = %d after %v, want 2 after 1s", calls, clock.Now().Sub(t0))
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	r, clock := newTestRetry(t, RetryConfig{Backoff: Backoff{Initial: time.Millisecond}})
	calls := 0
	v, err := Do(context.Background(), &Pipeline{Retry: r, Clock: clock}, failing(&calls, WithRetryAfter(errBoom, 7*time.Second)))
	if err != nil || v != 2 {
		t.Fatalf("Do = %v, %v; want 2, nil", v, err)
	}
	if got := clock.Now().Sub(t0); got != 7*time.Second {
		t.Errorf("waited %v, want the hinted 7s", got)
	}

	// A hint that ends past the deadline: give up now rather than sleep.
	ctx := withFakeDeadline(clock.Now().Add(5 * time.Second))
	calls = 0
	_, err = Do(ctx, &Pipeline{Retry: r, Clock: clock}, failing(&calls, WithRetryAfter(errBoom, 7*time.Second)))
	if calls != 1 || !errors.Is(err, errBoom) {
		t.Errorf("calls = %d, err = %v; want 1 call, errBoom", calls, err)
	}
}

func TestRetryBudgetCapsRetries(t *testing.T) {
	budget, err := NewRetryBudget(0.1, 5)
	if err != nil {
		t.Fatal(err)
	}
	r, clock := newTestRetry(t, RetryConfig{MaxAttempts: 3, Budget: budget, Backoff: Backoff{Initial: time.Millisecond}})
	calls, exhausted := 0, 0
	always := func(context.Context) (int, error) { calls++; return 0, errBoom }
	for range 100 {
		_, err := Do(context.Background(), &Pipeline{Retry: r, Clock: clock}, always)
		if !errors.Is(err, errBoom) {
			t.Fatalf("err = %v, want it to wrap errBoom", err)
		}
		if errors.Is(err, ErrBudgetExhausted) {
			exhausted++
		}
	}
	retries := calls - 100
	// 5 tokens to start with, plus 0.1 per call: at most 15 retries, where
	// 200 would be made without a budget.
	if retries > 15 || retries < 10 {
		t.Errorf("retries = %d, want between 10 and 15", retries)
	}
	if exhausted == 0 {
		t.Error("no error reported ErrBudgetExhausted")
	}
}

func TestRetryDoesNotRetryIntoOpenBreaker(t *testing.T) {
	tests := []struct {
		name      string
		backoff   time.Duration
		wantCalls int
		wantErr   error
	}{
		{"back-off ends while open: give up", time.Second, 1, errBoom},
		{"back-off outlasts the open period: probe", 5 * time.Second, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := resiliencetest.NewClock(t0)
			b, err := NewBreaker(BreakerConfig{MinCalls: 1, Clock: clock, OpenPeriod: fixed(4 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewRetry(RetryConfig{MaxAttempts: 3, Backoff: Backoff{Initial: tt.backoff}})
			if err != nil {
				t.Fatal(err)
			}
			r.random = func() float64 { return 0 }
			done := make(chan error)
			calls := 0
			go func() {
				_, err := Do(context.Background(), &Pipeline{Retry: r, Breaker: b}, failing(&calls, errBoom))
				done <- err
			}()
			if tt.wantCalls > 1 {
				// The first attempt trips the breaker (its half-open timer)
				// and the retry sleeps (a second timer).
				if err := clock.WaitTimers(context.Background(), 2); err != nil {
					t.Fatal(err)
				}
				clock.Advance(tt.backoff)
			}
			err = <-done
			if calls != tt.wantCalls || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("calls = %d, err = %v; want %d, %v", calls, err, tt.wantCalls, tt.wantErr)
			}
		})
	}
}

func TestRetryStopsWhenContextEndsDuringBackoff(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	r, err := NewRetry(RetryConfig{Backoff: Backoff{Initial: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := Do(ctx, &Pipeline{Retry: r, Clock: clock}, func(context.Context) (int, error) { return 0, errBoom })
		done <- err
	}()
	if err := clock.WaitTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || !errors.Is(err, errBoom) {
		t.Errorf("err = %v, want context.Canceled, wrapping the last attempt's error", err)
	}
}

func TestRetryConfigValidate(t *testing.T) {
	for _, cfg := range []RetryConfig{{MaxAttempts: -1}, {MaxElapsed: -1}, {Backoff: Backoff{Initial: -1}},
		{Backoff: Backoff{Initial: 1, Jitter: 2}}, {Backoff: Backoff{Initial: 1, Multiplier: 0.5}}} {
		if _, err := NewRetry(cfg); err == nil {
			t.Errorf("NewRetry(%+v) = nil error, want one", cfg)
		}
	}
	if _, err := NewRetryBudget(0, 1); err == nil {
		t.Error("NewRetryBudget(0, 1) = nil error, want one")
	}
}

func TestRetryBudgetSmallRatioRefills(t *testing.T) {
	budget, err := NewRetryBudget(0.0004, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !budget.withdraw() {
		t.Fatal("a fresh budget refused its first retry")
	}
	for range 2499 {
		budget.call()
	}
	if budget.withdraw() {
		t.Fatalf("after 2,499 calls at 0.0004 a retry was allowed (tokens %v), want one only after 2,500", budget.Tokens())
	}
	budget.call()
	if !budget.withdraw() {
		t.Errorf("after 2,500 calls at 0.0004: no retry allowed (tokens %v), want one", budget.Tokens())
	}
}

// A callee's Retry-After is bounded: capped at MaxRetryAfter (by default
// the back-off's Max), and never below the back-off, so a hint of 0 or less
// does not make a retry storm.
func TestRetryAfterHintIsBounded(t *testing.T) {
	tests := []struct {
		name string
		max  time.Duration
		hint time.Duration
		want time.Duration
	}{
		{"day-long hint, default cap", 0, 24 * time.Hour, 5 * time.Second},
		{"day-long hint, own cap", 30 * time.Second, 24 * time.Hour, 30 * time.Second},
		{"hint within the cap", 0, 3 * time.Second, 3 * time.Second},
		{"zero hint", 0, 0, time.Second},
		{"negative hint", 0, -time.Hour, time.Second},
		{"hint shorter than the back-off", 0, time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var delays []time.Duration
			r, clock := newTestRetry(t, RetryConfig{MaxAttempts: 2, MaxRetryAfter: tt.max,
				Backoff: Backoff{Initial: time.Second, Max: 5 * time.Second},
				OnRetry: func(_ int, _ error, d time.Duration) { delays = append(delays, d) }})
			calls := 0
			if _, err := Do(context.Background(), &Pipeline{Retry: r, Clock: clock}, failing(&calls, WithRetryAfter(errBoom, tt.hint))); err != nil {
				t.Fatal(err)
			}
			if got := clock.Now().Sub(t0); got != tt.want || len(delays) != 1 || delays[0] != tt.want {
				t.Errorf("waited %v (OnRetry %v), want %v", got, delays, tt.want)
			}
		})
	}
}
