package commandtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/resilience/problem"
)

// request sends a request to h and returns the response.
func request(t *testing.T, h http.Handler, method, path, body string, header map[string]string) *http.Response {
	t.Helper()
	r := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

// decodeBody decodes the JSON body of resp into v.
func decodeBody(t *testing.T, resp *http.Response, v any) {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
}

// expectProblem checks that resp is a problem with status code.
func expectProblem(t *testing.T, what string, resp *http.Response, code int) problem.Details {
	t.Helper()
	if resp.StatusCode != code {
		b, _ := io.ReadAll(resp.Body)
		t.Errorf("%s: status %d (%s), want %d", what, resp.StatusCode, b, code)
		return problem.Details{}
	}
	d, err := problem.Read(resp)
	if err != nil {
		t.Errorf("%s: not problem details: %v", what, err)
	}
	if resp.Header.Get("Location") != "" {
		t.Errorf("%s: a problem with a Location header %q", what, resp.Header.Get("Location"))
	}
	return d
}

type receipt struct {
	ID, Type, Status, Location string
}

type status struct {
	ID, Type, Status, Stream, Position, Location string
	Attempts                                     int
	Version                                      uint64
	Problem                                      *problem.Details
}

func testHTTP(t *testing.T, e *env) {
	h := command.NewHTTPHandler(e.queue, command.HTTPConfig{
		Scope: func(r *http.Request) (string, error) { return r.Header.Get("X-Client"), nil },
	})
	body := `{"orderId":"1","items":["tea"],"totalCents":450}`
	key := map[string]string{"Idempotency-Key": `"order-1-try"`, "X-Client": "alice"}
	resp := request(t, h, "POST", "/commands/PlaceOrder", body, key)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: status %d, want 202", resp.StatusCode)
	}
	var rc receipt
	decodeBody(t, resp, &rc)
	loc := "/commands/PlaceOrder/" + rc.ID
	if resp.Header.Get("Location") != loc || rc.Location != loc || resp.Header.Get("Retry-After") != "1" ||
		rc.Status != "accepted" || rc.Type != "PlaceOrder" {
		t.Errorf("202: Location %q, Retry-After %q, receipt %+v; want location %s, Retry-After 1, accepted",
			resp.Header.Get("Location"), resp.Header.Get("Retry-After"), rc, loc)
	}

	// The same key and command: the same receipt.
	again := request(t, h, "POST", "/commands/PlaceOrder", " "+body+"\n", key)
	var rc2 receipt
	decodeBody(t, again, &rc2)
	if again.StatusCode != http.StatusAccepted || rc2.ID != rc.ID || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replayed POST: %d, receipt %+v, Idempotent-Replayed %q; want 202 with %s",
			again.StatusCode, rc2, again.Header.Get("Idempotent-Replayed"), rc.ID)
	}
	// Another caller with the same key: a command of its own.
	bob := request(t, h, "POST", "/commands/PlaceOrder", body, map[string]string{"Idempotency-Key": `"order-1-try"`, "X-Client": "bob"})
	var rc3 receipt
	decodeBody(t, bob, &rc3)
	if rc3.ID == rc.ID {
		t.Errorf("another caller's key got the first caller's command")
	}
	expectProblem(t, "same key, other command", request(t, h, "POST", "/commands/PlaceOrder",
		`{"orderId":"1","items":["pot"],"totalCents":450}`, key), http.StatusUnprocessableEntity)

	// The status, before and after it runs.
	st := request(t, h, "GET", loc, "", nil)
	var s status
	decodeBody(t, st, &s)
	if st.StatusCode != http.StatusOK || s.Status != "accepted" || s.ID != rc.ID || st.Header.Get("Retry-After") == "" {
		t.Errorf("GET status before the run: %d %+v, Retry-After %q; want 200 accepted with Retry-After", st.StatusCode, s, st.Header.Get("Retry-After"))
	}
	e.start(e.workerConfig(), nil)
	e.wait(rc.ID)
	done := request(t, h, "GET", loc, "", nil)
	decodeBody(t, done, &s)
	if done.StatusCode != http.StatusSeeOther || done.Header.Get("Location") != "/orders/1" || s.Status != "succeeded" ||
		s.Stream != OrderStream("1") || s.Version != 1 || s.Position == "" || s.Attempts != 1 {
		t.Errorf("GET status after the run: %d, Location %q, %+v; want 303 to /orders/1, succeeded at version 1",
			done.StatusCode, done.Header.Get("Location"), s)
	}
	waited := request(t, h, "GET", "/commands/PlaceOrder/"+rc3.ID+"?wait=5", "", nil)
	decodeBody(t, waited, &s)
	if s.Status != "failed" || s.Problem == nil {
		t.Errorf("GET ?wait=5 of the second order 1: %+v, want failed with a problem", s)
	}

	for _, tc := range []struct {
		what, method, path, body string
		header                   map[string]string
		code                     int
	}{
		{"unknown type", "POST", "/commands/ShipOrder", body, nil, http.StatusNotFound},
		{"unknown ID", "GET", "/commands/PlaceOrder/0190-none", "", nil, http.StatusNotFound},
		{"ID of another type", "GET", "/commands/CancelOrder/" + rc.ID, "", nil, http.StatusNotFound},
		{"too deep", "GET", "/commands/PlaceOrder/" + rc.ID + "/x", "", nil, http.StatusNotFound},
		{"outside the prefix", "GET", "/orders/1", "", nil, http.StatusNotFound},
		{"GET a type", "GET", "/commands/PlaceOrder", "", nil, http.StatusMethodNotAllowed},
		{"POST a status", "POST", loc, body, nil, http.StatusMethodNotAllowed},
		{"not JSON", "POST", "/commands/PlaceOrder", body, map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"no content type", "POST", "/commands/PlaceOrder", body, map[string]string{"Content-Type": ""}, http.StatusUnsupportedMediaType},
		{"malformed", "POST", "/commands/PlaceOrder", `{"orderId":`, nil, http.StatusBadRequest},
		{"unknown field", "POST", "/commands/PlaceOrder", `{"orderId":"9","items":["a"],"shipTo":"moon"}`, nil, http.StatusBadRequest},
		{"wrong type", "POST", "/commands/PlaceOrder", `{"orderId":9}`, nil, http.StatusBadRequest},
		{"two values", "POST", "/commands/PlaceOrder", body + body, nil, http.StatusBadRequest},
		{"null", "POST", "/commands/PlaceOrder", `null`, nil, http.StatusBadRequest},
		{"invalid", "POST", "/commands/PlaceOrder", `{"orderId":"9","items":[]}`, nil, http.StatusUnprocessableEntity},
		{"too large", "POST", "/commands/PlaceOrder", `{"orderId":"9","items":["` + strings.Repeat("x", command.DefaultMaxBody) + `"]}`, nil, http.StatusRequestEntityTooLarge},
		{"bad key", "POST", "/commands/PlaceOrder", body, map[string]string{"Idempotency-Key": `"unterminated`}, http.StatusBadRequest},
		{"bad wait", "GET", loc + "?wait=soon", "", nil, http.StatusBadRequest},
	} {
		expectProblem(t, tc.what, request(t, h, tc.method, tc.path, tc.body, tc.header), tc.code)
	}
}

func testHTTPStoreDown(t *testing.T, e *env) {
	if e.Close == nil {
		t.Skip("the backend cannot be closed")
	}
	h := command.NewHTTPHandler(e.queue, command.HTTPConfig{})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	resp := request(t, h, "POST", "/commands/PlaceOrder", `{"orderId":"1","items":["tea"]}`, nil)
	expectProblem(t, "POST with the store down", resp, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	expectProblem(t, "GET with the store down", request(t, h, "GET", "/commands/PlaceOrder/0190-x", "", nil), http.StatusServiceUnavailable)
}
