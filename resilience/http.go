package resilience

import (
	"container/list"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TransportConfig configures a Transport. The zero value wraps
// http.DefaultTransport with a default breaker per host and retries
// idempotent requests up to 3 attempts in all.
type TransportConfig struct {
	// Base makes the requests. Default http.DefaultTransport.
	Base http.RoundTripper
	// Breaker is the template of each host's breaker; Name is set to the
	// host (host:port as in the URL).
	Breaker BreakerConfig
	// Retry applies to idempotent requests only: GET, HEAD, OPTIONS, TRACE,
	// PUT, DELETE, or any request with an Idempotency-Key header, and only if
	// the body can be sent again (no body, or Request.GetBody set, as
	// http.NewRequest does for in-memory bodies). MaxAttempts 1 disables it.
	Retry RetryConfig
	// AttemptTimeout bounds each attempt, from sending the request until the
	// response body is closed. 0: none (the request's context still applies).
	AttemptTimeout time.Duration
	// IsFailure says which responses count as failures of the callee: they
	// are retried (if the request may be) and count against the breaker.
	// Default: 5xx other than 501 and 505, and 429 Too Many Requests.
	IsFailure func(*http.Response) bool
	// MaxHosts bounds the breakers the transport keeps, one per host: when a
	// new host would pass it, the least recently used closed breaker is
	// dropped (or, if none is closed, the least recently used one). A host
	// whose breaker was dropped starts afresh, closed. Default 1024.
	MaxHosts int
	// Clock is the one clock of the transport: its breakers', its
	// back-off's and its attempt timeouts'. Breaker.Clock must be left nil.
	// Default the system clock.
	Clock Clock
}

// Transport is an http.RoundTripper that puts a circuit breaker in front of
// each host and retries idempotent requests with back-off. A failed
// response (see IsFailure) is returned as the response once the retries are
// spent; a breaker rejection is an error that Is ErrOpen.
//
// The zero Transport is ready to use, with the defaults of a zero
// TransportConfig; NewTransport makes one from a validated config.
type Transport struct {
	once  sync.Once
	cfg   TransportConfig // read only after init
	retry *Retry

	mu       sync.Mutex
	breakers map[string]*list.Element // of *Breaker, in recent: most recently used first
	recent   list.List
}

// NewTransport returns a Transport.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	if cfg.Breaker.Clock != nil {
		return nil, errors.New("resilience: set TransportConfig.Clock, not TransportConfig.Breaker.Clock: a transport has one clock")
	}
	if err := cfg.Breaker.Validate(); err != nil {
		return nil, err
	}
	if cfg.AttemptTimeout < 0 {
		return nil, errors.New("resilience: TransportConfig.AttemptTimeout must be >= 0")
	}
	if cfg.MaxHosts < 0 {
		return nil, errors.New("resilience: TransportConfig.MaxHosts must be >= 0")
	}
	if err := cfg.Retry.Validate(); err != nil {
		return nil, err
	}
	t := &Transport{cfg: cfg}
	t.init()
	return t, nil
}

// init fills in the defaults, once: for NewTransport, and for a zero
// Transport on its first use.
func (t *Transport) init() {
	t.once.Do(func() {
		t.cfg.Clock = clockOr(t.cfg.Clock)
		t.cfg.Breaker.Clock = t.cfg.Clock
		if t.cfg.Base == nil {
			t.cfg.Base = http.DefaultTransport
		}
		if t.cfg.IsFailure == nil {
			t.cfg.IsFailure = IsFailureStatus
		}
		if t.cfg.MaxHosts == 0 {
			t.cfg.MaxHosts = 1024
		}
		t.retry = &Retry{cfg: t.cfg.Retry}
		t.breakers = make(map[string]*list.Element)
	})
}

// IsFailureStatus is the default TransportConfig.IsFailure: 429 and the 5xx
// statuses that say the server is unable now (not 501 Not Implemented or
// 505 HTTP Version Not Supported, which no retry will change).
func IsFailureStatus(resp *http.Response) bool {
	switch c := resp.StatusCode; {
	case c == http.StatusTooManyRequests:
		return true
	case c == http.StatusNotImplemented || c == http.StatusHTTPVersionNotSupported:
		return false
	default:
		return c >= 500
	}
}

// Breaker returns the breaker of host (as in URL.Host) if the transport
// keeps one: for an operator's ForceOpen, ForceClosed or Release. It
// creates none.
func (t *Transport) Breaker(host string) (*Breaker, bool) {
	t.init()
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.breakers[host]; e != nil {
		return e.Value.(*Breaker), true
	}
	return nil, false
}

// breaker returns the breaker of host, making it if need be (and dropping
// another past MaxHosts).
func (t *Transport) breaker(host string) *Breaker {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.breakers[host]; e != nil {
		t.recent.MoveToFront(e)
		return e.Value.(*Breaker)
	}
	if len(t.breakers) >= t.cfg.MaxHosts {
		t.dropLocked()
	}
	cfg := t.cfg.Breaker
	cfg.Name = host
	b, _ := NewBreaker(cfg) // the config was validated by NewTransport
	t.breakers[host] = t.recent.PushFront(b)
	return b
}

// dropLocked forgets the least recently used closed breaker, or the least
// recently used one if none is closed.
func (t *Transport) dropLocked() {
	victim := t.recent.Back()
	for e := victim; e != nil; e = e.Prev() {
		if e.Value.(*Breaker).State() == StateClosed {
			victim = e
			break
		}
	}
	delete(t.breakers, t.recent.Remove(victim).(*Breaker).Name())
}

// Snapshots returns a snapshot of every host's breaker, most recently used
// first.
func (t *Transport) Snapshots() []BreakerSnapshot {
	t.init()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]BreakerSnapshot, 0, len(t.breakers))
	for e := t.recent.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(*Breaker).Snapshot())
	}
	return out
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.init()
	p := Pipeline{Breaker: t.breaker(req.URL.Host)} // on the breaker's clock, the transport's
	if replayable(req) {
		p.Retry = t.retry
	}
	var (
		held  *http.Response // the last failed response: the answer if retries end
		tries int
	)
	resp, err := Do(req.Context(), &p, func(ctx context.Context) (*http.Response, error) {
		tries++
		if held != nil {
			discard(held)
			held = nil
		}
		resp, err := t.attempt(ctx, req, tries)
		if err != nil {
			return nil, err
		}
		if t.cfg.IsFailure(resp) {
			held = resp
			return nil, failedResponse(resp, t.cfg.Clock.Now())
		}
		return resp, nil
	})
	if tries == 0 && req.Body != nil {
		req.Body.Close() // a RoundTripper must close the body, even unsent
	}
	if held != nil {
		var fe *failureStatusError
		if errors.As(err, &fe) {
			return held, nil
		}
		discard(held)
	}
	return resp, err
}

// attempt sends req once; from the second try on, with a fresh body.
func (t *Transport) attempt(ctx context.Context, req *http.Request, try int) (*http.Response, error) {
	var tc *deadlineCtx
	if t.cfg.AttemptTimeout > 0 {
		tc = newDeadlineCtx(ctx, t.cfg.Clock, t.cfg.AttemptTimeout)
		ctx = tc
	}
	r := req.WithContext(ctx)
	if try > 1 && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return nil, MarkPermanent(err)
		}
		r.Body = body
	}
	resp, err := t.cfg.Base.RoundTrip(r)
	if tc == nil {
		return resp, err
	}
	if err != nil {
		if tc.timedOut() {
			err = &timeoutError{err: err, d: t.cfg.AttemptTimeout}
		}
		tc.release()
		return nil, err
	}
	body := &releasingBody{ReadCloser: resp.Body, ctx: tc}
	resp.Body = body
	if w, ok := body.ReadCloser.(io.Writer); ok {
		// A protocol switch (101): the body is the connection, and
		// httputil.ReverseProxy needs it writable.
		resp.Body = &releasingConn{releasingBody: body, w: w}
	}
	return resp, nil
}

// releasingBody ends an attempt's context when its body is closed, so the
// attempt timeout covers reading the body too, and its timer is freed.
type releasingBody struct {
	io.ReadCloser
	ctx *deadlineCtx
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.ctx.release()
	return err
}

// releasingConn is releasingBody for an upgraded connection: writes pass
// through too.
type releasingConn struct {
	*releasingBody
	w io.Writer
}

func (c *releasingConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// CloseWrite half-closes the connection where the transport's can (as
// net/http's can), so the proxy passes a client's end of input on; where it
// cannot, it closes the connection, which ends the exchange as the proxy
// would have.
func (c *releasingConn) CloseWrite() error {
	if cw, ok := c.w.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
	default:
		if req.Header.Get("Idempotency-Key") == "" {
			return false
		}
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// discard drains a little of a response body, so the connection can be
// reused, and closes it.
func discard(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
}

// failureStatusError is how a failed response travels through the
// pipeline: it counts against the breaker, is retried as transient, and
// carries the response's Retry-After.
type failureStatusError struct{ status int }

func (e *failureStatusError) Error() string {
	return "resilience: upstream answered " + strconv.Itoa(e.status) + " " + http.StatusText(e.status)
}

func failedResponse(resp *http.Response, now time.Time) error {
	err := error(&failureStatusError{resp.StatusCode})
	if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
		err = WithRetryAfter(err, d)
	}
	return err
}

// ParseRetryAfter reads a Retry-After header value, either delay-seconds or
// an HTTP-date (RFC 9110 section 10.2.3), as a delay from now. A date in
// the past is a delay of 0. ok is false if the value is empty or invalid.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if !errors.Is(err, strconv.ErrRange) {
				return 0, false
			}
			secs = 1 << 62
		}
		return time.Duration(min(secs, uint64(1<<62)/uint64(time.Second))) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(at.Sub(now), 0), true
}

// FormatRetryAfter renders d as Retry-After delay-seconds, rounded up and
// at least 1.
func FormatRetryAfter(d time.Duration) string {
	secs := (d + time.Second - 1) / time.Second
	return strconv.FormatInt(int64(max(secs, 1)), 10)
}
