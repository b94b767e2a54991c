package resilience

import (
	"context"
	"errors"
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
// as you like (one breaker per callee, one bulkhead per resource). What
// depends on the result's type, a result classifier and a fallback (which
// wraps all the rest), is added per call with Call.
//
// A panic in the function counts as a failure in the breaker, releases the
// bulkhead slot, the probe slot and the timers the call held, and goes on
// up to the caller.
type Pipeline struct {
	Bulkhead       *Bulkhead
	Timeout        time.Duration // total, across attempts and back-off
	Retry          *Retry
	Breaker        *Breaker
	AttemptTimeout time.Duration
	// Clock drives the timeouts and the retry's back-off. Default: the
	// Breaker's clock, else the Bulkhead's, else the system clock. A
	// pipeline runs on one clock: if Clock, the Breaker's and the
	// Bulkhead's are not all the same, Do fails without calling.
	Clock Clock
}

// errClocks is Do's answer to a pipeline whose parts keep different time.
var errClocks = errors.New("resilience: a Pipeline's Clock, its Breaker's and its Bulkhead's clocks differ: give them one clock")

// clock returns the pipeline's one clock. (Written out for the breaker and
// the bulkhead: a shared helper measured 2 ns slower per call.)
func (p *Pipeline) clock() (Clock, error) {
	c := p.Clock
	if p.Breaker != nil {
		bc := p.Breaker.clock()
		if c == nil {
			c = bc
		} else if !sameClock(c, bc) {
			return nil, errClocks
		}
	}
	if p.Bulkhead != nil {
		bc := p.Bulkhead.clock()
		if c == nil {
			c = bc
		} else if !sameClock(c, bc) {
			return nil, errClocks
		}
	}
	if c == nil {
		return systemClock{}, nil
	}
	return c, nil
}

// sameClock reports whether a and b are the same clock; a clock of a type
// that cannot be compared is only the same as itself by chance, so false.
func sameClock(a, b Clock) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
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
	return do(ctx, p, fn, nil)
}

// noPolicies is the pipeline a nil *Pipeline stands for.
var noPolicies Pipeline

func do[T any](ctx context.Context, p *Pipeline, fn func(context.Context) (T, error), check func(T) error) (T, error) {
	if p == nil {
		if check == nil {
			return fn(ctx)
		}
		p = &noPolicies
	}
	clock, err := p.clock()
	if err != nil {
		var zero T
		return zero, err
	}
	if p.Bulkhead != nil {
		if err := p.Bulkhead.Acquire(ctx); err != nil {
			var zero T
			return zero, err
		}
		defer p.Bulkhead.Release()
	}
	if p.Timeout > 0 {
		tc := newDeadlineCtx(ctx, clock, p.Timeout)
		defer tc.release()
		ctx = tc
	}
	if p.Retry == nil {
		return attempt(ctx, p, clock, fn, check)
	}
	return retry(ctx, p, clock, fn, check)
}

// Run is Do for a function with no result.
func (p *Pipeline) Run(ctx context.Context, fn func(context.Context) error) error {
	_, err := Do(ctx, p, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, fn(ctx)
	})
	return err
}

func retry[T any](ctx context.Context, p *Pipeline, clock Clock, fn func(context.Context) (T, error), check func(T) error) (T, error) {
	r := p.Retry
	if r.cfg.Budget != nil {
		r.cfg.Budget.call()
	}
	var start time.Time
	if r.cfg.MaxElapsed > 0 {
		start = clock.Now()
	}
	for n := 1; ; n++ {
		v, err := attempt(ctx, p, clock, fn, check)
		if err == nil {
			return v, nil
		}
		var notBefore time.Time
		if p.Breaker != nil {
			notBefore = p.Breaker.notBefore()
		}
		d, stop := r.next(ctx, clock.Now(), n, start, notBefore, err)
		if stop != nil {
			return v, stop
		}
		if cause := sleep(ctx, clock, d); cause != nil {
			return v, &interruptedError{cause: cause, last: err}
		}
	}
}

// attempt makes one call through the breaker and the attempt timeout. If
// fn (or check) panics, what the attempt holds is released and the breaker
// counts a failure before the panic goes on up.
func attempt[T any](ctx context.Context, p *Pipeline, clock Clock, fn func(context.Context) (T, error), check func(T) error) (v T, err error) {
	if p.Breaker == nil && p.AttemptTimeout <= 0 { // nothing to hold, nothing to release
		if v, err = fn(ctx); err == nil && check != nil {
			err = check(v)
		}
		return v, err
	}
	var permit Permit
	if p.Breaker != nil {
		if permit, err = p.Breaker.Allow(); err != nil {
			return v, err
		}
	}
	var tc *deadlineCtx
	if p.AttemptTimeout > 0 {
		tc = newDeadlineCtx(ctx, clock, p.AttemptTimeout)
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
	if err == nil && check != nil {
		err = check(v)
	}
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

// Call adds to a call through a Pipeline what depends on its result type:
// a result classifier (Check) and a fallback. The zero Call adds nothing:
// Call[T]{}.Do(ctx, p, fn) is Do(ctx, p, fn).
//
// The fallback is the outermost policy:
//
//	Fallback → Bulkhead → Timeout (total) → Retry → Breaker → AttemptTimeout → fn → Check
type Call[T any] struct {
	// Check, if set, sees the value of each attempt that returned no error
	// and returns the error that value stands for, or nil if it is a good
	// answer: an HTTP response with status 503, a reply that says "not yet".
	// That error is then treated as fn's own: classified, counted by the
	// breaker, retried or not (mark it with MarkPermanent, MarkNotReady or
	// WithRetryAfter as any error), and if the retries end on it, Do
	// returns it together with the value. A panic in Check counts as a
	// failure, like one in fn.
	Check func(T) error
	// Fallback, if set, answers in place of a call that failed with an
	// error FallbackOn selects: a cached answer, a default, a degraded one.
	// Its result is the call's result (wrap err in its error to keep both).
	Fallback func(ctx context.Context, err error) (T, error)
	// FallbackOn selects the errors Fallback answers. Default: those
	// Classify calls ClassTransient (the callee failed, was too slow, or a
	// breaker or bulkhead turned the call away), but not permanent errors
	// (a cached answer must not hide bad input) nor a cancelled context
	// (nobody is waiting for the answer).
	FallbackOn func(error) bool
}

// Do calls fn through p (nil: no policies) with c's check and fallback.
func (c Call[T]) Do(ctx context.Context, p *Pipeline, fn func(context.Context) (T, error)) (T, error) {
	v, err := do(ctx, p, fn, c.Check)
	if err == nil || c.Fallback == nil {
		return v, err
	}
	if on := c.FallbackOn; on != nil && !on(err) || on == nil && Classify(err) != ClassTransient {
		return v, err
	}
	return c.Fallback(ctx, err)
}
