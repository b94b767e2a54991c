package transport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/recado-dev/recado/resilience"
)

// GuardConfig configures [Guard]. The zero value is ready to use.
type GuardConfig struct {
	// Breaker is the circuit breaker in front of the broker. Nil means one
	// of its own that opens when half of the last 10 publishes failed (once
	// it has seen 4), for 1 s at first, then longer up to 30 s while the
	// broker stays down.
	Breaker *resilience.Breaker
	// Timeout bounds each Publish (the caller's deadline may be shorter).
	// Default 10 s.
	Timeout time.Duration
}

// Guard returns a Publisher that checks messages and topics before p sees
// them, bounds each publish by a timeout, and calls p through a circuit
// breaker: while the broker is down, publishes fail at once with an error
// that Is [ErrUnavailable] (and resilience.ErrOpen) instead of each waiting
// for its own timeout. Every error is an [*Error]. Close closes p.
func Guard(p Publisher, cfg GuardConfig) Publisher {
	if cfg.Breaker == nil {
		cfg.Breaker, _ = resilience.NewBreaker(resilience.BreakerConfig{Name: "transport", WindowSize: 10, MinCalls: 4,
			OpenPeriod: resilience.Backoff{Initial: time.Second, Max: 30 * time.Second}})
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &guarded{p: p, cfg: cfg}
}

type guarded struct {
	p   Publisher
	cfg GuardConfig
}

func (g *guarded) Publish(ctx context.Context, topic string, msgs ...Message) error {
	fail := func(err error) error { return &Error{Op: "publish", Topic: topic, Err: err} }
	if err := CheckName("topic", topic); err != nil {
		return fail(err)
	}
	for i := range msgs {
		if err := msgs[i].Validate(); err != nil {
			return fail(err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	permit, err := g.cfg.Breaker.Allow()
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrUnavailable, err))
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	err = g.p.Publish(ctx, topic, msgs...)
	cancel()
	if errors.Is(err, ErrClosed) || errors.Is(err, ErrInvalid) {
		permit.Done(nil) // says nothing of the broker's health
	} else {
		permit.Done(err)
	}
	if err != nil {
		var te *Error
		if errors.As(err, &te) && te.Op == "publish" {
			return err
		}
		return fail(err)
	}
	return nil
}

func (g *guarded) Close() error { return g.p.Close() }
