// Package bench measures recado side by side with peer libraries, in one
// run, so that the figures in docs/benchmarks.md compare like with like.
package bench

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/sony/gobreaker/v2"

	"github.com/recado-dev/recado/resilience"
)

// Each peer is set up as close as it allows to the same policy: a window of
// the last 100 calls tripping at 50% failures (gobreaker: its default,
// more than 5 consecutive failures), a long open period, 3 attempts with
// exponential back-off from 100 ms, a 1 s attempt timeout.
//
// Sub-benchmarks are named lib=…/api=… so that benchstat can put the
// libraries side by side (benchstat -col /lib). A breaker is driven
// through:
//
//   - api=execute: a call that survives a panic in the guarded function
//     (counted as a failure, the probe slot released): recado's
//     Breaker.Execute, gobreaker's Execute. The fair comparison.
//   - api=permit: the two-step API, which a panic can wedge unless the
//     caller defers the report: recado's Allow/Done, failsafe-go's
//     TryAcquirePermit/RecordSuccess. failsafe-go has no panic-safe path
//     (neither its permit API nor its executor recovers), so it appears
//     here only; its executor costs far more.

var errBoom = errors.New("boom")

func recadoBreaker(b *testing.B) *resilience.Breaker {
	cb, err := resilience.NewBreaker(resilience.BreakerConfig{WindowSize: 100, MinCalls: 20, FailureRate: 0.5,
		OpenPeriod: resilience.Backoff{Initial: time.Hour, Multiplier: 1}})
	if err != nil {
		b.Fatal(err)
	}
	return cb
}

func gobreakerBreaker() *gobreaker.CircuitBreaker[int] {
	return gobreaker.NewCircuitBreaker[int](gobreaker.Settings{Name: "bench", Timeout: time.Hour})
}

func failsafeBreaker() circuitbreaker.CircuitBreaker[int] {
	return circuitbreaker.NewBuilder[int]().WithFailureThresholdRatio(50, 100).WithDelay(time.Hour).Build()
}

func ok() (int, error) { return 1, nil }
func okErr() error     { return nil }
func fail() error      { return errBoom }

func BenchmarkBreakerClosed(b *testing.B) {
	b.Run("lib=recado/api=execute", func(b *testing.B) {
		cb := recadoBreaker(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := cb.Execute(okErr); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lib=recado/api=permit", func(b *testing.B) {
		cb := recadoBreaker(b)
		b.ReportAllocs()
		for b.Loop() {
			p, err := cb.Allow()
			if err != nil {
				b.Fatal(err)
			}
			p.Done(nil)
		}
	})
	b.Run("lib=gobreaker/api=execute", func(b *testing.B) {
		cb := gobreakerBreaker()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cb.Execute(ok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lib=failsafe/api=permit", func(b *testing.B) {
		cb := failsafeBreaker()
		b.ReportAllocs()
		for b.Loop() {
			if !cb.TryAcquirePermit() {
				b.Fatal("rejected")
			}
			cb.RecordSuccess()
		}
	})
}

func BenchmarkBreakerOpen(b *testing.B) {
	b.Run("lib=recado/api=execute", func(b *testing.B) {
		cb := recadoBreaker(b)
		for range 20 {
			cb.Execute(fail)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := cb.Execute(okErr); err == nil {
				b.Fatal("admitted")
			}
		}
	})
	b.Run("lib=recado/api=permit", func(b *testing.B) {
		cb := recadoBreaker(b)
		for range 20 {
			cb.Execute(fail)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cb.Allow(); err == nil {
				b.Fatal("admitted")
			}
		}
	})
	b.Run("lib=gobreaker/api=execute", func(b *testing.B) {
		cb := gobreakerBreaker()
		fail := func() (int, error) { return 0, errBoom }
		for range 6 {
			cb.Execute(fail)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cb.Execute(ok); err == nil {
				b.Fatal("admitted")
			}
		}
	})
	b.Run("lib=failsafe/api=permit", func(b *testing.B) {
		cb := failsafeBreaker()
		cb.Open()
		b.ReportAllocs()
		for b.Loop() {
			if cb.TryAcquirePermit() {
				b.Fatal("admitted")
			}
		}
	})
}

func BenchmarkBreakerParallel(b *testing.B) {
	b.Run("lib=recado/api=execute", func(b *testing.B) {
		cb := recadoBreaker(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := cb.Execute(okErr); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("lib=recado/api=permit", func(b *testing.B) {
		cb := recadoBreaker(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				p, err := cb.Allow()
				if err != nil {
					b.Error(err)
					return
				}
				p.Done(nil)
			}
		})
	})
	b.Run("lib=gobreaker/api=execute", func(b *testing.B) {
		cb := gobreakerBreaker()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				cb.Execute(ok)
			}
		})
	})
	b.Run("lib=failsafe/api=permit", func(b *testing.B) {
		cb := failsafeBreaker()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if cb.TryAcquirePermit() {
					cb.RecordSuccess()
				}
			}
		})
	})
}

// BenchmarkBreakerMixed: one call in 100 fails (far below the threshold),
// so the window is never all successes and every call is recorded.
func BenchmarkBreakerMixed(b *testing.B) {
	b.Run("lib=recado/api=execute", func(b *testing.B) {
		cb := recadoBreaker(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			fn := okErr
			if i++; i%100 == 0 {
				fn = fail
			}
			cb.Execute(fn)
		}
	})
	b.Run("lib=recado/api=permit", func(b *testing.B) {
		cb := recadoBreaker(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			p, err := cb.Allow()
			if err != nil {
				b.Fatal(err)
			}
			if i++; i%100 == 0 {
				p.Done(errBoom)
			} else {
				p.Done(nil)
			}
		}
	})
	b.Run("lib=gobreaker/api=execute", func(b *testing.B) {
		cb := gobreakerBreaker()
		fail := func() (int, error) { return 0, errBoom }
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			fn := ok
			if i++; i%100 == 0 {
				fn = fail
			}
			cb.Execute(fn)
		}
	})
	b.Run("lib=failsafe/api=permit", func(b *testing.B) {
		cb := failsafeBreaker()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if !cb.TryAcquirePermit() {
				b.Fatal("rejected")
			}
			if i++; i%100 == 0 {
				cb.RecordFailure()
			} else {
				cb.RecordSuccess()
			}
		}
	})
}

// BenchmarkPipeline: retry → breaker → attempt timeout around a successful
// call that never looks at its context: the best case, where recado's
// attempt context is never armed (gobreaker has no pipeline).
func BenchmarkPipeline(b *testing.B) {
	benchmarkPipeline(b, context.Background(), func(context.Context) (int, error) { return 1, nil })
}

// BenchmarkPipelineCtxAware is BenchmarkPipeline with a function that, as
// any I/O call does, selects on its context's Done channel: the attempt
// timeout's channel and timer are made on every call. The caller's context
// is context.Background() (parent=background), or one that can be
// cancelled, as an HTTP handler's is (parent=cancelable): then the attempt
// context must also follow its parent.
func BenchmarkPipelineCtxAware(b *testing.B) {
	fn := func(ctx context.Context) (int, error) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		default:
			return 1, nil
		}
	}
	b.Run("parent=background", func(b *testing.B) { benchmarkPipeline(b, context.Background(), fn) })
	b.Run("parent=cancelable", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		benchmarkPipeline(b, ctx, fn)
	})
}

func benchmarkPipeline(b *testing.B, ctx context.Context, fn func(context.Context) (int, error)) {
	b.Run("lib=recado", func(b *testing.B) {
		r, err := resilience.NewRetry(resilience.RetryConfig{MaxAttempts: 3})
		if err != nil {
			b.Fatal(err)
		}
		p := &resilience.Pipeline{Retry: r, Breaker: recadoBreaker(b), AttemptTimeout: time.Second}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := resilience.Do(ctx, p, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lib=failsafe", func(b *testing.B) {
		rp := retrypolicy.NewBuilder[int]().WithMaxAttempts(3).WithBackoff(100*time.Millisecond, 10*time.Second).Build()
		exec := failsafe.With[int](rp, failsafeBreaker(), timeout.New[int](time.Second)).WithContext(ctx)
		call := func(e failsafe.Execution[int]) (int, error) { return fn(e.Context()) }
		b.ReportAllocs()
		for b.Loop() {
			if _, err := exec.GetWithExecution(call); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRetry: a retry policy around a call that succeeds at once, the
// price every call pays for being retryable.
func BenchmarkRetry(b *testing.B) {
	ctx := context.Background()
	b.Run("lib=recado", func(b *testing.B) {
		r, err := resilience.NewRetry(resilience.RetryConfig{MaxAttempts: 3})
		if err != nil {
			b.Fatal(err)
		}
		p := &resilience.Pipeline{Retry: r}
		fn := func(context.Context) (int, error) { return 1, nil }
		b.ReportAllocs()
		for b.Loop() {
			if _, err := resilience.Do(ctx, p, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lib=failsafe", func(b *testing.B) {
		rp := retrypolicy.NewBuilder[int]().WithMaxAttempts(3).WithBackoff(100*time.Millisecond, 10*time.Second).Build()
		exec := failsafe.With[int](rp).WithContext(ctx)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := exec.Get(ok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lib=backoff", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := backoff.Retry(ctx, ok, backoff.WithMaxTries(3)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
