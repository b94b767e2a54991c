package resilience

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestProxyEndToEnd puts the proxy in front of a flaky cart service that
// fails, then is slow, then is healthy, while clients keep calling. The
// proxy must stop calling the service while its breaker is open (so the
// service sees far fewer requests than the clients send), answer 503 with
// Retry-After meanwhile, and recover once the service is healthy.
//
// It runs on real time, with generous margins, and asserts counts, never
// speed.
func TestProxyEndToEnd(t *testing.T) {
	const (
		failFor = 300 * time.Millisecond
		slowFor = 300 * time.Millisecond
	)
	start := time.Now()
	var hits atomic.Int64
	cart := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch since := time.Since(start); {
		case since < failFor:
			http.Error(w, "cart is down", http.StatusInternalServerError)
		case since < failFor+slowFor:
			select { // slower than the proxy's attempt timeout
			case <-time.After(time.Second):
			case <-r.Context().Done():
			}
			fmt.Fprint(w, "late")
		default:
			fmt.Fprint(w, "cart ok")
		}
	}))
	defer cart.Close()

	upstream := &http.Transport{}
	defer upstream.CloseIdleConnections()
	target, _ := url.Parse(cart.URL)
	proxy, err := NewProxy(target, ProxyConfig{Transport: TransportConfig{
		Base:           upstream,
		AttemptTimeout: 50 * time.Millisecond,
		Breaker: BreakerConfig{WindowSize: 10, MinCalls: 5,
			OpenPeriod: Backoff{Initial: 40 * time.Millisecond, Max: 160 * time.Millisecond, Jitter: NoJitter}},
		Retry: RetryConfig{MaxAttempts: 2, Backoff: Backoff{Initial: 5 * time.Millisecond}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(proxy)
	defer front.Close()
	clientTransport := &http.Transport{}
	defer clientTransport.CloseIdleConnections()
	client := &http.Client{Transport: clientTransport, Timeout: 5 * time.Second}

	var (
		sent       atomic.Int64
		mu         sync.Mutex
		statuses   = map[int]int{}
		badOpen    []string
		wg         sync.WaitGroup
		ctx, abort = context.WithTimeout(context.Background(), 10*time.Second)
	)
	defer abort()
	for range 4 {
		wg.Go(func() {
			okInARow := 0
			for okInARow < 5 && ctx.Err() == nil {
				sent.Add(1)
				resp, err := client.Get(front.URL + "/cart/42")
				if err != nil {
					t.Errorf("client: %v", err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				if resp.StatusCode == http.StatusServiceUnavailable &&
					(resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/problem+json") {
					badOpen = append(badOpen, fmt.Sprintf("%v %s", resp.Header, body))
				}
				mu.Unlock()
				if resp.StatusCode == http.StatusOK && string(body) == "cart ok" {
					okInARow++
				} else {
					okInARow = 0
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("clients never saw the cart recover; statuses %v", statuses)
	}

	t.Logf("clients sent %d requests, the cart saw %d; statuses %v", sent.Load(), hits.Load(), statuses)
	if statuses[http.StatusServiceUnavailable] == 0 {
		t.Error("the proxy never failed fast with 503")
	}
	if len(badOpen) > 0 {
		t.Errorf("503 answers without Retry-After or problem+json: %v", badOpen[0])
	}
	if statuses[http.StatusInternalServerError]+statuses[http.StatusGatewayTimeout] == 0 {
		t.Error("no failure reached the clients before the breaker opened")
	}
	if h, s := hits.Load(), sent.Load(); h*4 > s {
		t.Errorf("the cart saw %d requests of %d sent: the breaker did not shield it", h, s)
	}
	if st := proxy.Breaker().State(); st != StateClosed {
		t.Errorf("breaker = %v at the end, want closed", st)
	}
}
