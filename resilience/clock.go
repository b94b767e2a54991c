package resilience

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the source of time for every policy. The zero value of each
// config uses the system clock; tests inject a fake (see package
// resiliencetest) so that open periods, back-off and timeouts are driven
// without sleeping.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc calls f, in its own goroutine or synchronously from the
	// clock's driver, once d has elapsed. stop cancels the call and reports
	// whether it did so before f ran.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

func clockOr(c Clock) Clock {
	if c == nil {
		return systemClock{}
	}
	return c
}

// sleep waits d on c, or until ctx is done, in which case it returns the
// context's cause.
func sleep(ctx context.Context, c Clock, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	done := make(chan struct{})
	stop := c.AfterFunc(d, func() { close(done) })
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		stop()
		return context.Cause(ctx)
	}
}

// deadlineCtx is a context that expires at a deadline read from a Clock.
//
// It is cheaper than context.WithTimeout on the path where the callee never
// waits on Done: the channel, the timer and the link to the parent are made
// only when someone first asks for Done (or derives a context from it).
// Until then Err compares the clock with the deadline. One allocation per
// timeout instead of four, and it honours a fake Clock.
type deadlineCtx struct {
	context.Context // the parent; Value is delegated to it

	clock    Clock
	deadline time.Time
	fired    atomic.Bool // our own deadline passed (not the parent's)

	mu       sync.Mutex
	inner    context.Context // made lazily by materialize
	cancel   context.CancelCauseFunc
	stop     func() bool
	released bool
}

func newDeadlineCtx(parent context.Context, c Clock, d time.Duration) *deadlineCtx {
	return &deadlineCtx{Context: parent, clock: c, deadline: c.Now().Add(d)}
}

func (c *deadlineCtx) Deadline() (time.Time, bool) {
	if pd, ok := c.Context.Deadline(); ok && pd.Before(c.deadline) {
		return pd, true
	}
	return c.deadline, true
}

func (c *deadlineCtx) Done() <-chan struct{} { return c.materialize().Done() }

func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	inner, released := c.inner, c.released
	c.mu.Unlock()
	if inner != nil {
		err := inner.Err()
		if err != nil && c.fired.Load() {
			return context.DeadlineExceeded
		}
		return err
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	if released {
		return context.Canceled
	}
	if !c.clock.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// AfterFunc lets contexts derived from c (context.WithCancel(c), ...) hook
// onto it without a goroutine: package context looks for this method.
func (c *deadlineCtx) AfterFunc(f func()) func() bool {
	return context.AfterFunc(c.materialize(), f)
}

func (c *deadlineCtx) materialize() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner != nil {
		return c.inner
	}
	c.inner, c.cancel = context.WithCancelCause(c.Context)
	if c.released {
		c.cancel(context.Canceled)
		return c.inner
	}
	d := c.deadline.Sub(c.clock.Now())
	if d <= 0 {
		c.expire()
		return c.inner
	}
	c.stop = c.clock.AfterFunc(d, c.expire)
	return c.inner
}

func (c *deadlineCtx) expire() {
	c.fired.Store(true)
	c.cancel(context.DeadlineExceeded)
}

// timedOut reports whether c's own deadline (not its parent's) has passed.
func (c *deadlineCtx) timedOut() bool {
	if c.fired.Load() {
		return true
	}
	return c.Context.Err() == nil && !c.clock.Now().Before(c.deadline)
}

// release ends c's life like the CancelFunc of context.WithTimeout: timers
// stop, and c reads as cancelled from now on.
func (c *deadlineCtx) release() {
	c.mu.Lock()
	c.released = true
	if c.cancel != nil {
		if c.stop != nil {
			c.stop()
		}
		c.cancel(context.Canceled)
	}
	c.mu.Unlock()
}
