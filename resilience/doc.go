// Package resilience keeps a service healthy while the services it calls
// are not: a circuit breaker, retry with back-off, timeouts, a bulkhead and
// a fallback, composed in a Pipeline and called with Do; an
// http.RoundTripper and a reverse proxy that apply them to HTTP. It imports
// only the standard library.
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
//	    ^                                   OpenPeriod(n) |  ^   a probe fails or is slow, or
//	    |                                   elapses       |  |   HalfOpenMaxWait passes:
//	    |                                                 v  |   open again for longer
//	    |   all probes succeed:                     +----------+  (a callee's Retry-After
//	    +------------------------------------------ | HalfOpen |  may extend it)
//	        close; n (consecutive opens) resets     +----------+  admits HalfOpenProbes calls,
//	                                                              rejects the rest
//
// The open period grows with each consecutive re-open (by default 5 s,
// doubling, capped at 5 min, each period jittered down by up to 20%) so
// that a callee that stays down is disturbed less and less, and it resets
// when the breaker closes. A cancelled context is not the callee's fault
// and is not counted; timeouts are. With a count window and no slow-call
// threshold a successful call reads no clock, takes no lock and allocates
// nothing, and a rejection allocates nothing (the *OpenError is made once
// per period).
//
// Call through a breaker with Execute, or with Allow and Permit.Done when
// the call cannot be wrapped in a function. An operator can take a breaker
// out of its own hands: ForceOpen rejects every call, ForceClosed admits
// every call uncounted, Release hands it back, closed.
//
// # Panics
//
// A panic in the guarded function (or in a classifier, a Check or a hook)
// never wedges a policy: it counts as a failure in the breaker, releases
// what the call held (a half-open probe slot, the bulkhead slot, the
// attempt's timer), and goes on up to the caller. Nothing here recovers a
// panic for good.
//
// # Retry, timeouts, bulkhead, fallback
//
// One classifier, func(error) Class, tells both retry and breaker what an
// error means (Classify is the default). Retry backs off exponentially with
// full jitter, stops at once on a permanent error, backs off on transient
// and not-ready ones (not ready: the callee is fine but not ready for this
// call yet, so a breaker counts it as a success), honours Retry-After
// hints within bounds (never shorter than the back-off, never longer than
// MaxRetryAfter), never sleeps past the context's deadline, does not retry
// into an open breaker, and may share a RetryBudget that caps retries to a
// ratio of calls. Timeouts cancel the call's context (they never abandon a
// running call), and a Bulkhead caps concurrency with an optional short
// queue. Call adds what depends on the result's type: Check, a result
// classifier that treats a returned value as a failure, and Fallback, an
// answer given in place of a failed call.
//
// # Pipeline
//
// A Pipeline applies the policies in one order, outermost first:
//
//	Fallback → Bulkhead → Timeout (total) → Retry → Breaker → AttemptTimeout → fn → Check
//
// and Do calls a function through it with its result type intact:
//
//	order, err := resilience.Do(ctx, pipeline, func(ctx context.Context) (Order, error) {
//		return client.GetOrder(ctx, id)
//	})
//
// # HTTP
//
// Transport is an http.RoundTripper with a breaker per host (at most
// MaxHosts of them, least recently used dropped first) that retries only
// idempotent requests (or those carrying an Idempotency-Key), sending the
// body again through Request.GetBody. Proxy is an httputil.ReverseProxy
// with the same policies in front of one service: while its breaker is open
// it answers 503 Service Unavailable at once, with Retry-After (the real
// expected wait, half-open too) and an RFC 9457 problem details body.
// Protocol upgrades (WebSocket) pass through. Problem details come from the
// subpackage problem, which depends on nothing here so every HTTP adapter
// of recado can use it alone.
//
// # Recoverability
//
// Four subpackages keep what a failure must not lose, each a contract that
// every storage backend (memory, SQLite, PostgreSQL) implements and joins
// to its unit of work: deadletter (messages that kept failing, with replay
// in order and an operators' HTTP handler), idempotency (idempotency keys,
// and HTTP middleware for the Idempotency-Key header), inbox (the
// idempotent consumer) and lease (named, expiring leases with fencing
// tokens). docs/recoverability.md shows how they fit with retry.
//
// # Zero values
//
// The zero Breaker, Retry, Bulkhead, RetryBudget, Transport and Pipeline
// are ready to use, with the defaults of their zero configs; the
// constructors (NewBreaker, NewRetry, ...) validate a config and report
// what cannot work. A zero Proxy has no target and answers 500.
//
// # Time and metrics
//
// Every policy runs on a Clock; package resiliencetest has a fake one, so
// tests of open periods, back-off and timeouts never sleep. A composite has
// one clock: a Pipeline's is Pipeline.Clock, else its breaker's, else its
// bulkhead's (parts on different clocks are an error, not overridden); a
// Transport's is TransportConfig.Clock. Hooks in the configs
// (OnStateChange, OnReject, OnRetry) and Breaker.Snapshot feed metrics
// without tying this package to any metrics library.
package resilience
