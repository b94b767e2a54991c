package resilience

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/resiliencetest"
)

var errBoom = errors.New("boom")

func newTestBreaker(t *testing.T, cfg BreakerConfig) (*Breaker, *resiliencetest.Clock) {
	t.Helper()
	clock := resiliencetest.NewClock(t0)
	cfg.Clock = clock
	b, err := NewBreaker(cfg)
	if err != nil {
		t.Fatalf("NewBreaker: %v", err)
	}
	return b, clock
}

// call makes one call through b that returns err, and reports whether the
// breaker let it through.
func call(b *Breaker, err error) bool {
	p, rerr := b.Allow()
	if rerr != nil {
		return false
	}
	p.Done(err)
	return true
}

func TestBreakerTripsOnFailureRate(t *testing.T) {
	tests := []struct {
		name     string
		outcomes string // s = success, f = failure, c = cancelled
		want     State
	}{
		{"all successes", "ssssssssss", StateClosed},
		{"below min calls", "ffff", StateClosed},
		{"min calls reached at rate", "ssfff", StateOpen},
		{"below rate", "sssssssfff", StateClosed},
		{"old successes slid out", "sssssssssssssssssssssfffff", StateOpen},
		{"cancellations ignored", "ccccccccccssf", StateClosed},
		{"rate reached in window", "sssssfffff", StateOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := newTestBreaker(t, BreakerConfig{WindowSize: 10, MinCalls: 5, FailureRate: 0.5})
			for _, o := range tt.outcomes {
				var err error
				switch o {
				case 'f':
					err = errBoom
				case 'c':
					err = fmt.Errorf("call: %w", context.Canceled)
				}
				if !call(b, err) {
					break
				}
			}
			if got := b.State(); got != tt.want {
				t.Errorf("after %q: state = %v, want %v (snapshot %+v)", tt.outcomes, got, tt.want, b.Snapshot())
			}
		})
	}
}

func TestBreakerCancelledContextNotCounted(t *testing.T) {
	b, _ := newTestBreaker(t, BreakerConfig{WindowSize: 10, MinCalls: 1})
	for range 50 {
		if !call(b, context.Canceled) {
			t.Fatal("breaker rejected a call after cancellations only")
		}
	}
	if s := b.Snapshot(); s.Calls != 0 || s.Failures != 0 || s.State != StateClosed {
		t.Errorf("snapshot = %+v, want no calls counted and closed", s)
	}
	call(b, context.DeadlineExceeded) // a timeout is the callee's fault
	if got := b.State(); got != StateOpen {
		t.Errorf("after a deadline exceeded: state = %v, want open", got)
	}
}

func TestBreakerOpenRejectsWithUntil(t *testing.T) {
	b, _ := newTestBreaker(t, BreakerConfig{Name: "cart", MinCalls: 1, OpenPeriod: fixed(7 * time.Second)})
	call(b, errBoom)
	_, err := b.Allow()
	if !errors.Is(err, ErrOpen) {
		t.Fatalf("Allow on open breaker: err = %v, want ErrOpen", err)
	}
	var oe *OpenError
	if !errors.As(err, &oe) {
		t.Fatalf("err %T is not *OpenError", err)
	}
	if want := t0.Add(7 * time.Second); !oe.Until.Equal(want) || oe.Name != "cart" {
		t.Errorf("OpenError = %+v, want Name cart, Until %v", oe, want)
	}
	_, err2 := b.Allow()
	if err2 != err {
		t.Errorf("rejections in one open period return different errors (%p, %p): want one preallocated value", err, err2)
	}
}

func TestBreakerOpenPeriodGrowsAndResets(t *testing.T) {
	opened := 0
	b, clock := newTestBreaker(t, BreakerConfig{
		MinCalls:   1,
		OpenPeriod: Backoff{Initial: time.Second, Max: 8 * time.Second, Jitter: NoJitter},
		OnStateChange: func(_ string, from, to State) {
			if to == StateOpen {
				opened++
			}
		},
	})
	openFor := func() time.Duration {
		t.Helper()
		_, err := b.Allow()
		var oe *OpenError
		if !errors.As(err, &oe) || oe.Until.IsZero() {
			t.Fatalf("Allow: %v, want an open breaker", err)
		}
		return oe.Until.Sub(clock.Now())
	}
	probe := func(err error) {
		t.Helper()
		clock.Advance(openFor())
		if got := b.State(); got != StateHalfOpen {
			t.Fatalf("after the open period: state = %v, want half-open", got)
		}
		if !call(b, err) {
			t.Fatal("half-open breaker rejected the probe")
		}
	}

	call(b, errBoom)
	var got []time.Duration
	got = append(got, openFor())
	for range 4 {
		probe(errBoom)
		got = append(got, openFor())
	}
	want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("open periods = %v, want %v", got, want)
	}
	if s := b.Snapshot(); s.Opens != 5 {
		t.Errorf("Opens = %d, want 5", s.Opens)
	}

	probe(nil)
	if s := b.Snapshot(); s.State != StateClosed || s.Opens != 0 {
		t.Fatalf("after a good probe: %+v, want closed with 0 opens", s)
	}
	call(b, errBoom)
	if got := openFor(); got != time.Second {
		t.Errorf("first open period after closing = %v, want reset to 1s", got)
	}
	if opened != 6 {
		t.Errorf("OnStateChange saw %d opens, want 6", opened)
	}
}

func TestDefaultOpenPeriodGrowsWithinJitter(t *testing.T) {
	for n, base := range []time.Duration{5, 10, 20, 40, 80, 160, 300, 300} {
		base *= time.Second
		for range 100 {
			got := defaultOpenPeriod.Delay(n + 1)
			if lo := base * 8 / 10; got < lo || got > base {
				t.Fatalf("open period %d = %v, want in [%v, %v]", n+1, got, lo, base)
			}
		}
	}
}

func TestBreakerRetryAfterExtendsOpenPeriod(t *testing.T) {
	tests := []struct {
		name   string
		period time.Duration
		err    error
		want   time.Duration
	}{
		{"no hint", 5 * time.Second, errBoom, 5 * time.Second},
		{"shorter hint", 5 * time.Second, WithRetryAfter(errBoom, time.Second), 5 * time.Second},
		{"longer hint", 5 * time.Second, WithRetryAfter(errBoom, 30*time.Second), 30 * time.Second},
		{"hint capped", 5 * time.Second, WithRetryAfter(errBoom, time.Hour), time.Minute},
		{"capped hint never shortens the period", time.Hour, WithRetryAfter(errBoom, 2*time.Hour), time.Hour},
		{"negative hint", 5 * time.Second, WithRetryAfter(errBoom, -time.Hour), 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := newTestBreaker(t, BreakerConfig{MinCalls: 1, MaxRetryAfter: time.Minute,
				OpenPeriod: fixed(tt.period)})
			call(b, tt.err)
			if got := b.Snapshot().Until.Sub(t0); got != tt.want {
				t.Errorf("open for %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBreakerHalfOpenAdmitsExactlyNProbes(t *testing.T) {
	for _, probes := range []int{1, 3, 10} {
		t.Run(fmt.Sprint(probes), func(t *testing.T) {
			b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, HalfOpenProbes: probes,
				OpenPeriod: fixed(time.Second)})
			call(b, errBoom)
			clock.Advance(time.Second)

			var admitted, rejected atomic.Int32
			permits := make(chan Permit, 100)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for range 100 {
				wg.Go(func() {
					<-start
					p, err := b.Allow()
					switch {
					case err == nil:
						admitted.Add(1)
						permits <- p
					case errors.Is(err, ErrOpen):
						rejected.Add(1)
					}
				})
			}
			close(start)
			wg.Wait()
			close(permits)
			if admitted.Load() != int32(probes) || rejected.Load() != int32(100-probes) {
				t.Fatalf("admitted %d, rejected %d; want %d and %d", admitted.Load(), rejected.Load(), probes, 100-probes)
			}
			i := 0
			for p := range permits {
				if i++; i < probes && b.State() != StateHalfOpen {
					t.Fatalf("closed after %d of %d good probes", i-1, probes)
				}
				p.Done(nil)
			}
			if got := b.State(); got != StateClosed {
				t.Errorf("after %d good probes: state = %v, want closed", probes, got)
			}
		})
	}
}

func TestBreakerHalfOpenIgnoredProbeFreesItsSlot(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, OpenPeriod: fixed(time.Second)})
	call(b, errBoom)
	clock.Advance(time.Second)
	p, err := b.Allow()
	if err != nil {
		t.Fatalf("first probe: %v", err)
	}
	if _, err := b.Allow(); !errors.Is(err, ErrOpen) {
		t.Fatalf("second probe while the first is in flight: err = %v, want ErrOpen", err)
	}
	p.Done(context.Canceled)
	if !call(b, nil) {
		t.Fatal("the slot of a cancelled probe was not given back")
	}
	if got := b.State(); got != StateClosed {
		t.Errorf("state = %v, want closed", got)
	}
}

func TestBreakerSlowCallsTrip(t *testing.T) {
	tests := []struct {
		name string
		took time.Duration
		want State
	}{
		{"fast", 999 * time.Millisecond, StateClosed},
		{"slow", time.Second, StateOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, clock := newTestBreaker(t, BreakerConfig{WindowSize: 10, MinCalls: 5,
				SlowCallDuration: time.Second, SlowCallRate: 0.8})
			for range 5 {
				p, err := b.Allow()
				if err != nil {
					break
				}
				clock.Advance(tt.took)
				p.Done(nil) // successful, but maybe slow
			}
			if got := b.State(); got != tt.want {
				t.Errorf("state = %v, want %v (%+v)", got, tt.want, b.Snapshot())
			}
		})
	}
}

func TestBreakerSlowProbeReopens(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, SlowCallDuration: time.Second,
		OpenPeriod: fixed(time.Second)})
	openThenHalfOpen(t, b, clock)
	p, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	p.Done(nil)
	if s := b.Snapshot(); s.State != StateOpen || s.Opens != 2 {
		t.Errorf("after a slow probe: %+v, want open for the 2nd time", s)
	}
}

func TestBreakerTimeWindow(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{WindowDuration: 10 * time.Second, MinCalls: 4})
	for range 3 {
		call(b, errBoom)
	}
	clock.Advance(11 * time.Second) // those failures leave the window
	for range 3 {
		call(b, nil)
	}
	call(b, errBoom)
	if s := b.Snapshot(); s.State != StateClosed || s.Calls != 4 || s.Failures != 1 {
		t.Fatalf("snapshot = %+v, want closed with 4 calls, 1 failure", s)
	}
	for range 2 {
		call(b, errBoom)
	}
	if got := b.State(); got != StateOpen {
		t.Errorf("3 of 6 failed in the window: state = %v, want open", got)
	}
}

func TestBreakerNotReadyCountsAsSuccess(t *testing.T) {
	b, _ := newTestBreaker(t, BreakerConfig{MinCalls: 1})
	call(b, MarkNotReady(errBoom))
	if s := b.Snapshot(); s.State != StateClosed || s.Calls != 1 || s.Failures != 0 {
		t.Errorf("snapshot = %+v, want 1 successful call", s)
	}
}

func TestBreakerHooks(t *testing.T) {
	var changes []string
	var rejects int
	b, clock := newTestBreaker(t, BreakerConfig{
		Name: "cart", MinCalls: 1, OpenPeriod: fixed(time.Second),
		OnStateChange: func(name string, from, to State) { changes = append(changes, name+":"+from.String()+">"+to.String()) },
		OnReject:      func(string, State) { rejects++ },
	})
	call(b, errBoom)
	call(b, nil)
	clock.Advance(time.Second)
	call(b, nil)
	want := "[cart:closed>open cart:open>half-open cart:half-open>closed]"
	if got := fmt.Sprint(changes); got != want {
		t.Errorf("state changes = %s, want %s", got, want)
	}
	if rejects != 1 {
		t.Errorf("rejections = %d, want 1", rejects)
	}
}

func TestBreakerConfigValidate(t *testing.T) {
	bad := []BreakerConfig{
		{FailureRate: 1.5}, {WindowSize: -1}, {MinCalls: 200, WindowSize: 100},
		{SlowCallRate: -0.1}, {HalfOpenProbes: -1}, {WindowDuration: -time.Second},
	}
	for _, cfg := range bad {
		if _, err := NewBreaker(cfg); err == nil {
			t.Errorf("NewBreaker(%+v) = nil error, want one", cfg)
		}
	}
	if _, err := NewBreaker(BreakerConfig{}); err != nil {
		t.Errorf("zero config: %v", err)
	}
}

// countingClock counts reads, to prove the hot path reads no clock.
type countingClock struct {
	resiliencetest.Clock
	reads atomic.Int64
}

func (c *countingClock) Now() time.Time { c.reads.Add(1); return c.Clock.Now() }

func TestBreakerClosedSuccessReadsNoClockAndAllocatesNothing(t *testing.T) {
	clock := &countingClock{Clock: *resiliencetest.NewClock(t0)}
	b, err := NewBreaker(BreakerConfig{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	reads := clock.reads.Load()
	allocs := testing.AllocsPerRun(1000, func() {
		p, err := b.Allow()
		if err != nil {
			t.Fatal(err)
		}
		p.Done(nil)
	})
	if allocs != 0 {
		t.Errorf("allocations per successful call = %v, want 0", allocs)
	}
	if got := clock.reads.Load() - reads; got != 0 {
		t.Errorf("clock reads during successful calls = %d, want 0", got)
	}
	call(b, errBoom) // failures may read the clock; the window still counts
	if s := b.Snapshot(); s.Calls != 100 || s.Failures != 1 {
		t.Errorf("snapshot = %+v, want a full window with 1 failure", s)
	}
}

func TestBreakerOpenRejectionAllocatesNothing(t *testing.T) {
	b, _ := newTestBreaker(t, BreakerConfig{MinCalls: 1})
	call(b, errBoom)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := b.Allow(); err == nil {
			t.Fatal("open breaker admitted a call")
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per rejection = %v, want 0", allocs)
	}
}

func TestCountWindowSlots(t *testing.T) {
	for _, n := range []int{1, 3, 7, 100, 1000} {
		w := newCountWindow(n)
		for i := range uint64(3 * n) {
			if got, want := w.slot(i), &w.slots[i%uint64(n)]; got != want {
				t.Fatalf("n=%d: slot(%d) is not slot %d", n, i, i%uint64(n))
			}
		}
	}
}

func TestCountWindowSlides(t *testing.T) {
	w := newCountWindow(5)
	check := func(step string, calls, failures int) {
		t.Helper()
		if c := w.counts(); c.calls != calls || c.failures != failures {
			t.Errorf("%s: counts = %+v, want %d calls, %d failures", step, c, calls, failures)
		}
	}
	for range 3 {
		w.record(0)
	}
	check("filling", 3, 0)
	for range 10 {
		w.record(0)
	}
	check("full of successes", 5, 0)
	w.record(bitFailure)
	for range 4 {
		w.record(0)
	}
	check("failure 4 calls ago", 5, 1)
	w.record(0)
	check("failure slid out", 5, 0)
	w.record(bitFailure | bitSlow)
	if c := w.counts(); c.slow != 1 {
		t.Errorf("slow = %d, want 1", c.slow)
	}
}

func TestConfigsRejectNaN(t *testing.T) {
	nan := math.NaN()
	for _, cfg := range []BreakerConfig{{FailureRate: nan}, {SlowCallRate: nan}} {
		if _, err := NewBreaker(cfg); err == nil {
			t.Errorf("NewBreaker(%+v) = nil error, want one", cfg)
		}
	}
	for _, b := range []Backoff{{Initial: time.Second, Multiplier: nan}, {Initial: time.Second, Jitter: nan},
		{Initial: time.Second, Multiplier: math.Inf(1)}} {
		if err := b.Validate(); err == nil {
			t.Errorf("%+v.Validate() = nil, want an error", b)
		}
		if _, err := NewRetry(RetryConfig{Backoff: b}); err == nil {
			t.Errorf("NewRetry with Backoff %+v = nil error, want one", b)
		}
	}
	if _, err := NewRetryBudget(nan, 1); err == nil {
		t.Error("NewRetryBudget(NaN, 1) = nil error, want one")
	}
}

// The clock may step back (a wall clock set back, a fake clock moved
// back): the time window counts such calls in its latest bucket instead of
// indexing before its first one.
func TestBreakerTimeWindowClockStepsBack(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{WindowDuration: time.Second, MinCalls: 3})
	clock.Advance(-150 * time.Millisecond)
	call(b, errBoom)
	clock.Advance(500 * time.Millisecond)
	call(b, nil)
	clock.Advance(-2 * time.Second)
	call(b, errBoom)
	if s := b.Snapshot(); s.State != StateOpen {
		t.Errorf("2 of 3 calls failed in the window: %+v, want open", s)
	}
}

// A slow hook on one goroutine must not let later state changes, made on
// other goroutines meanwhile, be reported before it.
func TestBreakerStateChangesDeliveredInOrder(t *testing.T) {
	var (
		mu      sync.Mutex
		got     []string
		slow    = true
		entered = make(chan struct{})
		release = make(chan struct{})
		tripped = make(chan struct{})
	)
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, OpenPeriod: fixed(time.Second),
		OnStateChange: func(_ string, from, to State) {
			mu.Lock()
			wait := slow
			slow = false
			mu.Unlock()
			if wait {
				close(entered)
				<-release
			}
			mu.Lock()
			got = append(got, from.String()+">"+to.String())
			mu.Unlock()
		}})
	go func() {
		defer close(tripped)
		call(b, errBoom)
	}()
	<-entered                  // closed→open is being reported, slowly
	clock.Advance(time.Second) // open→half-open
	call(b, nil)               // half-open→closed
	close(release)
	<-tripped
	mu.Lock()
	defer mu.Unlock()
	if want := "[closed>open open>half-open half-open>closed]"; fmt.Sprint(got) != want {
		t.Errorf("hooks saw %v, want %s", got, want)
	}
}

func TestBreakerExecute(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 3, OpenPeriod: fixed(time.Second)})
	if err := b.Execute(func() error { return nil }); err != nil {
		t.Fatalf("Execute(success) = %v", err)
	}
	if err := b.Execute(func() error { return errBoom }); !errors.Is(err, errBoom) {
		t.Fatalf("Execute(failure) = %v, want errBoom", err)
	}
	if got := mustPanic(t, func() { b.Execute(func() error { panic("bug") }) }); got != "bug" {
		t.Errorf("recovered %v, want the function's panic", got)
	}
	if s := b.Snapshot(); s.State != StateOpen {
		t.Fatalf("after 1 success, 1 failure, 1 panic: %+v, want open (a panic is a failure)", s)
	}
	ran := false
	if err := b.Execute(func() error { ran = true; return nil }); !errors.Is(err, ErrOpen) || ran {
		t.Errorf("Execute on an open breaker = %v, ran %v; want ErrOpen without running", err, ran)
	}
	clock.Advance(time.Second)
	if err := b.Execute(func() error { return nil }); err != nil || b.State() != StateClosed {
		t.Errorf("probe: %v, state %v; want closed", err, b.State())
	}
}

func TestBreakerExecuteAllocatesNothing(t *testing.T) {
	b, _ := newTestBreaker(t, BreakerConfig{})
	fn := func() error { return nil }
	if allocs := testing.AllocsPerRun(1000, func() { b.Execute(fn) }); allocs != 0 {
		t.Errorf("allocations per Execute = %v, want 0", allocs)
	}
}

// Done twice on one permit counts once: in half-open a second Done must not
// pass for a second probe (and close the breaker early), and a copy of a
// probe's permit is counted once too.
func TestPermitDoneTwiceCountsOnce(t *testing.T) {
	b, clock := newTestBreaker(t, BreakerConfig{MinCalls: 1, HalfOpenProbes: 2,
		OpenPeriod: fixed(time.Second)})
	openThenHalfOpen(t, b, clock)
	p, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	copied := p
	p.Done(nil)
	p.Done(nil)
	copied.Done(nil)
	if s := b.State(); s != StateHalfOpen {
		t.Fatalf("one probe of two reported (three times): state %v, want half-open", s)
	}
	if !call(b, nil) || b.State() != StateClosed {
		t.Errorf("second probe: state %v, want closed", b.State())
	}

	b, _ = newTestBreaker(t, BreakerConfig{WindowSize: 10, MinCalls: 2})
	p, _ = b.Allow()
	p.Done(errBoom)
	p.Done(errBoom)
	if s := b.Snapshot(); s.Calls != 1 || s.State != StateClosed {
		t.Errorf("one failed call reported twice: %+v, want 1 call, closed", s)
	}
}
