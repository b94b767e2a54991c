package deadletter

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/problem"
)

// Action is what an operator's request does, for the authorizer to decide.
type Action string

const (
	// ActionRead lists, groups and shows letters.
	ActionRead Action = "read"
	// ActionReplay requests replays.
	ActionReplay Action = "replay"
	// ActionDiscard discards letters.
	ActionDiscard Action = "discard"
)

// HandlerConfig sets up [NewHandler].
type HandlerConfig struct {
	// Authorize decides whether r may do action; an error refuses it with
	// 403 and the error's text as the problem's detail. Nil allows reads and
	// refuses every replay and discard: changing the queue always needs an
	// authorizer.
	Authorize func(r *http.Request, action Action) error
}

// maxRequestBody bounds the JSON bodies the handler reads.
const maxRequestBody = 1 << 20

// NewHandler returns an http.Handler that serves s to operators as JSON.
// Mount it under a prefix with http.StripPrefix. Its routes:
//
//	GET  /letters               letters, by ascending ID; query parameters:
//	                            source, error (a substring), state (failed,
//	                            parked, requested, replayed, discarded; repeat
//	                            it or separate with commas), since and until
//	                            (RFC 3339, on the last failure), after (an ID),
//	                            limit. Answers {"letters": [...], "next": ID}
//	                            where next, when present, is the after of the
//	                            next page.
//	GET  /letters/{id}          one letter
//	GET  /groups                letters grouped by source and error; the same
//	                            parameters but after. Answers {"groups": [...]}.
//	POST /letters/{id}/replay   requests its replay: {"requested": 1}
//	POST /replay                {"ids": [1, 2]} or {"source": s, "error": e}
//	                            (a group): {"requested": n}
//	POST /letters/{id}/discard  {"reason": "..."}: answers the discarded letter
//
// A letter's message data is shown as JSON under "data" when it is valid
// JSON, else base64 under "dataBase64". Errors are RFC 9457 problem details:
// 400 for bad input, 403 when the authorizer refuses, 404 for a letter that
// does not exist, 409 for one already handled or whose state does not allow
// the operation.
func NewHandler(s *Store, cfg HandlerConfig) http.Handler {
	h := &handler{s: s, cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /letters", h.allow(ActionRead, h.list))
	mux.HandleFunc("GET /letters/{id}", h.allow(ActionRead, h.show))
	mux.HandleFunc("GET /groups", h.allow(ActionRead, h.groups))
	mux.HandleFunc("POST /letters/{id}/replay", h.allow(ActionReplay, h.replayOne))
	mux.HandleFunc("POST /replay", h.allow(ActionReplay, h.replay))
	mux.HandleFunc("POST /letters/{id}/discard", h.allow(ActionDiscard, h.discard))
	return mux
}

type handler struct {
	s   *Store
	cfg HandlerConfig
}

// allow wraps f with the authorizer's decision on action.
func (h *handler) allow(action Action, f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var err error
		switch {
		case h.cfg.Authorize != nil:
			err = h.cfg.Authorize(r, action)
		case action != ActionRead:
			err = errors.New("replay and discard are turned off: the handler has no authorizer")
		}
		if err != nil {
			writeProblem(w, http.StatusForbidden, err.Error())
			return
		}
		f(w, r)
	}
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r, true)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	letters, err := h.s.List(r.Context(), q)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := struct {
		Letters []letterJSON `json:"letters"`
		Next    uint64       `json:"next,omitempty"`
	}{Letters: make([]letterJSON, len(letters))}
	for i := range letters {
		resp.Letters[i] = toJSON(&letters[i])
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	if len(letters) == limit {
		resp.Next = letters[len(letters)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) show(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	l, err := h.s.Get(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toJSON(&l))
}

func (h *handler) groups(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r, false)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	groups, err := h.s.Groups(r.Context(), q)
	if err != nil {
		writeError(w, err)
		return
	}
	type groupJSON struct {
		Source       string    `json:"source"`
		Error        string    `json:"error"`
		Count        int       `json:"count"`
		FirstFailure time.Time `json:"firstFailure"`
		LastFailure  time.Time `json:"lastFailure"`
		FirstID      uint64    `json:"firstId"`
	}
	out := make([]groupJSON, len(groups))
	for i, g := range groups {
		out[i] = groupJSON(g)
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": out})
}

func (h *handler) replayOne(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	n, err := h.s.Replay(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"requested": n})
}

func (h *handler) replay(w http.ResponseWriter, r *http.Request) {
	var body struct {
		IDs    []uint64 `json:"ids"`
		Source string   `json:"source"`
		Error  *string  `json:"error"`
	}
	if !readJSON(w, r, &body) {
		return
	}
	var n int
	var err error
	switch {
	case len(body.IDs) > 0 && body.Source == "" && body.Error == nil:
		n, err = h.s.Replay(r.Context(), body.IDs...)
	case len(body.IDs) == 0 && body.Source != "" && body.Error != nil:
		n, err = h.s.ReplayGroup(r.Context(), body.Source, *body.Error)
	default:
		writeProblem(w, http.StatusBadRequest, `send {"ids": [...]} or {"source": ..., "error": ...}`)
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"requested": n})
}

func (h *handler) discard(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if !readJSON(w, r, &body) {
		return
	}
	if err := h.s.Discard(r.Context(), id, body.Reason); err != nil {
		writeError(w, err)
		return
	}
	l, err := h.s.Get(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toJSON(&l))
}

// parseQuery reads a Query from r's URL.
func parseQuery(r *http.Request, list bool) (Query, error) {
	v := r.URL.Query()
	q := Query{Source: v.Get("source"), ErrorContains: v.Get("error")}
	for _, s := range v["state"] {
		for name := range strings.SplitSeq(s, ",") {
			st, ok := stateNames[strings.TrimSpace(name)]
			if !ok {
				return q, errors.New("unknown state " + strconv.Quote(name))
			}
			q.States = append(q.States, st)
		}
	}
	var err error
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if s := v.Get(t.name); s != "" {
			if *t.dst, err = time.Parse(time.RFC3339Nano, s); err != nil {
				return q, errors.New(t.name + ": not an RFC 3339 time: " + strconv.Quote(s))
			}
		}
	}
	if s := v.Get("after"); s != "" {
		if !list {
			return q, errors.New("after applies to letters, not to groups")
		}
		if q.After, err = strconv.ParseUint(s, 10, 64); err != nil {
			return q, errors.New("after: not a letter ID: " + strconv.Quote(s))
		}
	}
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit < 1 || q.Limit > MaxLimit {
			return q, errors.New("limit: not a number from 1 to " + strconv.Itoa(MaxLimit) + ": " + strconv.Quote(s))
		}
	}
	return q, nil
}

var stateNames = map[string]State{
	"failed": Failed, "parked": Parked, "requested": Requested, "replayed": Replayed, "discarded": Discarded,
}

func pathID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		writeProblem(w, http.StatusBadRequest, "not a letter ID: "+strconv.Quote(r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func readJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		writeProblem(w, http.StatusBadRequest, "the body is not the JSON expected: "+err.Error())
		return false
	}
	return true
}

// letterJSON is how the handler shows a letter.
type letterJSON struct {
	ID           uint64      `json:"id"`
	Source       string      `json:"source"`
	Key          string      `json:"key,omitempty"`
	State        string      `json:"state"`
	Error        string      `json:"error,omitempty"`
	Class        string      `json:"class,omitempty"`
	Attempts     int         `json:"attempts,omitempty"`
	Added        time.Time   `json:"added"`
	FirstFailure *time.Time  `json:"firstFailure,omitempty"`
	LastFailure  *time.Time  `json:"lastFailure,omitempty"`
	Requested    *time.Time  `json:"requested,omitempty"`
	Handled      *time.Time  `json:"handled,omitempty"`
	Reason       string      `json:"reason,omitempty"`
	Message      messageJSON `json:"message"`
}

type messageJSON struct {
	ID         string           `json:"id,omitempty"`
	Type       string           `json:"type,omitempty"`
	Stream     string           `json:"stream,omitempty"`
	Version    uint64           `json:"version,omitempty"`
	Position   string           `json:"position,omitempty"`
	Time       *time.Time       `json:"time,omitempty"`
	Metadata   *recado.Metadata `json:"metadata,omitempty"`
	Data       json.RawMessage  `json:"data,omitempty"`
	DataBase64 []byte           `json:"dataBase64,omitempty"`
}

func toJSON(l *Letter) letterJSON {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	out := letterJSON{ID: l.ID, Source: l.Source, Key: l.Key, State: l.State.String(), Error: l.Error,
		Attempts: l.Attempts, Added: l.Added, FirstFailure: opt(l.FirstFailure), LastFailure: opt(l.LastFailure),
		Requested: opt(l.Requested), Handled: opt(l.Handled), Reason: l.Reason}
	if l.Error != "" {
		out.Class = l.Class.String()
	}
	m := &l.Message
	out.Message = messageJSON{ID: m.ID, Type: m.Type, Stream: m.Stream, Version: m.Version, Time: opt(m.Time)}
	if !m.Position.IsZero() {
		out.Message.Position = m.Position.String()
	}
	if !m.Metadata.IsZero() {
		out.Message.Metadata = &m.Metadata
	}
	if json.Valid(m.Data) {
		out.Message.Data = m.Data
	} else if len(m.Data) > 0 {
		out.Message.DataBase64 = m.Data
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	problem.Write(w, problem.New(status, detail))
}

// writeError answers err, an error of the Store.
func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrHandled), errors.Is(err, ErrState):
		status = http.StatusConflict
	case errors.Is(err, ErrClosed):
		status = http.StatusServiceUnavailable
	}
	writeProblem(w, status, err.Error())
}
