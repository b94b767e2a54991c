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

// OpenError is returned by an open (or saturated half-open, or forced
// open) breaker. One value is made per open period, so rejecting
// allocates nothing.
type OpenError struct {
	Name string // the breaker's name, possibly empty
	// State is the breaker's state when it rejected the call:
	// StateOpen, StateHalfOpen (all its probes in flight) or
	// StateForcedOpen.
	State State
	// Until is, in StateOpen, when the breaker will admit a probe; in
	// StateHalfOpen, when it will stop waiting for the probes in flight
	// (they usually decide sooner); zero in StateForcedOpen (an operator
	// decides).
	Until time.Time
}

func (e *OpenError) Error() string {
	s := "resilience: circuit breaker"
	if e.Name != "" {
		s += " " + strconv.Quote(e.Name)
	}
	switch {
	case e.State == StateForcedOpen:
		return s + " forced open"
	case e.State == StateHalfOpen:
		return s + " half-open, probes in flight"
	}
	return s + " open until " + e.Until.Format(time.RFC3339Nano)
}

// Is makes errors.Is(err, ErrOpen) true.
func (e *OpenError) Is(target error) bool { return target == ErrOpen }

// Class says what an outcome means, to a retry and to a breaker alike. One
// classifier, func(error) Class, serves both (Classify is the default), so
// the two policies never disagree about an error.
//
//	class           retry                   breaker
//	ClassTransient  back off and try again  failure
//	ClassPermanent  stop                    failure
//	ClassNotReady   back off and try again  success (the callee answered)
//	ClassIgnored    stop                    not counted (says nothing of the callee)
//	ClassSuccess    stop, return the error  success (the error is a normal answer)
type Class int8

const (
	// ClassTransient: the call may succeed later. The zero Class, and what
	// Classify says of any error it knows nothing about.
	ClassTransient Class = iota
	// ClassPermanent: retrying cannot help (bad input, not found).
	ClassPermanent
	// ClassNotReady: the callee is healthy but not ready for this call yet
	// (an event arrived before the one it depends on).
	ClassNotReady
	// ClassIgnored: the outcome says nothing about the callee's health: the
	// caller's context was cancelled, the caller has gone.
	ClassIgnored
	// ClassSuccess: the call did what it should. Classify says it of nil; a
	// classifier may say it of an error that is a normal answer (a 404 from
	// a lookup), so that it is returned as it is and a breaker counts a
	// healthy call.
	ClassSuccess
)

func (c Class) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassPermanent:
		return "permanent"
	case ClassNotReady:
		return "not-ready"
	case ClassIgnored:
		return "ignored"
	case ClassSuccess:
		return "success"
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

type classError struct {
	err   error
	class Class
}

func (e *classError) Error() string { return e.err.Error() }
func (e *classError) Unwrap() error { return e.err }

// MarkPermanent wraps err so that Classify says ClassPermanent. It returns
// nil for a nil err.
func MarkPermanent(err error) error {
	if err == nil {
		return nil
	}
	return &classError{err, ClassPermanent}
}

// MarkNotReady wraps err so that Classify says ClassNotReady. It returns nil
// for a nil err.
func MarkNotReady(err error) error {
	if err == nil {
		return nil
	}
	return &classError{err, ClassNotReady}
}

// IsPermanent reports whether Classify says ClassPermanent of err.
func IsPermanent(err error) bool { return Classify(err) == ClassPermanent }

// IsNotReady reports whether Classify says ClassNotReady of err.
func IsNotReady(err error) bool { return Classify(err) == ClassNotReady }

// Classify is the default classifier of retries and breakers: ClassSuccess
// for nil; the class of the outermost mark (MarkPermanent, MarkNotReady) in
// err's chain; ClassIgnored for a cancelled context (the caller has gone;
// the callee did nothing wrong); ClassTransient for anything else, timeouts
// included.
func Classify(err error) Class {
	if err == nil {
		return ClassSuccess
	}
	var ce *classError
	if errors.As(err, &ce) {
		return ce.class
	}
	if errors.Is(err, context.Canceled) {
		return ClassIgnored
	}
	return ClassTransient
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

// interruptedError is what a retry returns when its context ends during a
// back-off: it Is the context's cause and wraps the last attempt's error.
type interruptedError struct{ cause, last error }

func (e *interruptedError) Error() string {
	return "resilience: retry interrupted: " + e.cause.Error() + "; last attempt: " + e.last.Error()
}
func (e *interruptedError) Unwrap() []error { return []error{e.cause, e.last} }
