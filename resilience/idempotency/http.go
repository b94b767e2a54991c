package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/recado-dev/recado/resilience/problem"
)

// Header is the request header that carries the key.
const Header = "Idempotency-Key"

// ReplayedHeader is set to "true" on a response replayed from the store.
const ReplayedHeader = "Idempotent-Replayed"

// DefaultMaxRequestBody is the default of [MiddlewareConfig.MaxRequestBody].
const DefaultMaxRequestBody = 1 << 20

// MiddlewareConfig sets up [Middleware]. The zero value is ready to use.
type MiddlewareConfig struct {
	// Scope returns the identity of the caller (a user, an API client), whose
	// keys are its own: the same key sent by two callers are two keys. An
	// error answers 403. Nil puts every caller in one scope, "": then a
	// caller that guesses another's key gets its response, so set it
	// wherever callers are not one party.
	Scope func(r *http.Request) (string, error)
	// Required reports whether the request must carry a key: one without
	// gets 400. Nil makes keys optional: a request without one passes
	// through.
	Required func(r *http.Request) bool
	// Methods are the methods keys apply to; requests with other methods
	// pass through, key or not. Nil means POST and PATCH, the methods that
	// are not idempotent by themselves.
	Methods []string
	// MaxRequestBody is the largest request body read (it is part of the
	// fingerprint), in bytes; a larger one gets 413. Default 1 MiB.
	MaxRequestBody int64
	// Retry reports whether a response with status is a failure worth
	// retrying: its key is released instead of completed, and a retry runs
	// the request again. Nil means 408, 429 and every 5xx. Such responses
	// must leave no effect behind.
	Retry func(status int) bool
	// ProblemType is the "type" of the problem details bodies, a link to the
	// documentation of how keys are used (the draft asks for one); empty
	// means about:blank.
	ProblemType string
	// Logger receives what the client cannot be told: a response that could
	// not be stored, a key that could not be released. Nil discards it.
	Logger *slog.Logger
}

// Middleware applies idempotency keys to HTTP requests, as the IETF draft
// "The Idempotency-Key HTTP Header Field" describes:
//
//   - The key is the Idempotency-Key header, a structured-field string
//     ("8e03978e-40d5-43e8-bc93-6894a57f9324", quoted; a bare value is
//     accepted too) of 1 to 255 printable ASCII characters. A malformed key,
//     or a key sent twice, gets 400; a missing key gets 400 where
//     [MiddlewareConfig.Required] says the endpoint requires one.
//   - The fingerprint is a SHA-256 digest of the method, the request target
//     (path and query) and the body.
//   - The first request with a key runs; its status, headers and body are
//     stored (completed), and a retry with the same key and fingerprint gets
//     them again, with the header Idempotent-Replayed: true, without running
//     the handler.
//   - A request with a key whose first request is still running gets 409; a
//     request that reuses a key with another fingerprint gets 422.
//   - A response that is a failure worth retrying ([MiddlewareConfig.Retry])
//     releases the key, and so does a handler that panics: a retry runs the
//     request again. A response too large to store is sent, and later
//     requests with its key get a 500 that says so: the request was done,
//     its response was not kept.
//
// Errors are RFC 9457 problem details (package problem). If the store fails,
// the request gets 503 and the handler does not run.
func Middleware(s *Store, cfg MiddlewareConfig) func(http.Handler) http.Handler {
	if cfg.Methods == nil {
		cfg.Methods = []string{http.MethodPost, http.MethodPatch}
	}
	if cfg.MaxRequestBody <= 0 {
		cfg.MaxRequestBody = DefaultMaxRequestBody
	}
	if cfg.Retry == nil {
		cfg.Retry = func(status int) bool {
			return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return func(next http.Handler) http.Handler {
		return &middleware{s: s, cfg: cfg, next: next}
	}
}

type middleware struct {
	s    *Store
	cfg  MiddlewareConfig
	next http.Handler
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !slices.Contains(m.cfg.Methods, r.Method) {
		m.next.ServeHTTP(w, r)
		return
	}
	values := r.Header.Values(Header)
	if len(values) == 0 {
		if m.cfg.Required != nil && m.cfg.Required(r) {
			m.problem(w, http.StatusBadRequest, "Idempotency-Key is missing",
				"This operation is idempotent and it requires correct usage of Idempotency Key.")
			return
		}
		m.next.ServeHTTP(w, r)
		return
	}
	if len(values) > 1 {
		m.problem(w, http.StatusBadRequest, "Idempotency-Key is malformed", "The request carries more than one Idempotency-Key.")
		return
	}
	key, err := ParseKey(values[0])
	if err != nil {
		m.problem(w, http.StatusBadRequest, "Idempotency-Key is malformed", err.Error())
		return
	}
	scope := ""
	if m.cfg.Scope != nil {
		if scope, err = m.cfg.Scope(r); err != nil {
			m.problem(w, http.StatusForbidden, "Caller not identified", "The caller's identity, which scopes its idempotency keys, could not be established.")
			return
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, m.cfg.MaxRequestBody+1))
	if err != nil {
		m.problem(w, http.StatusBadRequest, "Request body unreadable", err.Error())
		return
	}
	if int64(len(body)) > m.cfg.MaxRequestBody {
		m.problem(w, http.StatusRequestEntityTooLarge, "Request body too large",
			fmt.Sprintf("A request with an Idempotency-Key may have a body of at most %d bytes.", m.cfg.MaxRequestBody))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	c, err := m.s.Claim(r.Context(), nil, scope, key, Fingerprint(r.Method, r.URL.RequestURI(), body))
	if err != nil {
		if errors.Is(err, ErrInvalid) { // the scope is beyond the limits
			m.problem(w, http.StatusBadRequest, "Idempotency-Key unusable", err.Error())
			return
		}
		m.cfg.Logger.ErrorContext(r.Context(), "idempotency: claim failed", "key", key, "err", err)
		m.problem(w, http.StatusServiceUnavailable, "Idempotency keys unavailable", "The store of idempotency keys failed; try again later.")
		return
	}
	switch c.Status {
	case Mismatch:
		m.problem(w, http.StatusUnprocessableEntity, "Idempotency-Key is already used",
			"This operation is idempotent and it requires correct usage of Idempotency Key. Idempotency Key MUST not be reused across different payloads of this operation.")
	case InProgress:
		m.problem(w, http.StatusConflict, "A request is outstanding for this Idempotency-Key",
			"A request with the same Idempotency-Key for the same operation is being processed or is outstanding.")
	case Completed:
		m.replay(w, r, c.Response)
	default:
		m.run(w, r, c)
	}
}

// run runs the handler for the claim c and completes or releases the key.
func (m *middleware) run(w http.ResponseWriter, r *http.Request, c Claim) {
	ctx := context.WithoutCancel(r.Context()) // store the outcome even if the client has gone
	rec := &recorder{w: w, limit: m.s.MaxResponse()}
	done := false
	defer func() {
		if !done { // the handler panicked
			if err := m.s.Release(ctx, nil, c); err != nil {
				m.cfg.Logger.ErrorContext(ctx, "idempotency: release after a panic failed", "key", c.Key, "err", err)
			}
		}
	}()
	m.next.ServeHTTP(rec, r)
	done = true
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if m.cfg.Retry(rec.status) {
		if err := m.s.Release(ctx, nil, c); err != nil {
			m.cfg.Logger.ErrorContext(ctx, "idempotency: release failed", "key", c.Key, "status", rec.status, "err", err)
		}
		return
	}
	var stored []byte
	if !rec.overflow {
		stored, _ = json.Marshal(storedResponse{Status: rec.status, Header: rec.header, Body: rec.body})
	}
	err := ErrTooLarge
	if stored != nil {
		err = m.s.Complete(ctx, nil, c, stored)
	}
	if errors.Is(err, ErrTooLarge) {
		m.cfg.Logger.WarnContext(ctx, "idempotency: response too large to store", "key", c.Key, "limit", m.s.MaxResponse())
		err = m.s.Complete(ctx, nil, c, m.tooLarge(rec))
	}
	if err != nil {
		m.cfg.Logger.ErrorContext(ctx, "idempotency: storing the response failed; the key is freed after the lock timeout",
			"key", c.Key, "err", err)
	}
}

// tooLarge returns the response stored in place of one too large to keep.
func (m *middleware) tooLarge(rec *recorder) []byte {
	d := problem.New(http.StatusInternalServerError, fmt.Sprintf(
		"The request with this Idempotency-Key was processed (status %d), but its response was larger than the %d bytes kept for replays.",
		rec.status, m.s.MaxResponse()))
	d.Title, d.Type = "Response not kept", m.cfg.ProblemType
	d.Extensions = map[string]any{"originalStatus": rec.status}
	body, _ := json.Marshal(d)
	out, _ := json.Marshal(storedResponse{Status: d.Status,
		Header: http.Header{"Content-Type": {problem.ContentType}}, Body: append(body, '\n')})
	return out
}

// replay writes a stored response.
func (m *middleware) replay(w http.ResponseWriter, r *http.Request, stored []byte) {
	var resp storedResponse
	if err := json.Unmarshal(stored, &resp); err != nil || resp.Status < 100 || resp.Status > 999 {
		m.cfg.Logger.ErrorContext(r.Context(), "idempotency: stored response unreadable", "err", err)
		m.problem(w, http.StatusInternalServerError, "Stored response unreadable", "The response stored for this Idempotency-Key cannot be read.")
		return
	}
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	h.Set(ReplayedHeader, "true")
	w.WriteHeader(resp.Status)
	w.Write(resp.Body)
}

func (m *middleware) problem(w http.ResponseWriter, status int, title, detail string) {
	d := problem.New(status, detail)
	d.Title, d.Type = title, m.cfg.ProblemType
	problem.Write(w, d)
}

// storedResponse is how the middleware keeps a response in the store.
type storedResponse struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
}

// recorder passes a response through and keeps a copy of it, up to limit
// bytes of body.
type recorder struct {
	w        http.ResponseWriter
	limit    int
	wrote    bool
	status   int
	header   http.Header
	body     []byte
	overflow bool
}

func (rec *recorder) Header() http.Header { return rec.w.Header() }

func (rec *recorder) WriteHeader(status int) {
	if rec.wrote {
		return
	}
	if status < 200 { // informational: passes through, not the response
		rec.w.WriteHeader(status)
		return
	}
	rec.wrote, rec.status = true, status
	rec.header = rec.w.Header().Clone()
	rec.header.Del("Date")
	rec.w.WriteHeader(status)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if !rec.overflow {
		if len(rec.body)+len(b) > rec.limit {
			rec.overflow, rec.body = true, nil
		} else {
			rec.body = append(rec.body, b...)
		}
	}
	return rec.w.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush,
// deadlines).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.w }

// Fingerprint returns the fingerprint [Middleware] claims keys with: a
// SHA-256 digest of the method, the request target and the body.
func Fingerprint(method, target string, body []byte) []byte {
	h := sha256.New()
	io.WriteString(h, method)
	h.Write([]byte{0})
	io.WriteString(h, target)
	h.Write([]byte{0})
	h.Write(body)
	return h.Sum(nil)
}

// ErrMalformedKey is what [ParseKey] returns for a value that is not a key.
var ErrMalformedKey = errors.New("idempotency: malformed Idempotency-Key")

// ParseKey reads the value of an Idempotency-Key header: a structured-field
// string (RFC 8941: in double quotes, with \" and \\ escapes, printable
// ASCII), or, leniently, a bare value of visible ASCII characters. The key is
// 1 to [MaxKeyLen] characters.
func ParseKey(v string) (string, error) {
	v = strings.Trim(v, " \t")
	var key string
	if strings.HasPrefix(v, `"`) {
		var b strings.Builder
		i := 1
		for ; i < len(v); i++ {
			c := v[i]
			if c == '"' {
				break
			}
			if c == '\\' {
				i++
				if i == len(v) || (v[i] != '"' && v[i] != '\\') {
					return "", fmt.Errorf("%w: a backslash escapes only \" and \\", ErrMalformedKey)
				}
				c = v[i]
			} else if c < 0x20 || c > 0x7e {
				return "", fmt.Errorf("%w: only printable ASCII characters are allowed", ErrMalformedKey)
			}
			b.WriteByte(c)
		}
		if i >= len(v) {
			return "", fmt.Errorf("%w: the closing quote is missing", ErrMalformedKey)
		}
		if rest := v[i+1:]; rest != "" && !strings.HasPrefix(rest, ";") {
			return "", fmt.Errorf("%w: unexpected %q after the key", ErrMalformedKey, rest)
		}
		key = b.String()
	} else {
		for i := 0; i < len(v); i++ {
			if v[i] <= 0x20 || v[i] > 0x7e {
				return "", fmt.Errorf("%w: only visible ASCII characters are allowed in a key without quotes", ErrMalformedKey)
			}
		}
		key = v
	}
	switch {
	case key == "":
		return "", fmt.Errorf("%w: the key is empty", ErrMalformedKey)
	case len(key) > MaxKeyLen:
		return "", fmt.Errorf("%w: the key has %d characters, more than %d", ErrMalformedKey, len(key), MaxKeyLen)
	}
	return key, nil
}
