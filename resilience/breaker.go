package resilience

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// State is a breaker's state.
type State int32

const (
	StateClosed   State = iota // calls flow; outcomes are counted
	StateOpen                  // calls are rejected with an *OpenError
	StateHalfOpen              // a few probes flow; the rest are rejected

	// StateForcedOpen: an operator stopped all calls (ForceOpen) until
	// Release or ForceClosed; no timer ends it.
	StateForcedOpen
	// StateForcedClosed: an operator let all calls through (ForceClosed),
	// counting nothing, until Release or ForceOpen.
	StateForcedClosed
)

func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateOpen:
		return "open"
	case StateHalfOpen:
		return "half-open"
	case StateForcedOpen:
		return "forced-open"
	case StateForcedClosed:
		return "forced-closed"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// BreakerConfig configures a Breaker. The zero value is a usable breaker:
// a window of the last 100 calls that trips at a 50% failure rate once it
// holds 20 calls, one probe when half-open (given up on after 1 min), and
// an open period of 5 s that doubles on each consecutive re-open up to
// 5 min, each period jittered down by up to 20%.
type BreakerConfig struct {
	// Name identifies the breaker in errors and hooks (the Transport uses
	// the host).
	Name string

	// WindowSize is the number of most recent calls the failure rate is
	// computed over (a count window). Default 100.
	WindowSize int
	// WindowDuration, if set, replaces the count window with a time window:
	// the calls of the last WindowDuration, in ten buckets. A time window
	// reads the clock on every call.
	WindowDuration time.Duration
	// MinCalls is the number of calls the window must hold before the
	// breaker may trip. Default 20 (capped at WindowSize).
	MinCalls int
	// FailureRate in (0, 1] trips the breaker when reached. Default 0.5.
	FailureRate float64

	// SlowCallDuration, if set, makes a call that took at least this long
	// count as slow, whatever its outcome; SlowCallRate of slow calls trips
	// the breaker. Tracking slow calls reads the clock twice per call.
	SlowCallDuration time.Duration
	// SlowCallRate in (0, 1]. Default 1 (every call in the window is slow).
	SlowCallRate float64

	// HalfOpenProbes is how many calls a half-open breaker lets through.
	// Callers beyond that are rejected, not queued. The breaker closes when
	// all of them succeed and re-opens at the first failure (or slow probe).
	// Default 1.
	HalfOpenProbes int
	// HalfOpenMaxWait bounds how long a half-open breaker waits for its
	// probes: past it, the next call finds the probes failed (they hang, or
	// a permit was never reported) and the breaker opens again, for longer.
	// Default 1 min.
	HalfOpenMaxWait time.Duration
	// OpenPeriod is the schedule of open periods: the n-th consecutive
	// time the breaker opens it stays open OpenPeriod's n-th delay (n goes
	// back to 0 when it closes). Zero fields take the defaults: Initial
	// 5 s, Max 5 min, Multiplier 2, Jitter 0.2 (a period is drawn from
	// [0.8·d, d], so a fleet of breakers does not probe in step).
	OpenPeriod Backoff
	// MaxRetryAfter caps how far a callee's Retry-After hint (see
	// WithRetryAfter) may extend an open period. Default 5 min.
	MaxRetryAfter time.Duration

	// Classify maps a non-nil error to its Class: ClassTransient and
	// ClassPermanent count as failures, ClassSuccess and ClassNotReady as
	// successes, ClassIgnored not at all. nil is always a success. Default
	// Classify.
	Classify func(error) Class
	// Clock defaults to the system clock.
	Clock Clock

	// OnStateChange, if set, is called after each transition, in the
	// order of the transitions, once the new state is in force (its timer
	// armed): from the goroutine that made the change, or from one still
	// reporting an earlier change when it was made. It may call the
	// breaker; it should not block, since the goroutine running it waits.
	// A panic in it goes on up that goroutine (a timer's goroutine, for
	// open→half-open) and leaves the breaker's state as it was.
	OnStateChange func(name string, from, to State)
	// OnReject, if set, is called for each call the breaker rejects.
	OnReject func(name string, state State)
}

// defaultOpenPeriod holds the defaults of BreakerConfig.OpenPeriod.
var defaultOpenPeriod = Backoff{Initial: 5 * time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2}

func (c *BreakerConfig) setDefaults() {
	if c.WindowSize == 0 {
		c.WindowSize = 100
	}
	if c.MinCalls == 0 {
		c.MinCalls = min(20, c.WindowSize)
	}
	if c.FailureRate == 0 {
		c.FailureRate = 0.5
	}
	if c.SlowCallRate == 0 {
		c.SlowCallRate = 1
	}
	if c.HalfOpenProbes == 0 {
		c.HalfOpenProbes = 1
	}
	if c.HalfOpenMaxWait == 0 {
		c.HalfOpenMaxWait = time.Minute
	}
	c.OpenPeriod = c.OpenPeriod.withDefaults(defaultOpenPeriod)
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = 5 * time.Minute
	}
	if c.Classify == nil {
		c.Classify = Classify
	}
	c.Clock = clockOr(c.Clock)
}

// Validate reports settings that cannot work. Zero fields are valid: they
// take their defaults.
func (c BreakerConfig) Validate() error {
	switch {
	case c.WindowSize < 0 || c.WindowSize > 1<<20:
		return errors.New("resilience: BreakerConfig.WindowSize must be in [1, 2^20]")
	case c.WindowDuration < 0:
		return errors.New("resilience: BreakerConfig.WindowDuration must be >= 0")
	case c.MinCalls < 0:
		return errors.New("resilience: BreakerConfig.MinCalls must be >= 0")
	case c.WindowDuration == 0 && c.WindowSize > 0 && c.MinCalls > c.WindowSize:
		return errors.New("resilience: BreakerConfig.MinCalls must not exceed WindowSize")
	case !within(c.FailureRate, 0, 1):
		return errors.New("resilience: BreakerConfig.FailureRate must be in (0, 1]")
	case c.SlowCallDuration < 0:
		return errors.New("resilience: BreakerConfig.SlowCallDuration must be >= 0")
	case !within(c.SlowCallRate, 0, 1):
		return errors.New("resilience: BreakerConfig.SlowCallRate must be in (0, 1]")
	case c.HalfOpenProbes < 0:
		return errors.New("resilience: BreakerConfig.HalfOpenProbes must be >= 1")
	case c.HalfOpenMaxWait < 0:
		return errors.New("resilience: BreakerConfig.HalfOpenMaxWait must be >= 0")
	case c.MaxRetryAfter < 0:
		return errors.New("resilience: BreakerConfig.MaxRetryAfter must be >= 0")
	}
	if err := c.OpenPeriod.Validate(); err != nil {
		return errors.New("resilience: BreakerConfig.OpenPeriod: " + err.Error()[len("resilience: "):])
	}
	return nil
}

// within reports whether lo <= x <= hi; false for NaN, which every
// comparison would otherwise let through.
func within(x, lo, hi float64) bool { return x >= lo && x <= hi }

// Breaker is a circuit breaker. It is safe for concurrent use; its state
// lives in one atomic pointer to an immutable-per-period record, so the
// closed path takes no lock.
//
// The zero Breaker is ready to use, with the defaults of a zero
// BreakerConfig; NewBreaker makes one from a validated config.
type Breaker struct {
	cfg   BreakerConfig // read only after load has returned
	once  sync.Once
	phase atomic.Pointer[phase]

	// mu orders transitions and their hooks; calls never take it unless
	// they change the state.
	mu         sync.Mutex
	changes    []stateChange // made, not yet reported to OnStateChange
	delivering bool          // a goroutine is reporting changes
}

type stateChange struct{ from, to State }

// phase is one period of a breaker's life: one closed period with its
// window, one open period with its rejection error, one half-open period
// with its probe counters, or one forced period. A transition swaps in a new phase; outcomes of
// calls admitted in an earlier phase land on the old one and are dropped.
type phase struct {
	state State
	opens int // consecutive opens, 0 when closed

	cw *countWindow
	tw *timeWindow

	until  time.Time // open: when half-open begins; half-open: when it stops waiting for probes
	reject *OpenError

	admitted atomic.Int32 // half-open probes let through
	passed   atomic.Int32 // half-open probes that succeeded
}

// NewBreaker returns a closed breaker.
func NewBreaker(cfg BreakerConfig) (*Breaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Breaker{cfg: cfg}
	b.init()
	return b, nil
}

// load returns the current phase, setting the breaker up on first use.
func (b *Breaker) load() *phase {
	if p := b.phase.Load(); p != nil {
		return p
	}
	return b.init()
}

// init fills in the config's defaults and starts closed, once: for
// NewBreaker, and for a zero Breaker on its first use.
func (b *Breaker) init() *phase {
	b.once.Do(func() {
		b.cfg.setDefaults()
		b.phase.Store(b.newClosed())
	})
	return b.phase.Load()
}

func (b *Breaker) newClosed() *phase {
	p := &phase{state: StateClosed}
	if b.cfg.WindowDuration > 0 {
		p.tw = newTimeWindow(b.cfg.WindowDuration, b.cfg.Clock.Now())
	} else {
		p.cw = newCountWindow(b.cfg.WindowSize)
	}
	return p
}

// clock returns the breaker's clock.
func (b *Breaker) clock() Clock {
	b.load()
	return b.cfg.Clock
}

// Name returns the breaker's name.
func (b *Breaker) Name() string {
	b.load()
	return b.cfg.Name
}

// State returns the current state.
func (b *Breaker) State() State { return b.load().state }

// Permit is a breaker's leave to make one call. Report the call's error
// with Done; Execute does both.
type Permit struct {
	b     *Breaker
	p     *phase
	start time.Time    // set only when slow calls are tracked, and for probes
	probe *atomic.Bool // half-open: set by the first report, shared by copies
}

// Allow asks for leave to make a call. It returns an error that Is ErrOpen
// (an *OpenError) when the breaker is open or forced open, or half-open
// with all its probes taken. Report the call with Done on the Permit; a
// forced-closed breaker gives a Permit that counts nothing.
func (b *Breaker) Allow() (Permit, error) {
	p := b.load()
	switch p.state {
	case StateClosed:
		if b.cfg.SlowCallDuration > 0 {
			return Permit{b: b, p: p, start: b.cfg.Clock.Now()}, nil
		}
		return Permit{b: b, p: p}, nil
	case StateForcedClosed:
		return Permit{}, nil // nothing to count
	case StateHalfOpen:
		for {
			n := p.admitted.Load()
			if int(n) >= b.cfg.HalfOpenProbes {
				if !b.cfg.Clock.Now().Before(p.until) {
					// The probes have had their time: count them failed.
					b.open(p, nil)
					return b.Allow()
				}
				break
			}
			if p.admitted.CompareAndSwap(n, n+1) {
				// A probe is rare: a token of its own makes sure that even
				// copies of its permit report it once.
				return Permit{b: b, p: p, start: b.cfg.Clock.Now(), probe: new(atomic.Bool)}, nil
			}
		}
	}
	if b.cfg.OnReject != nil {
		b.cfg.OnReject(b.cfg.Name, p.state)
	}
	return Permit{}, p.reject
}

// Execute calls fn if the breaker admits a call, and reports fn's error as
// its outcome. It returns the breaker's rejection (an *OpenError, Is
// ErrOpen) without calling fn, or fn's error. If fn panics, the call counts
// as a failure (a half-open probe's slot is released) and the panic goes on
// up. Execute is Allow and Done with nothing to forget; it allocates
// nothing.
func (b *Breaker) Execute(fn func() error) error {
	pm, err := b.Allow()
	if err != nil {
		return err
	}
	returned := false
	defer func() {
		if !returned {
			pm.failed()
		}
	}()
	err = fn()
	returned = true
	pm.Done(err)
	return err
}

// Done reports the outcome of the permitted call: err as the callee
// returned it. Only the first Done on a Permit counts; later ones, and Done
// on a zero Permit, do nothing.
//
// If the classifier panics, the call counts as a failure (and a probe's
// slot is released) before the panic goes on up.
func (pm *Permit) Done(err error) {
	p := pm.take()
	if p == nil {
		return
	}
	if err == nil {
		pm.b.record(p, pm.start, 0, nil)
		return
	}
	classified := false
	defer func() {
		if !classified {
			pm.b.record(p, pm.start, bitFailure, nil)
		}
	}()
	c := pm.b.cfg.Classify(err)
	classified = true
	switch c {
	case ClassIgnored:
		if p.state == StateHalfOpen {
			p.admitted.Add(-1) // give the probe slot back
		}
	case ClassTransient, ClassPermanent:
		pm.b.record(p, pm.start, bitFailure, err)
	default:
		pm.b.record(p, pm.start, 0, err)
	}
}

// failed reports a call that ended without returning (a panic, or
// runtime.Goexit) as a failure.
func (pm *Permit) failed() {
	if p := pm.take(); p != nil {
		pm.b.record(p, pm.start, bitFailure, nil)
	}
}

// take returns the phase to report to, once: nil if this permit (or, for a
// probe, a copy of it) has reported already.
func (pm *Permit) take() *phase {
	p := pm.p
	pm.p = nil
	if p == nil || (pm.probe != nil && !pm.probe.CompareAndSwap(false, true)) {
		return nil
	}
	return p
}

// record counts one outcome in phase p: bits is bitFailure or 0, cause the
// call's error (for its Retry-After hint).
func (b *Breaker) record(p *phase, start time.Time, bits uint32, cause error) {
	if b.cfg.SlowCallDuration > 0 && b.cfg.Clock.Now().Sub(start) >= b.cfg.SlowCallDuration {
		bits |= bitSlow
	}
	switch p.state {
	case StateClosed:
		var n counts
		if p.cw != nil {
			if !p.cw.record(bits) {
				return
			}
			n = p.cw.counts()
		} else {
			n = p.tw.record(b.cfg.Clock.Now(), bits)
			if bits == 0 {
				return
			}
		}
		if b.shouldTrip(n) {
			b.open(p, cause)
		}
	case StateHalfOpen:
		if bits != 0 {
			b.open(p, cause)
		} else if int(p.passed.Add(1)) >= b.cfg.HalfOpenProbes {
			b.transition(p, b.newClosed())
		}
	}
}

func (b *Breaker) shouldTrip(c counts) bool {
	if c.calls == 0 || c.calls < b.cfg.MinCalls {
		return false
	}
	n := float64(c.calls)
	return float64(c.failures) >= b.cfg.FailureRate*n ||
		(b.cfg.SlowCallDuration > 0 && float64(c.slow) >= b.cfg.SlowCallRate*n)
}

// open moves from p (closed or half-open) to a new open period, whose
// length grows with the number of consecutive opens and may be extended by
// the failing call's Retry-After hint.
func (b *Breaker) open(from *phase, cause error) {
	opens := from.opens + 1
	d := b.cfg.OpenPeriod.delay(opens, nil)
	if hint, ok := RetryAfterHint(cause); ok {
		d = max(d, min(hint, b.cfg.MaxRetryAfter)) // a hint extends, never shortens
	}
	until := b.cfg.Clock.Now().Add(d)
	next := &phase{state: StateOpen, opens: opens, until: until,
		reject: &OpenError{Name: b.cfg.Name, State: StateOpen, Until: until}}
	if !b.swap(from, next) {
		return
	}
	// The timer is armed before any hook runs, so a hook that panics
	// cannot leave the breaker open for good.
	b.cfg.Clock.AfterFunc(d, func() { b.transition(next, b.newHalfOpen(opens)) })
	b.report()
}

// newHalfOpen returns a half-open phase that waits for its probes until
// HalfOpenMaxWait from now.
func (b *Breaker) newHalfOpen(opens int) *phase {
	until := b.cfg.Clock.Now().Add(b.cfg.HalfOpenMaxWait)
	return &phase{state: StateHalfOpen, opens: opens, until: until,
		reject: &OpenError{Name: b.cfg.Name, State: StateHalfOpen, Until: until}}
}

// ForceOpen rejects every call from now on, with an *OpenError in state
// StateForcedOpen, until Release or ForceClosed: for an operator who knows
// the callee is down, or must be left alone. It reports the change to
// OnStateChange like any other.
func (b *Breaker) ForceOpen() {
	b.load()
	b.force(&phase{state: StateForcedOpen, reject: &OpenError{Name: b.cfg.Name, State: StateForcedOpen}})
}

// ForceClosed lets every call through from now on, counting nothing, until
// Release or ForceOpen: for an operator who knows better than the failure
// rate (a callee that fails in a way that does not matter today).
func (b *Breaker) ForceClosed() {
	b.load()
	b.force(&phase{state: StateForcedClosed})
}

// Release hands the breaker back to its own rules: closed, with an empty
// window and its count of consecutive opens at zero, whatever its state was
// (forced or not). An open breaker released closes at once.
func (b *Breaker) Release() {
	b.load()
	b.force(b.newClosed())
}

// force makes to the current phase, whatever the current one is; a breaker
// already forced into to's state is left as it is.
func (b *Breaker) force(to *phase) {
	for {
		from := b.load()
		if from.state == to.state && to.state != StateClosed {
			return
		}
		if b.transition(from, to) {
			return
		}
	}
}

// transition moves from one phase to the next, if from is still current,
// and reports the change.
func (b *Breaker) transition(from, to *phase) bool {
	if !b.swap(from, to) {
		return false
	}
	b.report()
	return true
}

// swap replaces from with to if from is still current, and queues the
// change for OnStateChange. Changes are queued in the order they are made.
func (b *Breaker) swap(from, to *phase) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.phase.CompareAndSwap(from, to) {
		return false
	}
	if b.cfg.OnStateChange != nil && from.state != to.state {
		b.changes = append(b.changes, stateChange{from.state, to.state})
	}
	return true
}

// report calls OnStateChange for the queued changes, in order, unless
// another goroutine is doing so already (it will report them after its
// own). Hooks run without the lock, so a hook may call the breaker.
func (b *Breaker) report() {
	b.mu.Lock()
	if b.delivering || len(b.changes) == 0 {
		b.mu.Unlock()
		return
	}
	b.delivering = true
	returned := false
	defer func() {
		if !returned { // a hook panicked: let the next change report the rest
			b.mu.Lock()
			b.delivering = false
			b.mu.Unlock()
		}
	}()
	for len(b.changes) > 0 {
		c := b.changes[0]
		b.changes = b.changes[1:]
		b.mu.Unlock()
		b.cfg.OnStateChange(b.cfg.Name, c.from, c.to)
		b.mu.Lock()
	}
	b.changes = nil
	b.delivering = false
	b.mu.Unlock()
	returned = true
}

// notBefore returns when the breaker will next admit a call: the end of
// the open period, the end of time while forced open, the zero time
// otherwise (closed; half-open, where the probes will decide soon).
func (b *Breaker) notBefore() time.Time {
	switch p := b.load(); p.state {
	case StateOpen:
		return p.until
	case StateForcedOpen:
		return endOfTime
	}
	return time.Time{}
}

var endOfTime = time.Unix(1<<62, 0)

// BreakerSnapshot is a breaker's state and counts at one moment.
type BreakerSnapshot struct {
	Name  string
	State State
	// Calls, Failures and SlowCalls are the counts in the closed window.
	Calls, Failures, SlowCalls int
	// Opens is the number of consecutive opens (0 when closed).
	Opens int
	// Until is when an open breaker will admit a probe, or when a
	// half-open one will stop waiting for its probes.
	Until time.Time
}

// Snapshot returns the breaker's current state and counts.
func (b *Breaker) Snapshot() BreakerSnapshot {
	p := b.load()
	s := BreakerSnapshot{Name: b.cfg.Name, State: p.state, Opens: p.opens, Until: p.until}
	var c counts
	switch {
	case p.cw != nil:
		c = p.cw.counts()
	case p.tw != nil:
		c = p.tw.counts(b.cfg.Clock.Now())
	}
	s.Calls, s.Failures, s.SlowCalls = c.calls, c.failures, c.slow
	return s
}
