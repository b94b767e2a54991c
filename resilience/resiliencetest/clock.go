// Package resiliencetest provides a fake clock for tests of code that uses
// package resilience: open periods, back-off and timeouts then move only
// when the test says so, and nothing sleeps.
package resiliencetest

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Clock is a fake clock that implements resilience.Clock. Time moves only
// through Advance (or, for an automatic clock, through AfterFunc).
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	auto   bool
	timers []*timer
	seq    int
	added  chan struct{} // closed and replaced whenever a timer is added
}

type timer struct {
	at  time.Time
	seq int
	f   func()
}

// NewClock returns a fake clock reading start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, added: make(chan struct{})}
}

// NewAutoClock returns a fake clock on which every AfterFunc advances time
// to its deadline at once and runs its function: back-off sleeps return
// immediately and the clock shows the time they would have taken. Do not use
// it with timeouts, which would expire as soon as they are armed.
func NewAutoClock(start time.Time) *Clock {
	c := NewClock(start)
	c.auto = true
	return c
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f to run when the clock reaches Now()+d. f runs
// synchronously inside Advance (or inside AfterFunc on an automatic clock).
func (c *Clock) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	c.mu.Lock()
	if c.auto {
		c.now = c.now.Add(max(d, 0))
		c.mu.Unlock()
		f()
		return func() bool { return false }
	}
	c.seq++
	t := &timer{at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	close(c.added)
	c.added = make(chan struct{})
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.timers, t)
		if i < 0 {
			return false
		}
		c.timers = slices.Delete(c.timers, i, i+1)
		return true
	}
}

// Advance moves the clock forward by d, running every timer that falls due,
// in order of deadline, each with the clock set to its deadline.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		i := c.nextDue(end)
		if i < 0 {
			break
		}
		t := c.timers[i]
		c.timers = slices.Delete(c.timers, i, i+1)
		c.now = t.at
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

func (c *Clock) nextDue(end time.Time) int {
	best := -1
	for i, t := range c.timers {
		if t.at.After(end) {
			continue
		}
		if best < 0 || t.at.Before(c.timers[best].at) ||
			(t.at.Equal(c.timers[best].at) && t.seq < c.timers[best].seq) {
			best = i
		}
	}
	return best
}

// Timers returns the number of pending AfterFunc calls.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitTimers blocks until at least n AfterFunc calls are pending, so a test
// can let a goroutine reach its sleep before it advances the clock. It
// returns the context's error if ctx ends first.
func (c *Clock) WaitTimers(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		have, added := len(c.timers), c.added
		c.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-added:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
