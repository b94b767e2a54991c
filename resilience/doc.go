// Package resilience keeps a service healthy while the services it calls
// are not: a circuit breaker, retry with back-off, timeouts and a bulkhead,
// composed in a Pipeline and called with Do; an http.RoundTripper and a
// reverse proxy that apply them to HTTP. It imports only the standard
// library.
//
// # Breaker
//
// A Breaker watches the outcomes of calls to one callee and, when too many
// fail or are too slow, stops making them for a while:
//
//	           failure or slow-call rate reached
//	           (once the window holds MinCalls)
//	+--------+ -------------------------------------> +--------+  rejects with *OpenError
//	| Closed |                                        |  Open  |  (Is ErrOpen; says Until)
//	+--------+                                        +--------+
//	    ^                                   OpenPeriod(n) |  ^   a probe fails or is slow:
//	    |                                   elapses       |  |   open again for longer,
//	    |                                                 v  |   OpenPeriod(n+1) (a callee's
//	    |   all probes succeed:                     +----------+  Retry-After may extend it)
//	    +------------------------------------------ | HalfOpen |
//	        close; n (consecutive opens) resets     +----------+  admits HalfOpenProbes calls,
//	                                                              rejects the rest
//
// The open period grows with each consecutive re-open (by default 5 s,
// doubling, jittered by up to 20%, capped at 5 min) so that a callee that
// stays down is disturbed less and less, and it resets when the breaker
// closes. A cancelled context is not the callee's fault and is not
// counted; timeouts are. With a count window and no slow-call threshold a
// successful call reads no clock, takes no lock and allocates nothing, and
// a rejection allocates nothing (the *OpenError is made once per period).
//
// # Retry, timeouts, bulkhead
//
// Retry backs off exponentially with full jitter, stops at once on a
// permanent error, backs off on transient and not-ready ones (not ready: the
// callee is fine but not ready for this call yet, so a breaker counts it as a
// success), honours Retry-After hints, never sleeps past the context's
// deadline, does not retry into an open breaker, and may share a
// RetryBudget that caps retries to a ratio of calls. Timeouts cancel the
// call's context (they never abandon a running call), and a Bulkhead
// caps concurrency with an optional short queue.
//
// # Pipeline
//
// A Pipeline applies the policies in one order, outermost first:
//
//	Bulkhead → Timeout (total) → Retry → Breaker → AttemptTimeout → fn
//
// and Do calls a function through it with its result type intact:
//
//	order, err := resilience.Do(ctx, pipeline, func(ctx context.Context) (Order, error) {
//		return client.GetOrder(ctx, id)
//	})
//
// # HTTP
//
// Transport is an http.RoundTripper with a breaker per host that retries
// only idempotent requests (or those carrying an Idempotency-Key), sending
// the body again through Request.GetBody. Proxy is an
// httputil.ReverseProxy with the same policies in front of one service:
// while its breaker is open it answers 503 Service Unavailable at once, with
// Retry-After and an RFC 9457 problem details body. Problem details come
// from the subpackage problem, which depends on nothing here so every HTTP
// adapter of recado can use it alone.
//
// # Time and metrics
//
// Every policy takes a Clock; package resiliencetest has a fake one, so
// tests of open periods, back-off and timeouts never sleep. Hooks in the
// configs (OnStateChange, OnReject, OnRetry) and Breaker.Snapshot feed
// metrics without tying this package to any metrics library.
package resilience
