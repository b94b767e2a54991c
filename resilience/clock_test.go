package resilience

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// A pipeline runs on one clock: its breaker's (or bulkhead's) unless
// Pipeline.Clock says otherwise, and the same for its timeouts and back-off.
func TestPipelineTakesItsBreakersClock(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	b, err := NewBreaker(BreakerConfig{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	timers := -1
	_, err = Do(context.Background(), &Pipeline{Breaker: b, AttemptTimeout: time.Second}, func(ctx context.Context) (int, error) {
		ctx.Done() // arm the attempt's timer
		timers = clock.Timers()
		return 1, nil
	})
	if err != nil || timers != 1 {
		t.Errorf("attempt timer on the breaker's fake clock: %d timers (err %v), want 1", timers, err)
	}
}

func TestRetryBacksOffOnThePipelinesClock(t *testing.T) {
	clock := resiliencetest.NewAutoClock(t0)
	r, err := NewRetry(RetryConfig{Backoff: Backoff{Initial: time.Minute, Jitter: NoJitter}})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	if _, err := Do(context.Background(), &Pipeline{Retry: r, Clock: clock}, failing(&calls, errBoom)); err != nil {
		t.Fatal(err)
	}
	if got := clock.Now().Sub(t0); got != time.Minute {
		t.Errorf("the fake clock moved %v during the back-off, want 1m", got)
	}
}

func TestPipelineRejectsTwoClocks(t *testing.T) {
	a, b := resiliencetest.NewClock(t0), resiliencetest.NewClock(t0)
	br, err := NewBreaker(BreakerConfig{Clock: a})
	if err != nil {
		t.Fatal(err)
	}
	bh, err := NewBulkhead(BulkheadConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*Pipeline{
		"pipeline and breaker": {Breaker: br, Clock: b},
		"breaker and bulkhead": {Breaker: br, Bulkhead: bh},
	} {
		calls := 0
		_, err := Do(context.Background(), p, failing(&calls))
		if err == nil || calls != 0 {
			t.Errorf("%s on different clocks: err %v after %d calls, want an error and no call", name, err, calls)
		}
	}
	if _, err := Do(context.Background(), &Pipeline{Breaker: br, Clock: a}, failing(new(int))); err != nil {
		t.Errorf("the same clock twice: %v", err)
	}
}

func TestTransportRejectsASecondClock(t *testing.T) {
	_, err := NewTransport(TransportConfig{Clock: resiliencetest.NewClock(t0),
		Breaker: BreakerConfig{Clock: resiliencetest.NewClock(t0)}})
	if err == nil {
		t.Error("NewTransport with a clock in Breaker: nil error, want one (TransportConfig.Clock is the one clock)")
	}
	tr, err := NewTransport(TransportConfig{Clock: resiliencetest.NewAutoClock(t0), Base: &fakeUpstream{statuses: []int{503}},
		Retry: RetryConfig{Backoff: Backoff{Initial: time.Hour, Jitter: NoJitter}}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://cart/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := tr.cfg.Clock.Now().Sub(t0); got != time.Hour {
		t.Errorf("back-off moved the transport's clock by %v, want 1h", got)
	}
}
