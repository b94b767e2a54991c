package resilience

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/recado-dev/recado/resilience/problem"
)

// ProxyConfig configures a Proxy.
type ProxyConfig struct {
	// Transport is the policy between the proxy and its target: a breaker
	// for the target host, retry for idempotent requests, attempt timeout.
	Transport TransportConfig
	// Logger receives the proxy's errors at debug level (upstream errors)
	// and warn level (failures copying a response). Default: none.
	Logger *slog.Logger
}

// Proxy is a reverse proxy in front of one service, with a circuit breaker
// and retry between them: while the service fails, the proxy answers at
// once with 503 Service Unavailable, a Retry-After header and a problem
// details body, and stops sending it traffic until a probe succeeds.
type Proxy struct {
	rp        *httputil.ReverseProxy
	transport *Transport
	breaker   *Breaker
	logger    *slog.Logger
}

// NewProxy returns a Proxy that forwards every request to target (its
// path is joined in front of the request's, as httputil.ProxyRequest.SetURL
// does; X-Forwarded-* headers are set).
func NewProxy(target *url.URL, cfg ProxyConfig) (*Proxy, error) {
	if target == nil || target.Host == "" {
		return nil, errors.New("resilience: NewProxy needs an absolute target URL")
	}
	t, err := NewTransport(cfg.Transport)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{transport: t, breaker: t.breaker(target.Host), logger: logger}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport:    t,
		ErrorHandler: p.fail,
		ErrorLog:     log.New(io.Discard, "", 0),
	}
	if cfg.Logger != nil {
		p.rp.ErrorLog = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)
	}
	return p, nil
}

// ServeHTTP implements http.Handler. A zero Proxy has no target: it
// answers 500 with a problem details body.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.rp == nil {
		problem.Write(w, problem.New(http.StatusInternalServerError, "the proxy has no target: make it with resilience.NewProxy"))
		return
	}
	p.rp.ServeHTTP(w, r)
}

// Transport returns the proxy's transport.
func (p *Proxy) Transport() *Transport { return p.transport }

// Breaker returns the breaker in front of the target: for its Snapshot, and
// for an operator's ForceOpen, ForceClosed and Release.
func (p *Proxy) Breaker() *Breaker { return p.breaker }

// retryAfter is the Retry-After of a rejection: while open, the rest of
// the open period; while half-open, how long the probes in flight may still
// take (the attempt timeout, if shorter than what is left of the breaker's
// half-open wait).
func (p *Proxy) retryAfter(open *OpenError) string {
	wait := open.Until.Sub(p.transport.cfg.Clock.Now())
	if t := p.transport.cfg.AttemptTimeout; open.State == StateHalfOpen && t > 0 {
		wait = min(wait, t)
	}
	return FormatRetryAfter(wait)
}

// fail answers a request the upstream did not: 503 with Retry-After while
// the breaker is open or half-open (without it when forced open), 504 when
// the attempt timed out, 502 otherwise.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	var open *OpenError
	var d problem.Details
	switch {
	case errors.As(err, &open) && open.State == StateForcedOpen:
		// No Retry-After: an operator decides when calls resume.
		d = problem.New(http.StatusServiceUnavailable, "calls to the upstream service are suspended by an operator")
	case errors.As(err, &open):
		wait := p.retryAfter(open)
		w.Header().Set("Retry-After", wait)
		d = problem.New(http.StatusServiceUnavailable, "the upstream service is failing; calls to it are suspended")
		d.Extensions = map[string]any{"retryAfter": wait}
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		d = problem.New(http.StatusGatewayTimeout, "the upstream service did not answer in time")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return // the client has gone: nobody to answer
	default:
		d = problem.New(http.StatusBadGateway, "the upstream service could not be reached")
	}
	p.logger.DebugContext(r.Context(), "resilience: proxy error", "url", r.URL.String(), "status", d.Status, "err", err)
	problem.Write(w, d)
}
