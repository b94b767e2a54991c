package resilience

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// mustPanic runs f and returns what it panicked with, failing the test if
// it returned normally.
func mustPanic(t *testing.T, f func()) (v any) {
	t.Helper()
	defer func() { v = recover() }()
	f()
	t.Fatal("no panic: want the callee's panic to propagate")
	return nil
}

// openThenHalfOpen trips b with one failure and moves clock past its open
// period (b must have MinCalls 1 and a 1 s open period).
func openThenHalfOpen(t *testing.T, b *Breaker, clock *resiliencetest.Clock) {
	t.Helper()
	call(b, errBoom)
	clock.Advance(time.Second)
	if s := b.State(); s != StateHalfOpen {
		t.Fatalf("state = %v, want half-open", s)
	}
}

// A half-open probe whose function panics must count as a failed probe
// and give its slot back: the breaker opens again, and recovers later.
func TestPipelinePanickingProbeDoesNotWedgeBreaker(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, OpenPeriod: fixed(time.Second)})
	bh, err := NewBulkhead(BulkheadConfig{MaxConcurrent: 1, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	p := &Pipeline{Bulkhead: bh, Breaker: b, AttemptTimeout: time.Minute, Clock: clock}
	openThenHalfOpen(t, b, clock)
	got := mustPanic(t, func() {
		Do(context.Background(), p, func(ctx context.Context) (int, error) {
			_ = ctx.Done() // arm the attempt's timer
			panic("probe bug")
		})
	})
	if got != "probe bug" {
		t.Errorf("recovered %v, want the callee's own panic value", got)
	}
	if s := b.Snapshot(); s.State != StateOpen || s.Opens != 2 {
		t.Errorf("after a panicking probe: %+v, want open for the 2nd time", s)
	}
	if bh.InFlight() != 0 {
		t.Errorf("bulkhead slots held after the panic: %d", bh.InFlight())
	}
	if n := clock.Timers(); n != 1 {
		t.Errorf("timers pending = %d, want only the breaker's (the attempt's timer released)", n)
	}
	clock.Advance(time.Second)
	if _, err := Do(context.Background(), p, func(context.Context) (int, error) { return 1, nil }); err != nil {
		t.Fatalf("healthy call after the open period: %v", err)
	}
	if s := b.State(); s != StateClosed {
		t.Errorf("state = %v, want closed after a good probe", s)
	}
}

func TestBreakerPanickingClassifierDoesNotWedge(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, OpenPeriod: fixed(time.Second),
		Classify: func(err error) Class {
			if errors.Is(err, errBoom) {
				return ClassTransient
			}
			panic("classifier bug")
		}})
	openThenHalfOpen(t, b, clock)
	permit, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	if got := mustPanic(t, func() { permit.Done(errors.New("odd")) }); got != "classifier bug" {
		t.Errorf("recovered %v, want the classifier's panic", got)
	}
	if s := b.Snapshot(); s.State != StateOpen || s.Opens != 2 {
		t.Errorf("after a panicking classifier: %+v, want open for the 2nd time", s)
	}
	clock.Advance(time.Second)
	if !call(b, nil) || b.State() != StateClosed {
		t.Errorf("after the open period: state %v, want a probe admitted and closed", b.State())
	}
}

// A hook that panics on closed→open must not leave the breaker open with
// no timer armed to move it to half-open.
func TestBreakerPanickingHookDoesNotWedge(t *testing.T) {
	panicked := false
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, OpenPeriod: fixed(time.Second),
		OnStateChange: func(_ string, _, to State) {
			if to == StateOpen && !panicked {
				panicked = true
				panic("hook bug")
			}
		}})
	if got := mustPanic(t, func() { call(b, errBoom) }); got != "hook bug" {
		t.Errorf("recovered %v, want the hook's panic", got)
	}
	if s := b.State(); s != StateOpen {
		t.Fatalf("state = %v, want open", s)
	}
	clock.Advance(time.Second)
	if s := b.State(); s != StateHalfOpen {
		t.Fatalf("after the open period: state = %v, want half-open (a timer must be armed)", s)
	}
	if !call(b, nil) || b.State() != StateClosed {
		t.Errorf("state = %v, want closed after a good probe", b.State())
	}
}

// panickyUpstream panics on the requests whose path is /panic and answers
// the others with their status (/500 → 500, anything else → 200).
type panickyUpstream struct{}

func (panickyUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	status := http.StatusOK
	switch req.URL.Path {
	case "/panic":
		panic("upstream client bug")
	case "/500":
		status = http.StatusInternalServerError
	}
	return &http.Response{StatusCode: status, Header: http.Header{}, Request: req,
		Body: io.NopCloser(strings.NewReader(""))}, nil
}

// The proxy's symptom of a wedged breaker: after a half-open probe that
// panicked, it answered 503 forever.
func TestProxyRecoversAfterAPanickingProbe(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	proxy, err := NewProxy(&url.URL{Scheme: "http", Host: "cart"}, ProxyConfig{Transport: TransportConfig{
		Base: panickyUpstream{}, Clock: clock, Retry: RetryConfig{MaxAttempts: 1},
		Breaker: BreakerConfig{MinCalls: 1, OpenPeriod: fixed(time.Second)}}})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(path string) int {
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code
	}
	serve("/500")
	clock.Advance(time.Second)
	mustPanic(t, func() { serve("/panic") }) // net/http would recover it
	clock.Advance(time.Second)
	if code := serve("/ok"); code != http.StatusOK {
		t.Errorf("after the next open period: status %d, want 200 from a new probe", code)
	}
}
