package resilience

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// RetryConfig configures a Retry. The zero value retries up to 3 attempts
// in all with full-jitter exponential back-off from 100 ms up to 10 s.
type RetryConfig struct {
	// MaxAttempts counts the first call too. Default 3; 1 disables retry.
	MaxAttempts int
	// MaxElapsed, if set, stops retrying when the next attempt would start
	// more than MaxElapsed after the first. The context's deadline is
	// always honoured as well: no back-off sleeps past it.
	MaxElapsed time.Duration
	// Backoff is the delay schedule. Zero fields take the defaults:
	// Initial 100 ms, Max 10 s, Multiplier 2, Jitter 1 (full jitter).
	Backoff Backoff
	// MaxRetryAfter caps how long a callee's Retry-After hint (see
	// WithRetryAfter) may make a retry wait. Default: the back-off's Max.
	MaxRetryAfter time.Duration
	// Classify sorts errors into classes: ClassTransient and ClassNotReady
	// are retried after a back-off; the others stop the retries. Default
	// Classify.
	Classify func(error) Class
	// Budget, if set, caps retries to a ratio of calls (shared by every
	// Retry that holds it).
	Budget *RetryBudget
	// OnRetry, if set, is called before each back-off sleep with the number
	// of the attempt that failed, its error and the delay.
	OnRetry func(attempt int, err error, delay time.Duration)
}

// defaultBackoff holds the defaults of RetryConfig.Backoff, and of a
// Backoff used on its own.
var defaultBackoff = Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 1}

// Validate reports settings that cannot work.
func (c RetryConfig) Validate() error {
	switch {
	case c.MaxAttempts < 0:
		return errors.New("resilience: RetryConfig.MaxAttempts must be >= 1")
	case c.MaxElapsed < 0:
		return errors.New("resilience: RetryConfig.MaxElapsed must be >= 0")
	case c.MaxRetryAfter < 0:
		return errors.New("resilience: RetryConfig.MaxRetryAfter must be >= 0")
	}
	if err := c.Backoff.Validate(); err != nil {
		return errors.New("resilience: RetryConfig.Backoff: " + err.Error()[len("resilience: "):])
	}
	return nil
}

// Retry is a retry policy. Use it through a Pipeline, whose clock it runs
// on.
//
// The zero Retry is ready to use, with the defaults of a zero RetryConfig;
// NewRetry makes one from a validated config. Defaults are read where they
// are used, on the failure path, so both behave alike.
type Retry struct {
	cfg    RetryConfig
	random func() float64 // jitter source; nil: math/rand/v2 (tests set it)
}

// NewRetry returns a retry policy.
func NewRetry(cfg RetryConfig) (*Retry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Retry{cfg: cfg}, nil
}

// backoff returns the retry's schedule with its defaults filled in.
func (r *Retry) backoff() Backoff { return r.cfg.Backoff.withDefaults(defaultBackoff) }

// retries reports whether an attempt that failed with err, the attempt-th,
// may be followed by another.
func (r *Retry) retries(ctx context.Context, attempt int, err error) bool {
	classify, attempts := r.cfg.Classify, r.cfg.MaxAttempts
	if classify == nil {
		classify = Classify
	}
	if attempts == 0 {
		attempts = 3
	}
	c := classify(err)
	return (c == ClassTransient || c == ClassNotReady) && ctx.Err() == nil && attempt < attempts
}

// next decides what follows a failed attempt: the delay before the next
// one, or the error to give up with. notBefore, if set, is when the
// pipeline's breaker will admit a probe: a retry that would reach an open
// breaker gives up now rather than be rejected (or wait) there.
func (r *Retry) next(ctx context.Context, now time.Time, attempt int, start, notBefore time.Time, err error) (time.Duration, error) {
	if !r.retries(ctx, attempt, err) {
		return 0, err
	}
	backoff := r.backoff()
	d := backoff.delay(attempt, r.random)
	if hint, ok := RetryAfterHint(err); ok {
		limit := r.cfg.MaxRetryAfter
		if limit == 0 {
			limit = backoff.Max
		}
		d = max(d, min(hint, limit)) // never below the back-off, never past the cap
	}
	var open *OpenError
	if errors.As(err, &open) {
		switch {
		case open.State == StateForcedOpen:
			return 0, err // only an operator can end it: do not wait for that
		case open.State == StateOpen && open.Until.After(notBefore):
			notBefore = open.Until
		}
	}
	if now.Add(d).Before(notBefore) {
		return 0, err // fail fast: the breaker would reject the retry
	}
	if r.cfg.MaxElapsed > 0 && now.Add(d).Sub(start) > r.cfg.MaxElapsed {
		return 0, err
	}
	if dl, ok := ctx.Deadline(); ok && !now.Add(d).Before(dl) {
		return 0, err // the next attempt could not start in time
	}
	if r.cfg.Budget != nil && !r.cfg.Budget.withdraw() {
		return 0, &budgetError{err}
	}
	if r.cfg.OnRetry != nil {
		r.cfg.OnRetry(attempt, err, d)
	}
	return d, nil
}

// RetryBudget caps retries to a ratio of calls, so that when a callee is
// down, retries add at most that ratio to its load instead of multiplying
// it. Each call deposits Ratio of a token, each retry takes one token, and
// the bucket holds at most Burst tokens (it starts full, so a fresh client
// can retry a few times before it has made many calls). Tokens are counted
// in billionths, so a ratio as small as 1e-9 still refills.
//
// The zero RetryBudget is ready to use: ratio 0.1, burst 10.
type RetryBudget struct {
	once    sync.Once
	deposit int64 // nano-tokens per call
	ceiling int64 // nano-tokens
	tokens  atomic.Int64
}

// token is one retry, in the budget's unit.
const token = 1_000_000_000

// NewRetryBudget returns a budget allowing about ratio retries per call
// (1e-9 <= ratio <= 1; 0.1 is common) with a reserve of burst retries.
func NewRetryBudget(ratio float64, burst int) (*RetryBudget, error) {
	if !within(ratio, 1.0/token, 1) {
		return nil, errors.New("resilience: retry budget ratio must be in [1e-9, 1]")
	}
	if burst < 1 || burst > math.MaxInt64/token {
		return nil, errors.New("resilience: retry budget burst must be in [1, 9e9]")
	}
	b := &RetryBudget{deposit: int64(math.Round(ratio * token)), ceiling: int64(burst) * token}
	b.tokens.Store(b.ceiling)
	return b, nil
}

// init gives a zero budget its defaults, once.
func (b *RetryBudget) init() {
	b.once.Do(func() {
		if b.ceiling == 0 {
			b.deposit, b.ceiling = token/10, 10*token
			b.tokens.Store(b.ceiling)
		}
	})
}

// call credits the budget for one call. When the bucket is full it only
// reads, so a healthy client does not contend on the counter.
func (b *RetryBudget) call() {
	b.init()
	if b.tokens.Load() < b.ceiling {
		b.tokens.Add(b.deposit) // may overshoot the ceiling by a few deposits under races
	}
}

func (b *RetryBudget) withdraw() bool {
	b.init()
	for {
		t := b.tokens.Load()
		if t < token {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-token) {
			return true
		}
	}
}

// Tokens returns the retries the budget would allow now.
func (b *RetryBudget) Tokens() float64 {
	b.init()
	return float64(b.tokens.Load()) / token
}
