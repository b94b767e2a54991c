package resilience

import (
	"errors"
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is an exponential schedule: the n-th delay (n from 1) is
// Initial·Multiplier^(n-1), capped at Max, then jittered: drawn uniformly
// from [d·(1-Jitter), d]. Jitter 1 is "full jitter" (AWS architecture blog),
// which spreads a crowd of retrying clients best; a jitter below 1 keeps
// a floor under the delay. Jitter never pushes a delay above Max.
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration // 0: no cap
	Multiplier float64       // 0: 2
	Jitter     float64       // in [0, 1]
}

// Validate reports a schedule that cannot work.
func (b Backoff) Validate() error {
	switch {
	case b.Initial <= 0:
		return errors.New("resilience: Backoff.Initial must be > 0")
	case b.Max < 0:
		return errors.New("resilience: Backoff.Max must be >= 0")
	case b.Multiplier != 0 && !within(b.Multiplier, 1, math.MaxFloat64):
		return errors.New("resilience: Backoff.Multiplier must be >= 1 and finite")
	case !within(b.Jitter, 0, 1):
		return errors.New("resilience: Backoff.Jitter must be in [0, 1]")
	}
	return nil
}

// Delay returns the n-th delay of the schedule, n >= 1.
func (b Backoff) Delay(n int) time.Duration {
	return b.delay(n, nil)
}

func (b Backoff) delay(n int, random func() float64) time.Duration {
	m := b.Multiplier
	if m == 0 {
		m = 2
	}
	limit := float64(b.Max)
	if b.Max == 0 {
		limit = math.MaxInt64
	}
	d := math.Min(float64(b.Initial)*math.Pow(m, float64(max(n, 1)-1)), limit)
	if b.Jitter > 0 {
		if random == nil {
			random = rand.Float64
		}
		d -= d * b.Jitter * random()
	}
	if d >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(d)
}
