package resilience

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

type reply struct {
	status int
	body   string
}

var errUnavailable = errors.New("unavailable")

// checkStatus is a result classifier: a 503 reply is a failure.
func checkStatus(r reply) error {
	if r.status == 503 {
		return fmt.Errorf("status %d: %w", r.status, errUnavailable)
	}
	return nil
}

// replies returns a function that answers with statuses in turn, then 200.
func replies(calls *int, statuses ...int) func(context.Context) (reply, error) {
	return func(context.Context) (reply, error) {
		*calls++
		if *calls <= len(statuses) {
			return reply{status: statuses[*calls-1]}, nil
		}
		return reply{status: 200, body: "ok"}, nil
	}
}

func TestCallCheckTreatsAValueAsAFailure(t *testing.T) {
	r, clock := newTestRetry(t, RetryConfig{MaxAttempts: 3})
	p := &Pipeline{Retry: r, Clock: clock}
	calls := 0
	got, err := Call[reply]{Check: checkStatus}.Do(context.Background(), p, replies(&calls, 503, 503))
	if err != nil || got.status != 200 || calls != 3 {
		t.Errorf("two 503s then 200: %+v, %v after %d calls; want the 200 on the 3rd", got, err, calls)
	}

	calls = 0
	got, err = Call[reply]{Check: checkStatus}.Do(context.Background(), p, replies(&calls, 503, 503, 503))
	if !errors.Is(err, errUnavailable) || got.status != 503 || calls != 3 {
		t.Errorf("503 throughout: %+v, %v after %d calls; want the last 503 with its error", got, err, calls)
	}

	calls = 0
	permanent := func(r reply) error { return MarkPermanent(checkStatus(r)) }
	_, err = Call[reply]{Check: permanent}.Do(context.Background(), p, replies(&calls, 503))
	if !IsPermanent(err) || calls != 1 {
		t.Errorf("a permanent verdict: %v after %d calls, want no retry", err, calls)
	}

	b, _ := newTestBreaker(t, BreakerConfig{MinCalls: 2})
	for range 2 {
		Call[reply]{Check: checkStatus}.Do(context.Background(), &Pipeline{Breaker: b}, replies(new(int), 503))
	}
	if s := b.State(); s != StateOpen {
		t.Errorf("after two 503 replies: breaker %v, want open (a checked value is a failure)", s)
	}
	calls = 0
	got, err = Call[reply]{Check: checkStatus}.Do(context.Background(), nil, replies(&calls, 503))
	if !errors.Is(err, errUnavailable) || got.status != 503 {
		t.Errorf("nil pipeline: %+v, %v; want the check applied", got, err)
	}
}

func TestCallCheckPanicIsAFailure(t *testing.T) {
	b, _ := newTestBreaker(t, BreakerConfig{MinCalls: 1})
	mustPanic(t, func() {
		Call[reply]{Check: func(reply) error { panic("check bug") }}.Do(context.Background(), &Pipeline{Breaker: b}, replies(new(int)))
	})
	if s := b.State(); s != StateOpen {
		t.Errorf("breaker %v after a panicking check, want open", s)
	}
}

func TestCallFallback(t *testing.T) {
	cached := func(_ context.Context, err error) (reply, error) { return reply{status: 200, body: "cached"}, nil }
	tests := []struct {
		name     string
		call     Call[reply]
		err      error
		forced   bool
		wantBody string
		wantErr  error
	}{
		{name: "breaker open", call: Call[reply]{Fallback: cached}, forced: true, wantBody: "cached"},
		{name: "transient failure", call: Call[reply]{Fallback: cached}, err: errBoom, wantBody: "cached"},
		{name: "timeout", call: Call[reply]{Fallback: cached}, err: &timeoutError{err: context.DeadlineExceeded, d: time.Second}, wantBody: "cached"},
		{name: "permanent error is not hidden", call: Call[reply]{Fallback: cached}, err: MarkPermanent(errBoom), wantErr: errBoom},
		{name: "cancelled caller gets no answer", call: Call[reply]{Fallback: cached}, err: context.Canceled, wantErr: context.Canceled},
		{name: "success needs none", call: Call[reply]{Fallback: cached}, wantBody: "ok"},
		{name: "own selection", err: MarkPermanent(errBoom), wantBody: "cached",
			call: Call[reply]{Fallback: cached, FallbackOn: func(err error) bool { return errors.Is(err, errBoom) }}},
		{name: "fallback fails too", err: errBoom, wantErr: errUnavailable,
			call: Call[reply]{Fallback: func(_ context.Context, err error) (reply, error) {
				return reply{}, fmt.Errorf("no cache (%w) after: %w", errUnavailable, err)
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := newTestBreaker(t, BreakerConfig{})
			if tt.forced {
				b.ForceOpen()
			}
			calls := 0
			got, err := tt.call.Do(context.Background(), &Pipeline{Breaker: b}, func(context.Context) (reply, error) {
				calls++
				if tt.err != nil {
					return reply{}, tt.err
				}
				return reply{status: 200, body: "ok"}, nil
			})
			if (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || got.body != tt.wantBody {
				t.Errorf("got %+v, %v; want body %q, err %v", got, err, tt.wantBody, tt.wantErr)
			}
			if tt.forced && calls != 0 {
				t.Errorf("the callee was called %d times through a forced-open breaker", calls)
			}
		})
	}
}
