package resilience

import (
	"errors"
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is an exponential schedule: the n-th delay (n from 1) is
// Initial·Multiplier^(n-1), capped at Max, then jittered downward: drawn
// uniformly from [d·(1-Jitter), d]. Jitter 1 is "full jitter" (AWS
// architecture blog), which spreads a crowd of retrying clients best; a
// jitter below 1 keeps a floor under the delay. Jitter never pushes a delay
// above Max, and retries and breakers jitter alike: both use this type.
//
// A zero field takes its default, so setting some fields keeps the others.
// The defaults depend on where the schedule is used:
//
//	                     Initial  Max     Multiplier  Jitter
//	RetryConfig.Backoff  100 ms   10 s    2           1 (full)
//	BreakerConfig.       5 s      5 min   2           0.2
//	  OpenPeriod
//
// Delay on a Backoff of its own uses the retry defaults. A Max left zero is
// raised to Initial when Initial is larger. Jitter NoJitter turns jitter off;
// Multiplier 1 makes the delay constant.
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64 // >= 1
	Jitter     float64 // in [0, 1], or NoJitter
}

// NoJitter is the Backoff.Jitter that turns jitter off (0 means "the
// default").
const NoJitter = -1.0

// Validate reports a schedule that cannot work. Zero fields are valid: they
// take their defaults.
func (b Backoff) Validate() error {
	switch {
	case b.Initial < 0:
		return errors.New("resilience: Backoff.Initial must be >= 0")
	case b.Max < 0:
		return errors.New("resilience: Backoff.Max must be >= 0")
	case b.Max > 0 && b.Max < b.Initial:
		return errors.New("resilience: Backoff.Max must be >= Initial")
	case b.Multiplier != 0 && !within(b.Multiplier, 1, math.MaxFloat64):
		return errors.New("resilience: Backoff.Multiplier must be >= 1 and finite")
	case b.Jitter != NoJitter && !within(b.Jitter, 0, 1):
		return errors.New("resilience: Backoff.Jitter must be in [0, 1], or NoJitter")
	}
	return nil
}

// withDefaults returns b with its zero fields taken from def.
func (b Backoff) withDefaults(def Backoff) Backoff {
	if b.Initial == 0 {
		b.Initial = def.Initial
	}
	if b.Max == 0 {
		b.Max = max(def.Max, b.Initial)
	}
	if b.Multiplier == 0 {
		b.Multiplier = def.Multiplier
	}
	if b.Jitter == 0 {
		b.Jitter = def.Jitter
	}
	return b
}

// Delay returns the n-th delay of the schedule, n >= 1.
func (b Backoff) Delay(n int) time.Duration {
	return b.withDefaults(defaultBackoff).delay(n, nil)
}

// delay computes the n-th delay of a schedule whose defaults are filled in,
// drawing jitter from random (nil: math/rand/v2).
func (b Backoff) delay(n int, random func() float64) time.Duration {
	limit := float64(b.Max)
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(max(n, 1)-1))
	if !(d <= limit) { // past the cap, or NaN from an unvalidated schedule
		d = limit
	}
	if b.Jitter > 0 {
		if random == nil {
			random = rand.Float64
		}
		d -= d * b.Jitter * random()
	}
	if d >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(max(d, 0))
}
