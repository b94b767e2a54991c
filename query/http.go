package query

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/resilience/problem"
)

// Where an HTTP query carries the position to wait for: the header, or the
// query parameter (for links a browser follows). A command's status gives
// the position of the events it wrote; pass it on as it is.
const (
	PositionHeader = "Recado-Position"
	PositionParam  = "position"
)

// Problem types of the answers that say the read model is not there yet.
const (
	// TypeBehind: the read model did not reach the position in time (503,
	// with Retry-After). Extensions: position.
	TypeBehind = "urn:recado:problem:read-model-behind"
	// TypeParked: the event at the position is in the dead-letter queue and
	// the read model will not show it until someone replays it (500).
	// Extensions: position, deadLetter (the letter holding the event) and
	// headLetter (the one to replay).
	TypeParked = "urn:recado:problem:event-parked"
)

// HTTPOptions configure [NewHTTPHandler]. Decode is required.
type HTTPOptions[Q, R any] struct {
	// Decode builds the query from the request. An error is answered with
	// 400, or with the problem.Details it is.
	Decode func(r *http.Request) (Q, error)
	// Encode writes the result; default JSON with status 200.
	Encode func(w http.ResponseWriter, r *http.Request, res R) error
	// Waiter is the read model's progress: a request that carries a
	// position waits on it. Nil refuses such requests with 400.
	Waiter Waiter
	// Timeout is the longest a request waits for its position (default
	// [DefaultTimeout]).
	Timeout time.Duration
	// Error maps a handler's error to the answer. Default: a
	// problem.Details as it is; [ErrNotFound] 404; anything else 500,
	// without the error's text (it is the server's to log).
	Error func(err error) problem.Details
}

// NewHTTPHandler serves h over HTTP: it decodes the query, waits for the
// position the request carries (the [PositionHeader] header or the
// [PositionParam] parameter), runs h and encodes its result. Every error is
// answered with problem details: 400 for a malformed position or query, 503
// with Retry-After ([TypeBehind]) when the read model does not reach the
// position in time, 500 ([TypeParked]) when the event at the position is
// parked in the dead-letter queue. It panics if o.Decode is nil.
func NewHTTPHandler[Q, R any](h Handler[Q, R], o HTTPOptions[Q, R]) http.Handler {
	if o.Decode == nil {
		panic("query: NewHTTPHandler needs HTTPOptions.Decode")
	}
	if o.Encode == nil {
		o.Encode = encodeJSON[R]
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Error == nil {
		o.Error = defaultError
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pos, has, err := positionOf(r)
		if err != nil {
			problem.Write(w, problem.New(http.StatusBadRequest, err.Error()))
			return
		}
		q, err := o.Decode(r)
		if err != nil {
			var d problem.Details
			if !errors.As(err, &d) {
				d = problem.New(http.StatusBadRequest, err.Error())
			}
			problem.Write(w, d)
			return
		}
		if has {
			if o.Waiter == nil {
				problem.Write(w, problem.New(http.StatusBadRequest, "this resource does not wait for positions: send the query without "+PositionHeader))
				return
			}
			if err := wait(r.Context(), o.Waiter, pos, o.Timeout); err != nil {
				writeWaitError(w, pos, err)
				return
			}
		}
		res, err := h.Handle(r.Context(), q)
		if err != nil {
			problem.Write(w, o.Error(err))
			return
		}
		if err := o.Encode(w, r, res); err != nil {
			problem.Write(w, problem.New(http.StatusInternalServerError, "the result could not be encoded"))
		}
	})
}

// positionOf reads the position a request carries.
func positionOf(r *http.Request) (recado.Position, bool, error) {
	header, param := r.Header.Get(PositionHeader), r.URL.Query().Get(PositionParam)
	text := header
	switch {
	case header == "" && param == "":
		return recado.Position{}, false, nil
	case header == "":
		text = param
	case param != "" && param != header:
		return recado.Position{}, false, fmt.Errorf("the %s header %q and the %s parameter %q differ", PositionHeader, header, PositionParam, param)
	}
	pos, err := recado.ParsePosition(text)
	if err != nil || text == "" {
		return recado.Position{}, false, fmt.Errorf("malformed position %q: want the position a command's status gave", text)
	}
	return pos, true, nil
}

// writeWaitError answers a wait that failed.
func writeWaitError(w http.ResponseWriter, pos recado.Position, err error) {
	var pe *projection.ParkedError
	switch {
	case errors.Is(err, ErrTimeout):
		var te *TimeoutError
		errors.As(err, &te)
		d := problem.New(http.StatusServiceUnavailable,
			fmt.Sprintf("the read model has not reached position %s within %v; try again shortly", pos, te.Timeout))
		d.Type, d.Title = TypeBehind, "Read model behind"
		d.Extensions = map[string]any{"position": pos.String()}
		w.Header().Set("Retry-After", "1")
		problem.Write(w, d)
	case errors.As(err, &pe):
		d := problem.New(http.StatusInternalServerError, pe.Error())
		d.Type, d.Title = TypeParked, "Event parked in the dead-letter queue"
		d.Extensions = map[string]any{"position": pos.String(), "deadLetter": pe.Letter.ID, "headLetter": pe.Head.ID}
		problem.Write(w, d)
	default:
		problem.Write(w, problem.New(http.StatusInternalServerError, "waiting for the read model failed"))
	}
}

func defaultError(err error) problem.Details {
	var d problem.Details
	switch {
	case errors.As(err, &d):
		return d
	case errors.Is(err, ErrNotFound):
		return problem.New(http.StatusNotFound, err.Error())
	}
	return problem.New(http.StatusInternalServerError, "the query failed")
}

func encodeJSON[R any](w http.ResponseWriter, _ *http.Request, res R) error {
	body, err := json.Marshal(res)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(append(body, '\n'))
	return err
}
