package resilience

import (
	"context"
	"time"
)

// Pipeline composes the policies around a call, in one fixed order:
//
//	Bulkhead → Timeout (total) → Retry → Breaker → AttemptTimeout → call
//
// The bulkhead is outermost so that waiting callers hold no resources and
// a retrying call keeps its one slot; the total timeout bounds everything
// the caller waits for, back-off included; retry sits outside the breaker so
// each attempt asks the breaker afresh (and a rejection tells the retry when
// to come back); the attempt timeout is innermost so that a slow attempt
// counts as a failure in the breaker and as a transient error for the retry.
//
// Every field is optional; a zero Pipeline just calls the function. A
// Pipeline holds no state of its own: share its policies between pipelines
// as you like (one breaker per callee, one bulkhead per resource).
type Pipeline struct {
	Bulkhead       *Bulkhead
	Timeout        time.Duration // total, across attempts and back-off
	Retry          *Retry
	Breaker        *Breaker
	AttemptTimeout time.Duration
	// Clock drives the timeouts; the default is the system clock. Retry,
	// Breaker and Bulkhead use their own configured clocks.
	Clock Clock
}

// Do calls fn through the pipeline p and returns its result. fn must honour
// its context: timeouts cancel the context, they do not abandon fn.
//
// Errors: a rejection Is ErrOpen or ErrBulkheadFull; an attempt that ran
// past AttemptTimeout Is ErrTimeout (and wraps fn's error); when retries end
// the last attempt's error is returned (wrapped by ErrBudgetExhausted if the
// budget stopped them); when ctx ends during a back-off, the error Is ctx's
// cause (context.Canceled, context.DeadlineExceeded) and wraps the last
// attempt's error too.
func Do[T any](ctx context.Context, p *Pipeline, fn func(context.Context) (T, error)) (T, error) {
	if p == nil {
		return fn(ctx)
	}
	if p.Bulkhead != nil {
		if err := p.Bulkhead.Acquire(ctx); err != nil {
			var zero T
			return zero, err
		}
		defer p.Bulkhead.Release()
	}
	if p.Timeout > 0 {
		tc := newDeadlineCtx(ctx, clockOr(p.Clock), p.Timeout)
		defer tc.release()
		ctx = tc
	}
	if p.Retry == nil {
		return attempt(ctx, p, fn)
	}
	return retry(ctx, p, fn)
}

// Run is Do for a function with no result.
func (p *Pipeline) Run(ctx context.Context, fn func(context.Context) error) error {
	_, err := Do(ctx, p, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, fn(ctx)
	})
	return err
}

func retry[T any](ctx context.Context, p *Pipeline, fn func(context.Context) (T, error)) (T, error) {
	r := p.Retry
	if r.cfg.Budget != nil {
		r.cfg.Budget.call()
	}
	var start time.Time
	if r.cfg.MaxElapsed > 0 {
		start = r.cfg.Clock.Now()
	}
	for n := 1; ; n++ {
		v, err := attempt(ctx, p, fn)
		if err == nil {
			return v, nil
		}
		var notBefore time.Time
		if p.Breaker != nil {
			notBefore = p.Breaker.notBefore()
		}
		d, stop := r.next(ctx, n, start, notBefore, err)
		if stop != nil {
			return v, stop
		}
		if cause := sleep(ctx, r.cfg.Clock, d); cause != nil {
			return v, &interruptedError{cause: cause, last: err}
		}
	}
}

func attempt[T any](ctx context.Context, p *Pipeline, fn func(context.Context) (T, error)) (v T, err error) {
	var permit Permit
	if p.Breaker != nil {
		if permit, err = p.Breaker.Allow(); err != nil {
			return v, err
		}
	}
	var tc *deadlineCtx
	if p.AttemptTimeout > 0 {
		tc = newDeadlineCtx(ctx, clockOr(p.Clock), p.AttemptTimeout)
		ctx = tc
	}
	returned := false
	defer func() {
		if !returned { // fn panicked: release what the attempt holds, count a failure
			if tc != nil {
				tc.release()
			}
			permit.failed()
		}
	}()
	v, err = fn(ctx)
	returned = true
	if tc != nil {
		if err != nil && tc.timedOut() {
			err = &timeoutError{err: err, d: p.AttemptTimeout}
		}
		tc.release()
	}
	permit.Done(err)
	return v, err
}
