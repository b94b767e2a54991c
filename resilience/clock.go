package resilience

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Clock is the source of time for every policy. The zero value of each
// config uses the system clock; tests inject a fake (see package
// resiliencetest) so that open periods, back-off and timeouts are driven
// without sleeping. A Pipeline or a Transport runs on one clock (see
// Pipeline.Clock and TransportConfig.Clock). Clocks are compared with ==,
// so make a Clock a pointer (or a comparable value).
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
// It is cheaper than context.WithTimeout. While the callee never asks for
// Done, nothing is armed: Err compares the clock with the deadline, and the
// context costs one allocation. The first Done makes the channel and arms
// the timer (with the system clock, a bare time.AfterFunc, no link to the
// parent unless the parent can be cancelled): four allocations in all for
// a callee that waits on its context, as real I/O does. And it honours a
// fake Clock.
//
// Contexts derived from it (context.WithCancel(c), context.AfterFunc(c,
// f)) hook onto it through its AfterFunc method, without a goroutine.
type deadlineCtx struct {
	parent   context.Context // Value is delegated to it
	clock    Clock
	deadline time.Time

	mu       sync.Mutex
	fired    bool          // it ended by its own deadline
	watching bool          // the timer and the link to the parent are armed
	err      error         // set once, when it ends
	done     chan struct{} // made by the first Done; closed when it ends
	timer    *time.Timer   // the deadline, on the system clock,
	stop     func() bool   // or on another clock
	unlink   func() bool   // stops watching the parent
	afters   *[]*func()    // AfterFunc callbacks still to run (rare: kept out of line)
}

func newDeadlineCtx(parent context.Context, c Clock, d time.Duration) *deadlineCtx {
	return &deadlineCtx{parent: parent, clock: c, deadline: c.Now().Add(d)}
}

func (c *deadlineCtx) Deadline() (time.Time, bool) {
	if pd, ok := c.parent.Deadline(); ok && pd.Before(c.deadline) {
		return pd, true
	}
	return c.deadline, true
}

func (c *deadlineCtx) Value(key any) any { return c.parent.Value(key) }

func (c *deadlineCtx) Done() <-chan struct{} {
	c.mu.Lock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	done := c.done
	c.watchLocked() // unlocks
	return done
}

func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	// Nothing armed has fired yet; look for ourselves, and end the context
	// if it is over, so that Done and Err agree.
	if err := c.parent.Err(); err != nil {
		c.end(err, false)
		return c.Err()
	}
	if !c.clock.Now().Before(c.deadline) {
		c.end(context.DeadlineExceeded, true)
		return c.Err()
	}
	return nil
}

// AfterFunc runs f once c ends (at once, if it has), unless stop is called
// first. Package context looks for this method, so contexts derived from c
// need no goroutine to follow it.
//
// f never runs inside AfterFunc itself: package context calls it holding
// the derived context's lock, which f takes.
func (c *deadlineCtx) AfterFunc(f func()) (stop func() bool) {
	c.watch()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	entry := &f
	if c.afters == nil {
		c.afters = new([]*func())
	}
	*c.afters = append(*c.afters, entry)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.afters == nil {
			return false
		}
		i := slices.Index(*c.afters, entry)
		if i < 0 {
			return false
		}
		*c.afters = slices.Delete(*c.afters, i, i+1)
		return true
	}
}

// watch arms the deadline's timer and the link to the parent, once.
func (c *deadlineCtx) watch() {
	c.mu.Lock()
	c.watchLocked()
}

// watchLocked is watch with c.mu held; it unlocks.
func (c *deadlineCtx) watchLocked() {
	if c.watching || c.err != nil {
		c.mu.Unlock()
		return
	}
	c.watching = true
	wake := c.wake // one function value for the timer and the parent: one allocation
	if _, ok := c.clock.(systemClock); ok {
		// The system clock never runs a timer's function inside AfterFunc,
		// so the common case arms in one critical section.
		wait := time.Until(c.deadline) // reads only the monotonic clock
		if wait > 0 {
			c.timer = time.AfterFunc(wait, wake)
			c.linkLocked(wake)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.end(context.DeadlineExceeded, true)
		return
	}
	// Another clock (a fake one) may run the function at once: arm it
	// without the lock.
	c.mu.Unlock()
	wait := c.deadline.Sub(c.clock.Now())
	if wait <= 0 {
		c.end(context.DeadlineExceeded, true)
		return
	}
	stop := c.clock.AfterFunc(wait, wake)
	c.mu.Lock()
	if c.err != nil { // it ended meanwhile
		c.mu.Unlock()
		stop()
		return
	}
	c.stop = stop
	c.linkLocked(wake)
	c.mu.Unlock()
}

// linkLocked makes c end when its parent does, if the parent can end. A
// parent that has ended already ends c from another goroutine.
func (c *deadlineCtx) linkLocked(wake func()) {
	if c.parent.Done() != nil {
		c.unlink = context.AfterFunc(c.parent, wake)
	}
}

// wake is called by the deadline's timer and when the parent ends, and
// ends c for whichever came first.
func (c *deadlineCtx) wake() {
	if err := c.parent.Err(); err != nil {
		c.end(err, false)
		return
	}
	c.end(context.DeadlineExceeded, true)
}

// end ends c with err, once: Done closes, timers stop, AfterFunc callbacks
// run.
func (c *deadlineCtx) end(err error, fired bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.endLocked(err, fired)
	timer, stop, unlink, afters := c.timer, c.stop, c.unlink, c.afters
	c.timer, c.stop, c.unlink, c.afters = nil, nil, nil, nil
	c.mu.Unlock()
	disarm(timer, stop, unlink)
	if afters != nil {
		for _, f := range *afters {
			(*f)()
		}
	}
}

func (c *deadlineCtx) endLocked(err error, fired bool) {
	c.err, c.fired = err, fired
	if c.done != nil {
		close(c.done)
	}
}

// disarm stops a deadline's timer and its link to the parent.
func disarm(timer *time.Timer, stop, unlink func() bool) {
	if timer != nil {
		timer.Stop()
	}
	if stop != nil {
		stop()
	}
	if unlink != nil {
		unlink()
	}
}

// timedOut reports whether c's own deadline (not its parent's) has passed.
func (c *deadlineCtx) timedOut() bool {
	c.mu.Lock()
	err, fired := c.err, c.fired
	c.mu.Unlock()
	if err != nil {
		return fired
	}
	return c.parent.Err() == nil && !c.clock.Now().Before(c.deadline)
}

// release ends c's life like the CancelFunc of context.WithTimeout: timers
// stop, and c reads as cancelled from now on (if it has not ended yet).
func (c *deadlineCtx) release() { c.end(context.Canceled, false) }
