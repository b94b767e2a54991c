package postgres

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/recado-dev/recado/eventstore/driver"
)

// parkLane holds the appends to streams whose rows another transaction holds
// locked (a unit of work, of this DB or another process), so that they hold
// up neither the other appends of their group nor the writers: a writer
// never waits more than groupLockWait for a row. One goroutine (run) commits
// each parked stream's appends once its row is free, trying again after a
// unit of work of this DB ends and otherwise every little while, one stream
// at a time and never for longer than groupLockWait, so it holds at most one
// connection of the pool and no busy stream waits behind another.
//
// While a stream has parked appends, later appends to it are parked behind
// them, and while a unit of work of this DB holds a stream's row, appends to
// it are parked without trying: either way they keep their order, and groups
// never meet the lock.
type parkLane struct {
	mu     sync.Mutex
	parked map[string][]*appendReq // by stream, in arrival order
	order  []string                // the parked streams, oldest first
	held   map[string]int          // streams whose rows units of work of this DB hold, how many
	closed bool                    // run has ended: nothing more is parked
	busy   atomic.Int32            // len(parked) + len(held): zero spares divert the lock
	wake   chan struct{}           // run tries again now
}

func (p *parkLane) init() {
	p.parked = map[string][]*appendReq{}
	p.held = map[string]int{}
	p.wake = make(chan struct{}, 1)
}

// divert parks r if its stream has parked appends or is held by a unit of
// work of this DB, and reports whether it did.
func (p *parkLane) divert(r *appendReq) bool {
	if p.busy.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.parked[r.r.Stream]; !ok && p.held[r.r.Stream] == 0 {
		return false
	}
	p.addLocked(r)
	return true
}

// add parks reqs, and wakes run.
func (p *parkLane) add(reqs ...*appendReq) {
	p.mu.Lock()
	for _, r := range reqs {
		p.addLocked(r)
	}
	p.mu.Unlock()
	p.poke()
}

func (p *parkLane) addLocked(r *appendReq) {
	if p.closed {
		failClosed(r)
		return
	}
	if !r.inFlight {
		r.state.Store(reqQueued) // its caller may give up while it waits
	}
	if _, ok := p.parked[r.r.Stream]; !ok {
		p.order = append(p.order, r.r.Stream)
	}
	p.parked[r.r.Stream] = append(p.parked[r.r.Stream], r)
	p.count()
}

func (p *parkLane) count() { p.busy.Store(int32(len(p.parked) + len(p.held))) }

func (p *parkLane) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// hold records streams whose rows a unit of work of this DB now holds.
func (p *parkLane) hold(streams ...string) {
	p.mu.Lock()
	for _, s := range streams {
		p.held[s]++
	}
	p.count()
	p.mu.Unlock()
}

// release undoes hold when the unit of work has ended, and wakes run.
func (p *parkLane) release(streams ...string) {
	if len(streams) == 0 {
		return
	}
	p.mu.Lock()
	for _, s := range streams {
		if p.held[s]--; p.held[s] <= 0 {
			delete(p.held, s)
		}
	}
	p.count()
	p.mu.Unlock()
	p.poke()
}

// take removes the appends of the first parked stream not held by a unit of
// work of this DB, among the first n streams in order, and returns those
// still wanted; ok is false when none is left to try.
func (p *parkLane) take(n int) (reqs []*appendReq, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, s := range p.order[:min(n, len(p.order))] {
		if p.held[s] > 0 {
			continue
		}
		p.order = append(p.order[:i:i], p.order[i+1:]...)
		for _, r := range p.parked[s] {
			if r.inFlight || r.state.CompareAndSwap(reqQueued, reqTaken) {
				reqs = append(reqs, r)
			}
		}
		delete(p.parked, s)
		p.count()
		return reqs, true
	}
	return nil, false
}

// waiting reports whether a parked stream is not held by a unit of work of
// this DB (so only time will tell when its row is free).
func (p *parkLane) waiting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for s := range p.parked {
		if p.held[s] == 0 {
			return true
		}
	}
	return false
}

// closeAll ends the lane: every parked append fails with ErrClosed (or
// ErrUnknownOutcome if a lost commit may have stored it), and so will any
// parked later.
func (p *parkLane) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, reqs := range p.parked {
		for _, r := range reqs {
			if r.inFlight || r.state.CompareAndSwap(reqQueued, reqTaken) {
				failClosed(r)
			}
		}
	}
	clear(p.parked)
	p.order = nil
	p.count()
}

func failClosed(r *appendReq) {
	err := errClosed()
	if r.inFlight {
		err = fmt.Errorf("%w: %w", driver.ErrUnknownOutcome, err)
	}
	r.done <- err
}

// parkRetry bounds the pause between two passes over parked streams that
// only time can free.
const parkRetry = 100 * time.Millisecond

// runPark commits the parked appends, stream by stream, until Close.
func (w *writer) runPark() {
	p := &w.park
	var buf batchBuf
	timer := time.NewTimer(parkRetry)
	defer timer.Stop()
	delay := time.Millisecond
	for {
		select {
		case <-p.wake:
			delay = time.Millisecond
		case <-timer.C:
			delay = min(2*delay, parkRetry)
		case <-w.stop:
			p.closeAll()
			return
		}
		// One pass: each stream parked now, once. A commit that meets the
		// lock again parks its appends again, behind the others.
		p.mu.Lock()
		n := len(p.order)
		p.mu.Unlock()
		for ; n > 0; n-- {
			reqs, ok := p.take(n)
			if !ok {
				break
			}
			if len(reqs) > 0 {
				w.commit(reqs, &buf)
			}
		}
		// A pass parks again what it found held, and wakes itself: let only
		// time or a unit of work's end start the next one.
		select {
		case <-p.wake:
		default:
		}
		if p.waiting() {
			timer.Reset(delay)
		}
	}
}
