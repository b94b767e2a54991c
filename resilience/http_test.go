package resilience

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/problem"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// fakeUpstream is an http.RoundTripper answering with statuses in turn
// (then 200), recording each request's method and body.
type fakeUpstream struct {
	mu       sync.Mutex
	statuses []int
	header   http.Header // added to every failed response
	bodies   []string
	open     int // response bodies not yet closed
}

func (f *fakeUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	body := ""
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body.Close()
		body = string(b)
	}
	f.bodies = append(f.bodies, body)
	status := http.StatusOK
	if n := len(f.bodies); n <= len(f.statuses) {
		status = f.statuses[n-1]
	}
	h := http.Header{}
	if status != http.StatusOK {
		for k, v := range f.header {
			h[k] = v
		}
	}
	f.open++
	return &http.Response{StatusCode: status, Header: h, Request: req,
		Body: &closeCounter{ReadCloser: io.NopCloser(strings.NewReader("answer")), f: f}}, nil
}

func (f *fakeUpstream) calls() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.bodies) }

type closeCounter struct {
	io.ReadCloser
	f    *fakeUpstream
	once sync.Once
}

func (c *closeCounter) Close() error {
	c.once.Do(func() { c.f.mu.Lock(); c.f.open--; c.f.mu.Unlock() })
	return nil
}

// newTestTransport returns a Transport on an automatic fake clock (retry
// sleeps take no time; an open breaker is half-open at once), unless
// cfg.Clock is set.
func newTestTransport(t *testing.T, up http.RoundTripper, cfg TransportConfig) (*Transport, *resiliencetest.Clock) {
	t.Helper()
	clock, _ := cfg.Clock.(*resiliencetest.Clock)
	if clock == nil {
		clock = resiliencetest.NewAutoClock(t0)
	}
	cfg.Base, cfg.Clock = up, clock
	if cfg.Retry.Backoff == (Backoff{}) {
		cfg.Retry.Backoff = Backoff{Initial: time.Millisecond}
	}
	tr, err := NewTransport(cfg)
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	return tr, clock
}

func TestTransportRetriesOnlyIdempotentRequests(t *testing.T) {
	tests := []struct {
		method    string
		key       string
		body      io.Reader
		noGetBody bool
		wantCalls int
	}{
		{method: "GET", wantCalls: 3},
		{method: "PUT", body: strings.NewReader("payload"), wantCalls: 3},
		{method: "DELETE", wantCalls: 3},
		{method: "POST", body: strings.NewReader("payload"), wantCalls: 1},
		{method: "PATCH", body: strings.NewReader("payload"), wantCalls: 1},
		{method: "POST", key: "k-1", body: strings.NewReader("payload"), wantCalls: 3},
		{method: "POST", key: "k-2", body: strings.NewReader("payload"), noGetBody: true, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s key=%q getbody=%v", tt.method, tt.key, !tt.noGetBody), func(t *testing.T) {
			up := &fakeUpstream{statuses: []int{503, 502}}
			tr, _ := newTestTransport(t, up, TransportConfig{Breaker: BreakerConfig{MinCalls: 100}})
			req, _ := http.NewRequest(tt.method, "http://cart/items", tt.body)
			if tt.key != "" {
				req.Header.Set("Idempotency-Key", tt.key)
			}
			if tt.noGetBody {
				req.GetBody = nil
			}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			resp.Body.Close()
			if got := up.calls(); got != tt.wantCalls {
				t.Errorf("upstream calls = %d, want %d", got, tt.wantCalls)
			}
			wantStatus := map[int]int{1: 503, 3: 200}[tt.wantCalls]
			if resp.StatusCode != wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, wantStatus)
			}
			if tt.body != nil {
				for i, b := range up.bodies {
					if b != "payload" {
						t.Errorf("attempt %d sent body %q, want %q", i+1, b, "payload")
					}
				}
			}
			if up.open != 0 {
				t.Errorf("%d response bodies left open", up.open)
			}
		})
	}
}

func TestTransportReturnsLastFailedResponse(t *testing.T) {
	up := &fakeUpstream{statuses: []int{500, 500, 503, 503}}
	tr, _ := newTestTransport(t, up, TransportConfig{Breaker: BreakerConfig{MinCalls: 100}})
	resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://cart/", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 503 || up.calls() != 3 {
		t.Errorf("status %d after %d calls, want the 3rd attempt's 503", resp.StatusCode, up.calls())
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "answer" {
		t.Errorf("body = %q, want the upstream's", b)
	}
	if up.open != 1 {
		t.Errorf("open bodies = %d, want only the returned one", up.open)
	}
}

func TestTransportHonoursRetryAfterHeader(t *testing.T) {
	for _, value := range []string{"3", "date"} {
		t.Run(value, func(t *testing.T) {
			up := &fakeUpstream{statuses: []int{503}, header: http.Header{}}
			tr, clock := newTestTransport(t, up, TransportConfig{Breaker: BreakerConfig{MinCalls: 100}})
			if value == "date" {
				value = t0.Add(3 * time.Second).UTC().Format(http.TimeFormat)
			}
			up.header.Set("Retry-After", value)
			resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://cart/", nil))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := clock.Now().Sub(t0); resp.StatusCode != 200 || got != 3*time.Second {
				t.Errorf("status %d after waiting %v; want 200 after 3s", resp.StatusCode, got)
			}
		})
	}
}

func TestTransportBreakerPerHost(t *testing.T) {
	up := &fakeUpstream{statuses: []int{500}}
	tr, _ := newTestTransport(t, up, TransportConfig{Clock: resiliencetest.NewClock(t0),
		Breaker: BreakerConfig{MinCalls: 1}, Retry: RetryConfig{MaxAttempts: 1}})
	resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://cart/", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	body := &trackedBody{Reader: strings.NewReader("x")}
	req := httptest.NewRequest("PUT", "http://cart/", nil)
	req.Body = body
	_, err = tr.RoundTrip(req)
	if !errors.Is(err, ErrOpen) {
		t.Fatalf("second call to cart: err = %v, want ErrOpen", err)
	}
	if !body.closed || up.calls() != 1 {
		t.Errorf("rejected request: body closed = %v, upstream calls = %d; want true, 1", body.closed, up.calls())
	}
	resp, err = tr.RoundTrip(httptest.NewRequest("GET", "http://stock/", nil))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another host: %v, %v; want 200", resp, err)
	}
	resp.Body.Close()
	snaps := map[string]State{}
	for _, s := range tr.Snapshots() {
		snaps[s.Name] = s.State
	}
	if snaps["cart"] != StateOpen || snaps["stock"] != StateClosed {
		t.Errorf("breakers = %v, want cart open, stock closed", snaps)
	}
}

type trackedBody struct {
	io.Reader
	closed bool
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

func TestTransportAttemptTimeoutCoversBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // never finishes the body
	}))
	defer srv.Close()
	clock := resiliencetest.NewClock(t0)
	tr, err := NewTransport(TransportConfig{AttemptTimeout: time.Second, Clock: clock, Retry: RetryConfig{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	done := make(chan error)
	go func() { _, err := io.ReadAll(resp.Body); done <- err }()
	if err := clock.WaitTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := <-done; err == nil {
		t.Error("reading the body went on past the attempt timeout")
	}
	tr.cfg.Base.(*http.Transport).CloseIdleConnections()
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"Sun, 01 Jun 2025 12:00:30 GMT", 30 * time.Second, true},
		{"Sunday, 01-Jun-25 12:01:00 GMT", time.Minute, true}, // RFC 850
		{"Sun Jun  1 12:00:05 2025", 5 * time.Second, true},   // asctime
		{"Sun, 01 Jun 2025 11:00:00 GMT", 0, true},            // past
		{"99999999999999999999999", time.Duration(1<<62) / time.Second * time.Second, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "Sun, 01 Jun 2025 12:00:30 GMT", "1e9", "-0"} {
		f.Add(s)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if d, ok := ParseRetryAfter(s, now); d < 0 || (!ok && d != 0) {
			t.Errorf("ParseRetryAfter(%q) = %v, %v", s, d, ok)
		}
	})
}

func TestFormatRetryAfter(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "1", -time.Second: "1", 1500 * time.Millisecond: "2", 5 * time.Second: "5"} {
		if got := FormatRetryAfter(d); got != want {
			t.Errorf("FormatRetryAfter(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestProxyFailsFastWhileOpenAndRecovers(t *testing.T) {
	var mu sync.Mutex
	healthy, hits := false, 0
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits++
		if !healthy {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "cart "+r.URL.Path)
	}))
	defer upstream.Close()
	target, _ := url.Parse(upstream.URL)
	clock := resiliencetest.NewClock(t0)
	proxy, err := NewProxy(target, ProxyConfig{Transport: TransportConfig{
		Clock:   clock,
		Breaker: BreakerConfig{MinCalls: 2, OpenPeriod: fixed(10 * time.Second)},
		Retry:   RetryConfig{MaxAttempts: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	get := func() *http.Response {
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, httptest.NewRequest("GET", "/items", nil))
		return rec.Result()
	}
	for range 2 {
		if resp := get(); resp.StatusCode != 500 {
			t.Fatalf("while the upstream fails: status %d, want its 500", resp.StatusCode)
		}
	}
	for range 5 {
		resp := get()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "10" {
			t.Fatalf("while open: status %d, Retry-After %q; want 503, 10", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		d, err := problem.Read(resp)
		if err != nil || d.Status != 503 || d.Extensions["retryAfter"] != "10" {
			t.Fatalf("while open: problem %+v, %v", d, err)
		}
	}
	mu.Lock()
	if hits != 2 {
		t.Errorf("upstream hits while open = %d, want 2 (none while open)", hits)
	}
	healthy = true
	mu.Unlock()

	clock.Advance(10 * time.Second)
	resp := get()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "cart /items" {
		t.Errorf("after the open period: %d %q, want 200 from the upstream", resp.StatusCode, body)
	}
	if s := proxy.Breaker().State(); s != StateClosed {
		t.Errorf("breaker = %v, want closed after a good probe", s)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

func TestProxyErrors(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	target, _ := url.Parse(dead.URL)
	dead.Close() // nothing listens there now
	proxy, err := NewProxy(target, ProxyConfig{Transport: TransportConfig{Retry: RetryConfig{MaxAttempts: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	proxy.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	var d problem.Details
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || rec.Code != 502 || d.Status != 502 {
		t.Errorf("unreachable upstream: %d %s, want 502 problem details", rec.Code, rec.Body)
	}
	if _, err := NewProxy(&url.URL{Path: "/relative"}, ProxyConfig{}); err == nil {
		t.Error("NewProxy with a relative URL: nil error")
	}
}

// While half-open with its probe in flight, the proxy says how long the
// probe may take at most (its attempt timeout, or what is left of the
// breaker's half-open wait), not "1".
func TestProxyRetryAfterWhileHalfOpen(t *testing.T) {
	for _, tt := range []struct {
		name           string
		attemptTimeout time.Duration
		want           string
	}{
		{"attempt timeout", 8 * time.Second, "8"},
		{"half-open wait", 0, "57"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			arrived := make(chan struct{}, 1)
			upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/fail" {
					http.Error(w, "down", http.StatusInternalServerError)
					return
				}
				arrived <- struct{}{}
				<-release
			}))
			defer upstream.Close()
			base := &http.Transport{}
			defer base.CloseIdleConnections()
			target, _ := url.Parse(upstream.URL)
			clock := resiliencetest.NewClock(t0)
			proxy, err := NewProxy(target, ProxyConfig{Transport: TransportConfig{
				Base: base, Clock: clock, AttemptTimeout: tt.attemptTimeout,
				Breaker: BreakerConfig{MinCalls: 1, HalfOpenMaxWait: time.Minute, OpenPeriod: fixed(time.Second)},
				Retry:   RetryConfig{MaxAttempts: 1},
			}})
			if err != nil {
				t.Fatal(err)
			}
			proxy.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/fail", nil))
			clock.Advance(time.Second) // half-open
			probed := make(chan int)
			go func() {
				rec := httptest.NewRecorder()
				proxy.ServeHTTP(rec, httptest.NewRequest("GET", "/slow", nil))
				probed <- rec.Code
			}()
			<-arrived
			clock.Advance(3 * time.Second)
			rec := httptest.NewRecorder()
			proxy.ServeHTTP(rec, httptest.NewRequest("GET", "/other", nil))
			close(release)
			if code := <-probed; code != 200 {
				t.Errorf("probe: status %d, want 200", code)
			}
			if got := rec.Header().Get("Retry-After"); rec.Code != 503 || got != tt.want {
				t.Errorf("while the probe runs: %d, Retry-After %q; want 503, %q", rec.Code, got, tt.want)
			}
		})
	}
}

func TestProxyForcedOpen(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("a forced-open proxy called the upstream")
	}))
	defer upstream.Close()
	target, _ := url.Parse(upstream.URL)
	proxy, err := NewProxy(target, ProxyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	proxy.Breaker().ForceOpen()
	rec := httptest.NewRecorder()
	proxy.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	d, err := problem.Read(rec.Result())
	if err != nil || rec.Code != 503 || d.Status != 503 || rec.Header().Get("Retry-After") != "" {
		t.Errorf("forced open: %d, Retry-After %q, problem %+v, %v; want 503 problem details without Retry-After",
			rec.Code, rec.Header().Get("Retry-After"), d, err)
	}
}

// The transport keeps at most MaxHosts breakers, dropping the least
// recently used closed one first, and looking a breaker up creates none.
func TestTransportBoundsItsBreakers(t *testing.T) {
	up := &fakeUpstream{statuses: []int{500}}
	tr, _ := newTestTransport(t, up, TransportConfig{MaxHosts: 2, Clock: resiliencetest.NewClock(t0),
		Breaker: BreakerConfig{MinCalls: 1}, Retry: RetryConfig{MaxAttempts: 1}})
	get := func(host string) {
		t.Helper()
		resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://"+host+"/", nil))
		if err == nil {
			resp.Body.Close()
		}
	}
	get("a") // fails: a's breaker opens
	get("b")
	get("c") // full: b goes (the least recently used closed one), not a
	if _, ok := tr.Breaker("b"); ok {
		t.Error("b is still kept, want it dropped")
	}
	if b, ok := tr.Breaker("a"); !ok || b.State() != StateOpen {
		t.Errorf("a: kept %v, want kept and open (an open breaker is dropped last)", ok)
	}
	if _, ok := tr.Breaker("never-seen"); ok || len(tr.Snapshots()) != 2 {
		t.Errorf("looking up an unknown host made a breaker: %d kept", len(tr.Snapshots()))
	}
	for i := range 1000 {
		get(fmt.Sprintf("h%d", i))
	}
	if n := len(tr.Snapshots()); n != 2 {
		t.Errorf("after 1,000 hosts: %d breakers kept, want 2", n)
	}
}
