package resilience

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Sentinel errors. Structured errors returned by the policies match them
// with errors.Is.
var (
	// ErrOpen: a breaker rejected the call without making it. The error is
	// an *OpenError that says when the breaker will next admit a probe.
	ErrOpen = errors.New("resilience: circuit breaker open")
	// ErrBulkheadFull: a bulkhead had no free slot and no room in its queue
	// (or the queue wait ran out).
	ErrBulkheadFull = errors.New("resilience: bulkhead full")
	// ErrBudgetExhausted: a retry was due but the retry budget had no token
	// left; the error also wraps the last failure.
	ErrBudgetExhausted = errors.New("resilience: retry budget exhausted")
	// ErrTimeout: an attempt ran past its attempt timeout; the error also
	// wraps what the callee returned (usually context.DeadlineExceeded).
	ErrTimeout = errors.New("resilience: attempt timed out")
)

// OpenError is returned by an open (or saturated half-open) breaker. One
// value is made per open period, so rejecting allocates nothing.
type OpenError struct {
	Name string // the breaker's name, possibly empty
	// Until is when the breaker will admit a probe. It is zero when the
	// breaker is half-open and all its probes are in flight.
	Until time.Time
}

func (e *OpenError) Error() string {
	s := "resilience: circuit breaker"
	if e.Name != "" {
		s += " " + strconv.Quote(e.Name)
	}
	if e.Until.IsZero() {
		return s + " half-open, probes in flight"
	}
	return s + " open until " + e.Until.Format(time.RFC3339Nano)
}

// Is makes errors.Is(err, ErrOpen) true.
func (e *OpenError) Is(target error) bool { return target == ErrOpen }

// Class says what a retry should do about an error.
type Class int8

const (
	// Transient: the call may succeed later; back off and retry.
	Transient Class = iota
	// Permanent: retrying cannot help (bad input, not found); stop at once.
	Permanent
	// NotReady: the callee is healthy but not ready for this call yet (an
	// event arrived before the one it depends on); back off and retry, and do
	// not count it as a failure of the callee in a breaker.
	NotReady
)

func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case Permanent:
		return "permanent"
	case NotReady:
		return "not-ready"
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

type classError struct {
	err   error
	class Class
}

func (e *classError) Error() string { return e.err.Error() }
func (e *classError) Unwrap() error { return e.err }

// MarkPermanent wraps err so that the default classifier says Permanent.
// It returns nil for a nil err.
func MarkPermanent(err error) error {
	if err == nil {
		return nil
	}
	return &classError{err, Permanent}
}

// MarkNotReady wraps err so that the default classifier says NotReady.
// It returns nil for a nil err.
func MarkNotReady(err error) error {
	if err == nil {
		return nil
	}
	return &classError{err, NotReady}
}

// IsPermanent reports whether err was marked with MarkPermanent.
func IsPermanent(err error) bool { return Classify(err) == Permanent }

// IsNotReady reports whether err was marked with MarkNotReady.
func IsNotReady(err error) bool { return Classify(err) == NotReady }

// Classify is the default retry classifier: the class of the outermost
// mark in err's chain, and Transient for anything unmarked. A cancelled
// context is Permanent: the caller has gone.
func Classify(err error) Class {
	var ce *classError
	if errors.As(err, &ce) {
		return ce.class
	}
	if errors.Is(err, context.Canceled) {
		return Permanent
	}
	return Transient
}

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string             { return e.err.Error() }
func (e *retryAfterError) Unwrap() error             { return e.err }
func (e *retryAfterError) RetryAfter() time.Duration { return e.after }

// WithRetryAfter wraps err with the callee's hint that it will not be ready
// for d. Retry waits at least that long, and a breaker that trips on this
// error stays open at least that long (up to its MaxRetryAfter). Any error
// with a method RetryAfter() time.Duration in its chain works the same.
func WithRetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err, d}
}

// RetryAfterHint returns the Retry-After hint carried by err, if any.
func RetryAfterHint(err error) (time.Duration, bool) {
	var h interface{ RetryAfter() time.Duration }
	if err == nil || !errors.As(err, &h) {
		return 0, false
	}
	return h.RetryAfter(), true
}

// timeoutError is what an attempt that ran past its attempt timeout
// returns: it Is ErrTimeout and unwraps to the callee's own error.
type timeoutError struct {
	err error
	d   time.Duration
}

func (e *timeoutError) Error() string {
	return "resilience: attempt timed out after " + e.d.String() + ": " + e.err.Error()
}
func (e *timeoutError) Unwrap() error        { return e.err }
func (e *timeoutError) Is(target error) bool { return target == ErrTimeout }

type budgetError struct{ err error }

func (e *budgetError) Error() string        { return ErrBudgetExhausted.Error() + ": " + e.err.Error() }
func (e *budgetError) Unwrap() error        { return e.err }
func (e *budgetError) Is(target error) bool { return target == ErrBudgetExhausted }
