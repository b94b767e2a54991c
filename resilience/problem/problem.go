// Package problem writes and reads RFC 9457 problem details
// (application/problem+json), the error body of every HTTP adapter in
// recado: the circuit-breaking proxy of package resilience, the command
// endpoints, the operator API.
//
// It lives apart from package resilience, and imports only the standard
// library, so that any HTTP adapter can use it without taking the policies
// along.
package problem

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// ContentType is the media type of a problem details body.
const ContentType = "application/problem+json"

// Details is an RFC 9457 problem details object. Extension members go in
// Extensions; they are written beside the standard members.
type Details struct {
	Type       string         // URI reference naming the problem; empty means "about:blank"
	Title      string         // short summary, the same for every occurrence of Type
	Status     int            // HTTP status code
	Detail     string         // explanation of this occurrence
	Instance   string         // URI reference naming this occurrence
	Extensions map[string]any // further members, e.g. "retryAfter"
}

// New returns problem details for status with the status text as title.
func New(status int, detail string) Details {
	return Details{Status: status, Title: http.StatusText(status), Detail: detail}
}

// Error makes Details usable as an error.
func (d Details) Error() string {
	s := strconv.Itoa(d.Status) + " " + d.Title
	if d.Detail != "" {
		s += ": " + d.Detail
	}
	return s
}

var standard = []string{"type", "title", "status", "detail", "instance"}

// MarshalJSON writes the standard members that are set, then the
// extensions (an extension may not replace a standard member).
func (d Details) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(d.Extensions)+5)
	for k, v := range d.Extensions {
		m[k] = v
	}
	for _, kv := range []struct {
		k   string
		v   any
		set bool
	}{
		{"type", d.Type, d.Type != ""},
		{"title", d.Title, d.Title != ""},
		{"status", d.Status, d.Status != 0},
		{"detail", d.Detail, d.Detail != ""},
		{"instance", d.Instance, d.Instance != ""},
	} {
		delete(m, kv.k)
		if kv.set {
			m[kv.k] = kv.v
		}
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads the standard members and keeps the others as
// extensions. A standard member of the wrong JSON type is ignored, as
// RFC 9457 section 3.1 asks.
func (d *Details) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*d = Details{}
	str := func(k string, dst *string) {
		if raw, ok := m[k]; ok {
			json.Unmarshal(raw, dst) // a wrong type leaves dst empty
		}
	}
	str("type", &d.Type)
	str("title", &d.Title)
	str("detail", &d.Detail)
	str("instance", &d.Instance)
	if raw, ok := m["status"]; ok {
		json.Unmarshal(raw, &d.Status)
	}
	for k, raw := range m {
		if isStandard(k) {
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		if d.Extensions == nil {
			d.Extensions = make(map[string]any)
		}
		d.Extensions[k] = v
	}
	return nil
}

func isStandard(k string) bool {
	for _, s := range standard {
		if k == s {
			return true
		}
	}
	return false
}

// Write sends d as the response, with d.Status as the status code (500 if
// unset). Set other headers, such as Retry-After, before calling it.
func Write(w http.ResponseWriter, d Details) error {
	if d.Status == 0 {
		d.Status = http.StatusInternalServerError
	}
	body, err := json.Marshal(d)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Del("Content-Encoding")
	w.WriteHeader(d.Status)
	_, err = w.Write(append(body, '\n'))
	return err
}

// ErrNotProblem: a response was not application/problem+json.
var ErrNotProblem = errors.New("problem: response is not application/problem+json")

// maxBody bounds how much of a response Read will decode.
const maxBody = 1 << 20

// Read decodes the problem details of resp (it reads the body but does not
// close it). It returns ErrNotProblem if the response has another media
// type. If the body omits status, the response's status is used.
func Read(resp *http.Response) (Details, error) {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if !strings.EqualFold(mt, ContentType) {
		return Details{}, ErrNotProblem
	}
	var d Details
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&d); err != nil {
		return Details{}, err
	}
	if d.Status == 0 {
		d.Status = resp.StatusCode
	}
	return d, nil
}
