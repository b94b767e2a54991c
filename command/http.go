package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/problem"
)

// Defaults of [HTTPConfig].
const (
	DefaultHTTPPrefix = "/commands/"
	DefaultMaxBody    = 1 << 20
	DefaultRetryAfter = time.Second
	DefaultMaxWait    = 30 * time.Second
)

// HTTPConfig sets up the HTTP adapter. The zero value is ready to use.
type HTTPConfig struct {
	// Prefix is the path the handler serves under, with a slash at each
	// end: commands are posted to {Prefix}{type} and their status read at
	// {Prefix}{type}/{id}. Default "/commands/".
	Prefix string
	// MaxBody is the largest request body read, in bytes; a larger one
	// gets 413. Default 1 MiB.
	MaxBody int64
	// Scope returns the identity of the caller (a user, an API client):
	// its idempotency keys are its own, so the same key sent by two callers
	// are two commands. An error answers 403. Nil puts every caller in one
	// scope: set it wherever callers are not one party.
	Scope func(r *http.Request) (string, error)
	// Metadata returns what a request sends along with its command (the
	// events the command writes carry it). Default: the W3C trace context
	// headers traceparent and tracestate.
	Metadata func(r *http.Request) recado.Metadata
	// RetryAfter is what the Retry-After header of a 202, of a status not
	// final yet and of a 503 says. Default 1 second.
	RetryAfter time.Duration
	// MaxWait caps how long a status request with ?wait=N (seconds) waits
	// for the command to end. Default 30 seconds.
	MaxWait time.Duration
	// Logger receives what the client is not told: why the store failed.
	// Nil discards it.
	Logger *slog.Logger
}

// NewHTTPHandler returns an http.Handler that takes the commands of q over
// HTTP with plain net/http; mount it at its prefix (http.ServeMux,
// gorilla/mux's PathPrefix, ...):
//
//   - POST {prefix}{type} with a JSON body (Content-Type application/json)
//     accepts a command of the registered type: 202 Accepted, a Location
//     header naming the status resource, Retry-After, and the receipt as
//     JSON. The header Idempotency-Key (a structured-field string, as the
//     IETF draft says) makes it idempotent: the same key with the same
//     command gets the same receipt (and Idempotent-Replayed: true).
//   - GET {prefix}{type}/{id} returns the command's status as JSON: 200, or
//     303 See Other to the result's location once a command whose handler
//     names one has succeeded. While the command is not done, Retry-After
//     says when to ask again; ?wait=N waits up to N seconds for it to end.
//
// Errors are RFC 9457 problem details: 400 for a malformed body or key,
// 403 when Scope fails, 404 for an unknown command type or ID, 405, 413 for
// a body beyond MaxBody, 415 for a body that is not JSON, 422 for a command
// that does not validate or an idempotency key used for another command,
// and 503 with Retry-After when the store is unavailable: then nothing was
// accepted.
func NewHTTPHandler(q *Queue, cfg HTTPConfig) http.Handler {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultHTTPPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.Metadata == nil {
		cfg.Metadata = func(r *http.Request) recado.Metadata {
			return recado.Metadata{TraceParent: r.Header.Get("traceparent"), TraceState: r.Header.Get("tracestate")}
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &httpHandler{q: q, cfg: cfg}
}

type httpHandler struct {
	q   *Queue
	cfg HTTPConfig
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, h.cfg.Prefix)
	parts := strings.Split(rest, "/")
	switch {
	case !ok || rest == "" || len(parts) > 2 || parts[0] == "" || len(parts) == 2 && parts[1] == "":
		h.problem(w, http.StatusNotFound, "Not found", "No such command resource: "+r.URL.Path)
	case len(parts) == 1 && r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		h.problem(w, http.StatusMethodNotAllowed, "Method not allowed", "Commands are sent with POST.")
	case len(parts) == 1:
		h.accept(w, r, parts[0])
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		h.problem(w, http.StatusMethodNotAllowed, "Method not allowed", "A command's status is read with GET.")
	default:
		h.status(w, r, parts[0], parts[1])
	}
}

// receiptJSON is the body of a 202.
type receiptJSON struct {
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	Status   string    `json:"status"`
	Location string    `json:"location"`
	Accepted time.Time `json:"accepted"`
}

func (h *httpHandler) accept(w http.ResponseWriter, r *http.Request, typ string) {
	rt, err := h.q.bus.named(typ)
	if err != nil {
		h.problem(w, http.StatusNotFound, "Unknown command", "No command type is named "+strconv.Quote(typ)+".")
		return
	}
	v, opts, status, detail := h.decode(r, rt)
	if status != 0 {
		if status == http.StatusUnsupportedMediaType {
			w.Header().Set("Accept-Post", "application/json")
		}
		h.problem(w, status, http.StatusText(status), detail)
		return
	}
	rc, err := h.q.accept(r.Context(), rt, v, opts)
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrMismatch):
		title := "Invalid command"
		if errors.Is(err, ErrMismatch) {
			title = "Idempotency-Key is already used"
		}
		h.problem(w, http.StatusUnprocessableEntity, title, unwrapOp(err))
		return
	case errors.Is(err, ErrTooLarge):
		h.problem(w, http.StatusRequestEntityTooLarge, "Command too large", unwrapOp(err))
		return
	case err != nil:
		h.cfg.Logger.ErrorContext(r.Context(), "command: accept failed", "type", typ, "err", err)
		h.unavailable(w, "The command store is unavailable: nothing was accepted. Try again later.")
		return
	}
	loc := h.cfg.Prefix + rc.Type + "/" + rc.ID
	hd := w.Header()
	hd.Set("Location", loc)
	hd.Set("Retry-After", seconds(h.cfg.RetryAfter))
	if rc.Existing {
		hd.Set(idempotency.ReplayedHeader, "true")
	}
	h.json(w, http.StatusAccepted, receiptJSON{ID: rc.ID, Type: rc.Type, Status: rc.State.String(), Location: loc, Accepted: rc.Accepted})
}

// decode reads a command of rt's type from r, with its options; status is
// not 0 for a request that cannot be accepted, with detail saying why.
func (h *httpHandler) decode(r *http.Request, rt *route) (v any, opts []Option, status int, detail string) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return nil, nil, http.StatusUnsupportedMediaType, "A command is a JSON body, with Content-Type application/json."
	}
	md := h.cfg.Metadata(r)
	if keys := r.Header.Values(idempotency.Header); len(keys) > 0 {
		if len(keys) > 1 {
			return nil, nil, http.StatusBadRequest, "The request carries more than one Idempotency-Key."
		}
		key, err := idempotency.ParseKey(keys[0])
		if err != nil {
			return nil, nil, http.StatusBadRequest, "Idempotency-Key is malformed: " + err.Error()
		}
		scope := ""
		if h.cfg.Scope != nil {
			if scope, err = h.cfg.Scope(r); err != nil {
				return nil, nil, http.StatusForbidden, "The caller's identity, which scopes its idempotency keys, could not be established."
			}
		}
		opts = append(opts, WithIdempotencyKey(scope, key))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.cfg.MaxBody+1))
	switch {
	case err != nil:
		return nil, nil, http.StatusBadRequest, "The body could not be read."
	case int64(len(body)) > h.cfg.MaxBody:
		return nil, nil, http.StatusRequestEntityTooLarge, "A command's body is at most " + strconv.FormatInt(h.cfg.MaxBody, 10) + " bytes."
	case bytes.Equal(bytes.TrimSpace(body), []byte("null")):
		return nil, nil, http.StatusBadRequest, "The body is null, not a command."
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if v, err = rt.fromJSON(dec); err != nil {
		return nil, nil, http.StatusBadRequest, "The body is not a " + rt.name + " command: " + err.Error()
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, http.StatusBadRequest, "The body holds more than one JSON value."
	}
	return v, append(opts, WithMetadata(md)), 0, ""
}

// statusJSON is the body of a status resource.
type statusJSON struct {
	ID         string           `json:"id"`
	Type       string           `json:"type"`
	Status     string           `json:"status"`
	Attempts   int              `json:"attempts"`
	Accepted   time.Time        `json:"accepted"`
	Updated    time.Time        `json:"updated"`
	RetryAt    *time.Time       `json:"retryAt,omitempty"`
	Stream     string           `json:"stream,omitempty"`
	Version    uint64           `json:"version,omitempty"`
	Position   string           `json:"position,omitempty"`
	Location   string           `json:"location,omitempty"`
	Problem    *problem.Details `json:"problem,omitempty"`
	DeadLetter uint64           `json:"deadLetter,omitempty"`
}

func (h *httpHandler) status(w http.ResponseWriter, r *http.Request, typ, id string) {
	wait := time.Duration(0)
	if s := r.URL.Query().Get("wait"); s != "" {
		n, err := strconv.ParseFloat(s, 64)
		if err != nil || n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
			h.problem(w, http.StatusBadRequest, "Bad wait", "wait is a number of seconds.")
			return
		}
		wait = min(time.Duration(n*float64(time.Second)), h.cfg.MaxWait)
	}
	st, err := h.q.store.Wait(r.Context(), id, wait)
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalid), err == nil && st.Type != typ:
		h.problem(w, http.StatusNotFound, "Unknown command", "No "+typ+" command has the ID "+strconv.Quote(id)+".")
		return
	case err != nil && r.Context().Err() != nil:
		return // the client has gone
	case err != nil:
		h.cfg.Logger.ErrorContext(r.Context(), "command: status unreadable", "id", id, "err", err)
		h.unavailable(w, "The command store is unavailable. Try again later.")
		return
	}
	body := statusJSON{ID: st.ID, Type: st.Type, Status: st.State.String(), Attempts: st.Attempts,
		Accepted: st.Accepted, Updated: st.Updated, Stream: st.Stream, Version: st.Version,
		Location: st.Location, Problem: st.Problem, DeadLetter: st.DeadLetter}
	if !st.Position.IsZero() {
		body.Position = st.Position.String()
	}
	if !st.NotBefore.IsZero() && st.State == Accepted {
		body.RetryAt = &st.NotBefore
	}
	code := http.StatusOK
	switch {
	case st.State == Succeeded && st.Location != "":
		w.Header().Set("Location", st.Location)
		code = http.StatusSeeOther
	case !st.State.Final():
		w.Header().Set("Retry-After", seconds(h.cfg.RetryAfter))
	}
	h.json(w, code, body)
}

func (h *httpHandler) json(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.problem(w, http.StatusInternalServerError, "Unencodable response", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func (h *httpHandler) unavailable(w http.ResponseWriter, detail string) {
	w.Header().Set("Retry-After", seconds(h.cfg.RetryAfter))
	h.problem(w, http.StatusServiceUnavailable, "Service unavailable", detail)
}

func (h *httpHandler) problem(w http.ResponseWriter, code int, title, detail string) {
	w.Header().Del("Location")
	_ = problem.Write(w, problem.Details{Status: code, Title: title, Detail: detail})
}

// seconds is d as a Retry-After value: whole seconds, at least 1.
func seconds(d time.Duration) string {
	return strconv.FormatInt(max(int64(math.Ceil(d.Seconds())), 1), 10)
}

// unwrapOp returns err's message without the "command: accept Type:"
// prefix of its *Error: the detail a client is told.
func unwrapOp(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Err.Error()
	}
	return err.Error()
}
