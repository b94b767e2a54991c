package command

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/recado-dev/recado/resilience"
)

// Validate returns middleware that checks each command with check before
// its handler runs: an error refuses the command with [ErrInvalid] (an
// accepted command fails, and is not retried). Commands are checked by
// their Route's Validate and their own Validate method anyway, when they
// are dispatched and when they are accepted; Validate adds checks that
// need the context or the envelope (the caller's metadata, say).
func Validate(check func(ctx context.Context, c *Command) error) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, c *Command) (Result, error) {
			if err := check(ctx, c); err != nil {
				return Result{}, Reject(fmt.Errorf("%w: %w", ErrInvalid, err))
			}
			return next.Handle(ctx, c)
		})
	}
}

// Logging returns middleware that logs each command its handler has
// handled: at level Info when the handler decided, at Warn when it
// returned an error, with the command's type, ID, key, attempt, the
// number of events decided and the time taken.
func Logging(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, c *Command) (Result, error) {
			start := time.Now()
			res, err := next.Handle(ctx, c)
			attrs := []slog.Attr{slog.String("type", c.Type), slog.String("id", c.ID), slog.String("key", c.Key),
				slog.Int("attempt", c.Attempt), slog.Duration("elapsed", time.Since(start))}
			if err != nil {
				attrs = append(attrs, slog.Any("err", err))
				log.LogAttrs(ctx, slog.LevelWarn, "command refused or failed", attrs...)
			} else {
				attrs = append(attrs, slog.Int("events", len(res.Events)))
				log.LogAttrs(ctx, slog.LevelInfo, "command handled", attrs...)
			}
			return res, err
		})
	}
}

// Metrics returns middleware that calls record after each handler call,
// with the command, the time the handler took and its error: the hook for
// a metrics library (counters by type and outcome, a latency histogram),
// which this package does not import. record must be quick and safe for
// concurrent use.
func Metrics(record func(c *Command, elapsed time.Duration, err error)) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, c *Command) (Result, error) {
			start := time.Now()
			res, err := next.Handle(ctx, c)
			record(c, time.Since(start), err)
			return res, err
		})
	}
}

// Policies returns middleware that calls each handler through the
// resilience pipeline p: a breaker in front of a service the handler
// calls, a timeout, a bulkhead, a retry of transient errors within one
// run. (An accepted command that still fails is retried by its Worker,
// with back-off, and dead-lettered in the end: a retry here is for quick
// blips.)
func Policies(p *resilience.Pipeline) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, c *Command) (Result, error) {
			return resilience.Do(ctx, p, func(ctx context.Context) (Result, error) { return next.Handle(ctx, c) })
		})
	}
}
