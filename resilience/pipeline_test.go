package resilience

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// waitForCtx is a callee that blocks until its context ends.
func waitForCtx(ctx context.Context) (int, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

func TestAttemptTimeout(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	b, err := NewBreaker(BreakerConfig{MinCalls: 1, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	p := &Pipeline{Breaker: b, AttemptTimeout: time.Second, Clock: clock}
	done := make(chan error)
	go func() {
		_, err := Do(context.Background(), p, waitForCtx)
		done <- err
	}()
	if err := clock.WaitTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(999 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("returned before the timeout: %v", err)
	default:
	}
	clock.Advance(time.Millisecond)
	err = <-done
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrTimeout wrapping context.DeadlineExceeded", err)
	}
	if got := b.State(); got != StateOpen {
		t.Errorf("breaker state = %v, want open: a timed-out attempt is a failure", got)
	}
}

func TestAttemptTimeoutIsRetried(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	r, err := NewRetry(RetryConfig{MaxAttempts: 2, Backoff: Backoff{Initial: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	r.random = func() float64 { return 0 }
	calls := 0
	fn := func(ctx context.Context) (int, error) {
		calls++
		if calls == 1 {
			return waitForCtx(ctx)
		}
		return 42, nil
	}
	done := make(chan error)
	go func() {
		v, err := Do(context.Background(), &Pipeline{Retry: r, AttemptTimeout: time.Second, Clock: clock}, fn)
		if err == nil && v != 42 {
			err = errors.New("wrong value")
		}
		done <- err
	}()
	for _, step := range []time.Duration{time.Second, time.Second} { // timeout, then back-off
		if err := clock.WaitTimers(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		clock.Advance(step)
	}
	if err := <-done; err != nil || calls != 2 {
		t.Errorf("err = %v after %d calls, want success on the 2nd", err, calls)
	}
}

func TestTotalTimeout(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	p := &Pipeline{Timeout: 5 * time.Second, Clock: clock}
	var deadline time.Time
	done := make(chan error)
	go func() {
		_, err := Do(context.Background(), p, func(ctx context.Context) (int, error) {
			deadline, _ = ctx.Deadline()
			// A derived context must see the deadline too.
			child, cancel := context.WithCancel(ctx)
			defer cancel()
			<-child.Done()
			return 0, child.Err()
		})
		done <- err
	}()
	if err := clock.WaitTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Second)
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
	if want := t0.Add(5 * time.Second); !deadline.Equal(want) {
		t.Errorf("ctx.Deadline() = %v, want %v", deadline, want)
	}
}

func TestDeadlineCtx(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	parent, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()

	c := newDeadlineCtx(parent, clock, time.Second)
	if err := c.Err(); err != nil {
		t.Fatalf("fresh: Err = %v", err)
	}
	clock.Advance(time.Second)
	if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("past deadline, Done never asked: Err = %v, want DeadlineExceeded", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("past deadline: Done not closed")
	}
	if !c.timedOut() {
		t.Error("timedOut = false past the deadline")
	}
	c.release()

	c = newDeadlineCtx(parent, clock, time.Second)
	done := c.Done()
	cancelParent()
	<-done
	if err := c.Err(); !errors.Is(err, context.Canceled) || c.timedOut() {
		t.Errorf("parent cancelled: Err = %v, timedOut = %v; want Canceled, false", err, c.timedOut())
	}
	c.release()

	c = newDeadlineCtx(context.Background(), clock, time.Second)
	c.release()
	if err := c.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("released: Err = %v, want Canceled", err)
	}
	if clock.Timers() != 0 {
		t.Errorf("timers left armed: %d", clock.Timers())
	}
}

func TestBulkhead(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	rejects := 0
	bh, err := NewBulkhead(BulkheadConfig{MaxConcurrent: 2, MaxQueue: 1, MaxWait: time.Second, Clock: clock,
		OnReject: func(string) { rejects++ }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 2 {
		if err := bh.Acquire(ctx); err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
	}
	// A third caller queues; a fourth finds the queue full.
	queued := make(chan error)
	go func() { queued <- bh.Acquire(ctx) }()
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := bh.Acquire(ctx); !errors.Is(err, ErrBulkheadFull) {
		t.Errorf("acquire with the queue full: err = %v, want ErrBulkheadFull", err)
	}
	bh.Release()
	if err := <-queued; err != nil {
		t.Errorf("queued caller: err = %v, want a slot", err)
	}
	// The queue wait runs out.
	go func() { queued <- bh.Acquire(ctx) }()
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := <-queued; !errors.Is(err, ErrBulkheadFull) {
		t.Errorf("after MaxWait: err = %v, want ErrBulkheadFull", err)
	}
	// The caller's context ends while queued.
	cctx, cancel := context.WithCancel(ctx)
	go func() { queued <- bh.Acquire(cctx) }()
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-queued; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled while queued: err = %v, want Canceled", err)
	}
	if rejects != 2 || bh.InFlight() != 2 || bh.Waiting() != 0 {
		t.Errorf("rejects = %d, in flight = %d, waiting = %d; want 2, 2, 0", rejects, bh.InFlight(), bh.Waiting())
	}
}

func TestBulkheadLimitsConcurrency(t *testing.T) {
	bh, err := NewBulkhead(BulkheadConfig{MaxConcurrent: 3, MaxQueue: 100})
	if err != nil {
		t.Fatal(err)
	}
	p := &Pipeline{Bulkhead: bh}
	var mu sync.Mutex
	running, peak := 0, 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			p.Run(context.Background(), func(context.Context) error {
				mu.Lock()
				running++
				peak = max(peak, running)
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				running--
				mu.Unlock()
				return nil
			})
		})
	}
	wg.Wait()
	if peak > 3 || peak == 0 {
		t.Errorf("peak concurrency = %d, want 1..3", peak)
	}
}

func TestPipelineSuccessAllocs(t *testing.T) {
	b, err := NewBreaker(BreakerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRetry(RetryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p := &Pipeline{Retry: r, Breaker: b, AttemptTimeout: time.Second}
	ctx := context.Background()
	fn := func(context.Context) (int, error) { return 1, nil }
	allocs := testing.AllocsPerRun(1000, func() { Do(ctx, p, fn) })
	if allocs > 1 {
		t.Errorf("allocations per successful call = %v, want <= 1 (the attempt's context)", allocs)
	}
}

func TestPipelineNilAndBulkheadRejection(t *testing.T) {
	v, err := Do(context.Background(), nil, func(context.Context) (int, error) { return 7, nil })
	if v != 7 || err != nil {
		t.Errorf("nil pipeline: %v, %v", v, err)
	}
	bh, _ := NewBulkhead(BulkheadConfig{MaxConcurrent: 1})
	bh.Acquire(context.Background())
	defer bh.Release()
	calls := 0
	_, err = Do(context.Background(), &Pipeline{Bulkhead: bh}, failing(&calls))
	if !errors.Is(err, ErrBulkheadFull) || calls != 0 {
		t.Errorf("full bulkhead: err = %v, calls = %d; want ErrBulkheadFull, 0", err, calls)
	}
}

func TestDeadlineCtxDerivedContexts(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	parent, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()

	c := newDeadlineCtx(parent, clock, time.Second)
	child, cancelChild := context.WithCancel(c)
	defer cancelChild()
	ran := make(chan struct{})
	context.AfterFunc(c, func() { close(ran) })
	clock.Advance(time.Second)
	<-child.Done()
	<-ran
	if err, cause := child.Err(), context.Cause(c); err != context.DeadlineExceeded || cause != context.DeadlineExceeded {
		t.Errorf("child Err %v, Cause(c) %v; want DeadlineExceeded for both", err, cause)
	}
	if cause := context.Cause(child); cause != context.DeadlineExceeded {
		t.Errorf("Cause(child) = %v, want DeadlineExceeded", cause)
	}

	// Derived from a context that has already ended.
	late, cancelLate := context.WithCancel(c)
	defer cancelLate()
	<-late.Done()

	// A derived context that stops following c leaves it alone.
	c = newDeadlineCtx(context.Background(), clock, time.Second)
	stop := context.AfterFunc(c, func() { t.Error("a stopped AfterFunc ran") })
	if !stop() {
		t.Error("stop = false before c ended")
	}
	c.release()
	if clock.Timers() != 0 {
		t.Errorf("timers left armed: %d", clock.Timers())
	}
}

// A callee that waits on its attempt's context, as any I/O call does, costs
// the pipeline four allocations: the context, its channel, the timer and
// the timer's function.
func TestPipelineCtxAwareAllocs(t *testing.T) {
	b, err := NewBreaker(BreakerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p := &Pipeline{Retry: &Retry{}, Breaker: b, AttemptTimeout: time.Second}
	ctx := context.Background()
	fn := func(ctx context.Context) (int, error) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		default:
			return 1, nil
		}
	}
	if allocs := testing.AllocsPerRun(1000, func() { Do(ctx, p, fn) }); allocs > 4 {
		t.Errorf("allocations per call = %v, want <= 4", allocs)
	}
}
