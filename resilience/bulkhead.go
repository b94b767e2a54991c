package resilience

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// BulkheadConfig configures a Bulkhead. The zero value admits 100
// concurrent calls and queues none.
type BulkheadConfig struct {
	Name string
	// MaxConcurrent calls in flight. Default 100.
	MaxConcurrent int
	// MaxQueue callers may wait for a slot; more are rejected at once.
	// Default 0: a full bulkhead rejects. Keep it short: a long queue is
	// only latency the caller pays before failing anyway.
	MaxQueue int
	// MaxWait bounds a queued caller's wait (besides its context).
	// 0: until the context is done.
	MaxWait time.Duration
	// Clock defaults to the system clock.
	Clock Clock
	// OnReject, if set, is called for each rejected caller.
	OnReject func(name string)
}

// Validate reports settings that cannot work.
func (c BulkheadConfig) Validate() error {
	switch {
	case c.MaxConcurrent < 0:
		return errors.New("resilience: BulkheadConfig.MaxConcurrent must be >= 1")
	case c.MaxQueue < 0:
		return errors.New("resilience: BulkheadConfig.MaxQueue must be >= 0")
	case c.MaxWait < 0:
		return errors.New("resilience: BulkheadConfig.MaxWait must be >= 0")
	}
	return nil
}

// Bulkhead limits how many calls run at once, so that one slow callee
// cannot take every goroutine, connection or memory of its caller.
//
// The zero Bulkhead is ready to use, with the defaults of a zero
// BulkheadConfig; NewBulkhead makes one from a validated config.
type Bulkhead struct {
	once    sync.Once
	cfg     BulkheadConfig // read only after init
	slots   chan struct{}
	waiting atomic.Int64
}

// NewBulkhead returns a bulkhead.
func NewBulkhead(cfg BulkheadConfig) (*Bulkhead, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bulkhead{cfg: cfg}
	b.init()
	return b, nil
}

// init fills in the defaults and makes the slots, once: for NewBulkhead,
// and for a zero Bulkhead on its first use.
func (b *Bulkhead) init() {
	b.once.Do(func() {
		if b.cfg.MaxConcurrent == 0 {
			b.cfg.MaxConcurrent = 100
		}
		b.cfg.Clock = clockOr(b.cfg.Clock)
		b.slots = make(chan struct{}, b.cfg.MaxConcurrent)
	})
}

// clock returns the bulkhead's clock.
func (b *Bulkhead) clock() Clock {
	b.init()
	return b.cfg.Clock
}

// Acquire takes a slot, waiting in the queue if there is room there. It
// returns an error that Is ErrBulkheadFull when rejected, or the context's
// cause if it ends first. Every nil return must be paired with Release.
func (b *Bulkhead) Acquire(ctx context.Context) error {
	b.init()
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	if b.cfg.MaxQueue == 0 {
		return b.reject()
	}
	if b.waiting.Add(1) > int64(b.cfg.MaxQueue) {
		b.waiting.Add(-1)
		return b.reject()
	}
	defer b.waiting.Add(-1)
	var expired <-chan struct{}
	if b.cfg.MaxWait > 0 {
		ch := make(chan struct{})
		stop := b.cfg.Clock.AfterFunc(b.cfg.MaxWait, func() { close(ch) })
		defer stop()
		expired = ch
	}
	select {
	case b.slots <- struct{}{}:
		return nil
	case <-expired:
		return b.reject()
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Release frees a slot taken by Acquire. Release without a slot taken is a
// bug in the caller; it does nothing rather than block.
func (b *Bulkhead) Release() {
	b.init()
	select {
	case <-b.slots:
	default:
	}
}

// InFlight returns the number of slots taken.
func (b *Bulkhead) InFlight() int {
	b.init()
	return len(b.slots)
}

// Waiting returns the number of queued callers.
func (b *Bulkhead) Waiting() int { return int(b.waiting.Load()) }

func (b *Bulkhead) reject() error {
	if b.cfg.OnReject != nil {
		b.cfg.OnReject(b.cfg.Name)
	}
	return ErrBulkheadFull
}
