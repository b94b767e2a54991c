package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// A flaky call succeeds on its third attempt; back-off sleeps run on a
// fake clock here, so the example takes no time.
func ExampleDo() {
	clock := resiliencetest.NewAutoClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	retry, _ := resilience.NewRetry(resilience.RetryConfig{MaxAttempts: 5})
	breaker, _ := resilience.NewBreaker(resilience.BreakerConfig{Name: "stock", Clock: clock})
	p := &resilience.Pipeline{Retry: retry, Breaker: breaker, AttemptTimeout: 2 * time.Second}

	attempts := 0
	stock, err := resilience.Do(context.Background(), p, func(ctx context.Context) (int, error) {
		attempts++
		if attempts < 3 {
			return 0, errors.New("connection reset")
		}
		return 42, nil
	})
	fmt.Println(stock, err, "after", attempts, "attempts")
	// Output: 42 <nil> after 3 attempts
}

// A breaker opens when half its recent calls fail, rejects calls without
// making them, then lets a probe through; the open period grows each time
// a probe fails.
func ExampleBreaker() {
	clock := resiliencetest.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	b, _ := resilience.NewBreaker(resilience.BreakerConfig{
		Name: "payment", WindowSize: 10, MinCalls: 4, Clock: clock,
		OpenPeriod: resilience.Backoff{Initial: 10 * time.Second, Max: time.Minute, Jitter: resilience.NoJitter},
		OnStateChange: func(name string, from, to resilience.State) {
			fmt.Printf("%s: %v -> %v\n", name, from, to)
		},
	})
	call := func(err error) error {
		permit, rejected := b.Allow()
		if rejected != nil {
			return rejected
		}
		permit.Done(err)
		return err
	}
	for range 4 {
		call(errors.New("payment provider down"))
	}
	err := call(nil)
	fmt.Println(errors.Is(err, resilience.ErrOpen), err)

	clock.Advance(10 * time.Second)
	call(errors.New("still down")) // the probe fails: open for 20 s now
	fmt.Println(b.Snapshot().Until.Format(time.TimeOnly))

	clock.Advance(20 * time.Second)
	call(nil)
	// Output:
	// payment: closed -> open
	// true resilience: circuit breaker "payment" open until 2025-01-01T00:00:10Z
	// payment: open -> half-open
	// payment: half-open -> open
	// 00:00:30
	// payment: open -> half-open
	// payment: half-open -> closed
}

// Execute guards one call. A panic in it counts as a failure (here the
// one that trips the breaker) and goes on up to the caller; the breaker is
// left in a sound state, not holding a probe that will never report.
func ExampleBreaker_Execute() {
	b, _ := resilience.NewBreaker(resilience.BreakerConfig{Name: "fraud", MinCalls: 2})
	fmt.Println(b.Execute(func() error { return nil }))

	func() {
		defer func() { fmt.Println("recovered:", recover()) }()
		b.Execute(func() error { panic("nil map in the fraud client") })
	}()
	fmt.Println(b.State())
	// Output:
	// <nil>
	// recovered: nil map in the fraud client
	// open
}

// An operator page stops calls to a callee it knows is down, lets calls
// through whatever the failure rate, and hands the breaker back.
func ExampleBreaker_ForceOpen() {
	b, _ := resilience.NewBreaker(resilience.BreakerConfig{Name: "payment",
		OnStateChange: func(name string, from, to resilience.State) { fmt.Printf("%s: %v -> %v\n", name, from, to) }})

	b.ForceOpen() // the provider announced maintenance
	err := b.Execute(func() error { return nil })
	fmt.Println(err)

	b.ForceClosed() // its errors are known and harmless today
	for range 50 {
		b.Execute(func() error { return errors.New("card declined by the sandbox") })
	}
	fmt.Println(b.Snapshot().Calls, "calls counted")

	b.Release()
	// Output:
	// payment: closed -> forced-open
	// resilience: circuit breaker "payment" forced open
	// payment: forced-open -> forced-closed
	// 0 calls counted
	// payment: forced-closed -> closed
}

// The catalog answers from its cache while the price service is down: the
// fallback wraps the whole pipeline, and Check makes a reply that says
// "unavailable" a failure like an error would be.
func ExampleCall() {
	type price struct {
		cents int
		stale bool
	}
	breaker, _ := resilience.NewBreaker(resilience.BreakerConfig{Name: "prices", MinCalls: 2})
	p := &resilience.Pipeline{Breaker: breaker}
	call := resilience.Call[price]{
		Check: func(p price) error {
			if p.cents < 0 {
				return errors.New("price service: unavailable")
			}
			return nil
		},
		Fallback: func(ctx context.Context, err error) (price, error) {
			return price{cents: 1999, stale: true}, nil // the last known price
		},
	}
	fetch := func(ctx context.Context) (price, error) { return price{cents: -1}, nil }
	for range 3 {
		got, err := call.Do(context.Background(), p, fetch)
		fmt.Println(got, err, breaker.State())
	}
	// Output:
	// {1999 true} <nil> closed
	// {1999 true} <nil> open
	// {1999 true} <nil> open
}

// A proxy in front of a failing cart service: after the breaker opens, the
// proxy answers 503 with Retry-After itself and the cart is left alone.
func ExampleNewProxy() {
	cart := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "cart is down", http.StatusInternalServerError)
	}))
	defer cart.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()

	target, _ := url.Parse(cart.URL)
	proxy, _ := resilience.NewProxy(target, resilience.ProxyConfig{Transport: resilience.TransportConfig{
		Base:    base,
		Breaker: resilience.BreakerConfig{MinCalls: 2, OpenPeriod: resilience.Backoff{Initial: 30 * time.Second, Multiplier: 1, Jitter: resilience.NoJitter}},
	}})
	for range 3 {
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, httptest.NewRequest("POST", "/cart/42/items", nil))
		fmt.Println(rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("Content-Type"))
	}
	// Output:
	// 500  text/plain; charset=utf-8
	// 500  text/plain; charset=utf-8
	// 503 30 application/problem+json
}
