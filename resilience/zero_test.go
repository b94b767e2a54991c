package resilience

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/problem"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// The zero value of each policy works, with the defaults of its config.
func TestZeroValuesWork(t *testing.T) {
	t.Run("Breaker", func(t *testing.T) {
		var b Breaker
		if err := b.Execute(func() error { return nil }); err != nil {
			t.Fatalf("Execute: %v", err)
		}
		for range 18 {
			b.Execute(func() error { return errBoom })
		}
		if s := b.Snapshot(); s.State != StateClosed || s.Calls != 19 {
			t.Errorf("after 1 success and 18 failures: %+v, want closed with 19 calls (default MinCalls 20)", s)
		}
		b.Execute(func() error { return errBoom })
		if s := b.State(); s != StateOpen {
			t.Errorf("after the 20th call: %v, want open", s)
		}
		var fresh Breaker
		fresh.ForceOpen()
		if fresh.State() != StateForcedOpen || fresh.Name() != "" {
			t.Errorf("ForceOpen on a zero breaker: state %v", fresh.State())
		}
	})
	t.Run("Retry", func(t *testing.T) {
		clock := resiliencetest.NewAutoClock(t0)
		calls := 0
		v, err := Do(context.Background(), &Pipeline{Retry: &Retry{}, Clock: clock}, failing(&calls, errBoom, errBoom))
		if err != nil || v != 3 {
			t.Errorf("Do = %v, %v after %d calls; want success on the 3rd (default 3 attempts)", v, err, calls)
		}
		if d := clock.Now().Sub(t0); d > 300*time.Millisecond {
			t.Errorf("backed off %v in all, want at most 100ms + 200ms (the default schedule)", d)
		}
		calls = 0
		Do(context.Background(), &Pipeline{Retry: &Retry{}, Clock: clock}, failing(&calls, context.Canceled))
		if calls != 1 {
			t.Errorf("a cancelled context was tried %d times, want 1 (the default classifier)", calls)
		}
	})
	t.Run("Bulkhead", func(t *testing.T) {
		var bh Bulkhead
		for i := range 100 {
			if err := bh.Acquire(context.Background()); err != nil {
				t.Fatalf("acquire %d: %v", i, err)
			}
		}
		if err := bh.Acquire(context.Background()); !errors.Is(err, ErrBulkheadFull) {
			t.Errorf("acquire 101: %v, want ErrBulkheadFull (default 100, no queue)", err)
		}
		for range 100 {
			bh.Release()
		}
		bh.Release() // one too many: a caller's bug, but it must not block
		if bh.InFlight() != 0 || bh.Waiting() != 0 {
			t.Errorf("in flight %d, waiting %d; want 0, 0", bh.InFlight(), bh.Waiting())
		}
	})
	t.Run("RetryBudget", func(t *testing.T) {
		var b RetryBudget
		if got := b.Tokens(); got != 10 {
			t.Errorf("Tokens = %v, want the default burst of 10", got)
		}
		for range 10 {
			if !b.withdraw() {
				t.Fatal("a full zero budget refused a retry")
			}
		}
		for range 10 {
			b.call()
		}
		if !b.withdraw() || b.withdraw() {
			t.Error("after 10 calls: want exactly 1 retry (default ratio 0.1)")
		}
	})
	t.Run("Transport", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
		defer srv.Close()
		var tr Transport
		resp, err := (&http.Client{Transport: &tr}).Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if len(tr.Snapshots()) != 1 {
			t.Errorf("snapshots %v, want one breaker", tr.Snapshots())
		}
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})
	t.Run("Proxy", func(t *testing.T) {
		var p Proxy
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if d, err := problem.Read(rec.Result()); err != nil || rec.Code != 500 || d.Status != 500 {
			t.Errorf("zero Proxy: %d, %+v, %v; want a 500 problem (it has no target)", rec.Code, d, err)
		}
	})
}

func TestBulkheadAllocatesNothing(t *testing.T) {
	var bh Bulkhead
	ctx := context.Background()
	if allocs := testing.AllocsPerRun(1000, func() { bh.Acquire(ctx); bh.Release() }); allocs != 0 {
		t.Errorf("allocations per Acquire/Release = %v, want 0", allocs)
	}
}
