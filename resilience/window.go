package resilience

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome bits kept per call in a window.
const (
	bitFailure uint32 = 1 << iota
	bitSlow
)

// counts is what a window reports when a call may have tripped the breaker.
type counts struct{ calls, failures, slow int }

// countWindow holds the outcomes of the last n calls in a ring, without a
// lock: a call takes the next slot with one atomic add and swaps its outcome
// in. Failure and slow totals change only when a slot's outcome changes.
// While the ring is full of successes, a success changes nothing and writes
// nothing: a healthy breaker's hot path only reads shared memory, so it
// scales across cores.
type countWindow struct {
	n     uint64
	magic uint64 // for fastmod: ⌈2^64/n⌉
	slots []atomic.Uint32

	// The counters are written by calls that record something: keep them
	// off the cache line of the read-only fields above.
	_        [64]byte
	head     atomic.Uint64 // calls recorded so far
	failures atomic.Int64
	slow     atomic.Int64
	_        [40]byte
}

func newCountWindow(n int) *countWindow {
	return &countWindow{
		n:     uint64(n),
		magic: ^uint64(0)/uint64(n) + 1,
		slots: make([]atomic.Uint32, n),
	}
}

// slot maps a call number to its slot: i mod n with two multiplications
// instead of a division (Lemire, "Faster remainder by direct computation").
// Only the low 32 bits of i are used; at the wrap, one slot is reused early.
func (w *countWindow) slot(i uint64) *atomic.Uint32 {
	hi, _ := bits.Mul64(w.magic*uint64(uint32(i)), w.n)
	return &w.slots[hi]
}

// record adds one outcome and reports whether the totals must be checked
// (a failure or slow call was recorded).
func (w *countWindow) record(outcome uint32) bool {
	if outcome == 0 && w.failures.Load() == 0 && w.slow.Load() == 0 && w.head.Load() >= w.n {
		return false // the ring is all successes and stays so
	}
	s := w.slot(w.head.Add(1) - 1)
	if outcome == 0 && s.Load() == 0 {
		return false // the common case: success replaces success
	}
	old := s.Swap(outcome)
	if d := int64(outcome&bitFailure) - int64(old&bitFailure); d != 0 {
		w.failures.Add(d)
	}
	if d := int64(outcome&bitSlow>>1) - int64(old&bitSlow>>1); d != 0 {
		w.slow.Add(d)
	}
	return outcome != 0
}

func (w *countWindow) counts() counts {
	return counts{
		calls:    int(min(w.head.Load(), w.n)),
		failures: int(max(w.failures.Load(), 0)),
		slow:     int(max(w.slow.Load(), 0)),
	}
}

// timeWindow holds the outcomes of the calls of the last period, in ten
// buckets of period/10. It reads the clock on every call and takes a mutex:
// use it when call rates vary too much for a count window to mean anything.
//
// Time only moves forward here: a clock that steps back (a wall clock set
// back, a fake one moved back) leaves the window in its latest bucket until
// the clock catches up.
type timeWindow struct {
	bucket time.Duration
	origin time.Time

	mu      sync.Mutex
	latest  int64 // the latest bucket epoch seen
	buckets [timeBuckets]timeBucket
}

const timeBuckets = 10

type timeBucket struct {
	epoch                 int64
	calls, failures, slow int
}

func newTimeWindow(period time.Duration, now time.Time) *timeWindow {
	return &timeWindow{bucket: max(period/timeBuckets, 1), origin: now}
}

// epochLocked returns the bucket epoch of now, never earlier than one
// already seen.
func (w *timeWindow) epochLocked(now time.Time) int64 {
	w.latest = max(w.latest, int64(now.Sub(w.origin)/w.bucket))
	return w.latest
}

func (w *timeWindow) record(now time.Time, outcome uint32) counts {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.epochLocked(now)
	b := &w.buckets[e%timeBuckets]
	if b.epoch != e {
		*b = timeBucket{epoch: e}
	}
	b.calls++
	if outcome&bitFailure != 0 {
		b.failures++
	}
	if outcome&bitSlow != 0 {
		b.slow++
	}
	return w.sumLocked(e)
}

func (w *timeWindow) counts(now time.Time) counts {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sumLocked(w.epochLocked(now))
}

func (w *timeWindow) sumLocked(e int64) counts {
	var c counts
	for i := range w.buckets {
		b := &w.buckets[i]
		if b.epoch > e-timeBuckets && b.epoch <= e {
			c.calls += b.calls
			c.failures += b.failures
			c.slow += b.slow
		}
	}
	return c
}
