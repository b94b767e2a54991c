// Package query answers queries from read models, and lets a client read
// its own writes: a query may carry the position of the events a command
// wrote (from the command's succeeded status), and is answered only once
// the read model has reached that position.
//
// A [Handler] answers one type of query with one type of result, typed with
// generics so that neither side casts. [Consistent] wraps a handler so that
// it first waits for the position the context carries ([WithPosition]),
// through a [Waiter] (a projection.Runner, or a projection.Monitor's
// Waiter), for at most a timeout. [NewHTTPHandler] serves a handler over
// HTTP: the position comes in the Recado-Position header or the position
// parameter, and a read model that does not reach it in time is answered
// with RFC 9457 problem details (package resilience/problem): 503 with
// Retry-After when it is still behind, 500 naming the dead letter when the
// event at the position is parked in the dead-letter queue.
package query

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/recado-dev/recado"
)

// Handler answers queries of type Q with results of type R.
type Handler[Q, R any] interface {
	Handle(ctx context.Context, q Q) (R, error)
}

// HandlerFunc is a function that is a [Handler].
type HandlerFunc[Q, R any] func(ctx context.Context, q Q) (R, error)

// Handle calls f.
func (f HandlerFunc[Q, R]) Handle(ctx context.Context, q Q) (R, error) { return f(ctx, q) }

// Waiter waits until a read model has reached a position: every event up
// to it is applied. *projection.Runner and the Waiter of a
// projection.Monitor are Waiters. WaitFor returns nil then, an error
// wrapping ctx's when ctx ends first, or another error (projection's
// *ParkedError when the event at the position is parked).
type Waiter interface {
	WaitFor(ctx context.Context, pos recado.Position) error
}

// DefaultTimeout is how long a query waits for its position by default.
const DefaultTimeout = 5 * time.Second

var (
	// ErrNotFound: what the query asks for is not in the read model. A
	// handler returns it (wrapped as it likes); HTTP answers 404.
	ErrNotFound = errors.New("query: not found")
	// ErrTimeout: the read model did not reach the query's position in
	// time. The error is a [*TimeoutError].
	ErrTimeout = errors.New("query: read model did not reach the position in time")
)

// TimeoutError reports a read model that did not reach Position within
// Timeout.
type TimeoutError struct {
	Position recado.Position
	Timeout  time.Duration
	// Err is the waiter's error.
	Err error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("query: the read model did not reach position %s within %v: %v", e.Position, e.Timeout, e.Err)
}

// Is reports whether target is [ErrTimeout].
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

func (e *TimeoutError) Unwrap() error { return e.Err }

type positionKey struct{}

// WithPosition returns a context that carries pos: a query run with it
// through [Consistent] waits until the read model has reached pos.
func WithPosition(ctx context.Context, pos recado.Position) context.Context {
	return context.WithValue(ctx, positionKey{}, pos)
}

// PositionFrom returns the position ctx carries, if any.
func PositionFrom(ctx context.Context) (recado.Position, bool) {
	pos, ok := ctx.Value(positionKey{}).(recado.Position)
	return pos, ok
}

// Consistent returns a handler that, when the context carries a position
// ([WithPosition]), waits with w until the read model has reached it, for at
// most timeout (0 means [DefaultTimeout]), then calls h. It fails with a
// [*TimeoutError] when the wait runs out of time, and with w's error when w
// fails otherwise (a parked event, say). Without a position it calls h at
// once.
func Consistent[Q, R any](h Handler[Q, R], w Waiter, timeout time.Duration) Handler[Q, R] {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return HandlerFunc[Q, R](func(ctx context.Context, q Q) (R, error) {
		if pos, ok := PositionFrom(ctx); ok {
			if err := wait(ctx, w, pos, timeout); err != nil {
				var zero R
				return zero, err
			}
		}
		return h.Handle(ctx, q)
	})
}

// wait waits with w for pos, at most timeout.
func wait(ctx context.Context, w Waiter, pos recado.Position, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := w.WaitFor(wctx, pos)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return &TimeoutError{Position: pos, Timeout: timeout, Err: err}
	}
	return err
}
