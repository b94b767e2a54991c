package idempotencytest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/problem"
)

var httpTests = []test{
	{"SameKeySamePayload", testHTTPReplay},
	{"SameKeyOtherPayload", testHTTPMismatch},
	{"Concurrent", testHTTPConcurrent},
	{"MissingKey", testHTTPMissingKey},
	{"MalformedKey", testHTTPMalformedKey},
	{"Scopes", testHTTPScopes},
	{"RetryableFailure", testHTTPRetryable},
	{"Panic", testHTTPPanic},
	{"ResponseTooLarge", testHTTPTooLarge},
	{"OtherMethods", testHTTPOtherMethods},
	{"BodyTooLarge", testHTTPBodyTooLarge},
}

// draftKey is the key of the draft's examples.
const draftKey = `"8e03978e-40d5-43e8-bc93-6894a57f9324"`

// orders is the handler under test: it creates an order per call it runs.
type orders struct {
	calls   atomic.Int64
	status  int           // of the response; 201 if zero
	started chan struct{} // if set, receives a value when a call starts
	gate    chan struct{} // if set, a call waits for it to close
}

func (o *orders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.calls.Add(1)
	if o.started != nil {
		o.started <- struct{}{}
	}
	if o.gate != nil {
		<-o.gate
	}
	body, _ := io.ReadAll(r.Body)
	status := o.status
	if status == 0 {
		status = http.StatusCreated
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", fmt.Sprintf("/orders/%d", n))
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"order":%d,"request":%q}`, n, body)
}

func request(method, target, key, body string) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if key != "" {
		r.Header.Set(idempotency.Header, key)
	}
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// wantProblem checks that w is a problem details response with status.
func wantProblem(t *testing.T, what string, w *httptest.ResponseRecorder, status int) problem.Details {
	t.Helper()
	d, err := problem.Read(w.Result())
	if w.Code != status || err != nil || d.Status != status {
		t.Fatalf("%s: %d %q (%v), want %d with problem details", what, w.Code, w.Body.String(), err, status)
	}
	return d
}

func testHTTPReplay(t *testing.T, e *env) {
	o := &orders{}
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{})(o)
	first := serve(h, request("POST", "/orders", draftKey, `{"item":"book"}`))
	if first.Code != http.StatusCreated || first.Header().Get(idempotency.ReplayedHeader) != "" {
		t.Fatalf("first request: %d, replayed %q", first.Code, first.Header().Get(idempotency.ReplayedHeader))
	}
	for range 2 {
		again := serve(h, request("POST", "/orders", draftKey, `{"item":"book"}`))
		if again.Code != first.Code || again.Body.String() != first.Body.String() ||
			again.Header().Get("Location") != first.Header().Get("Location") ||
			again.Header().Get("Content-Type") != first.Header().Get("Content-Type") {
			t.Errorf("retry: %d %v %q, want %d %v %q", again.Code, again.Header(), again.Body, first.Code, first.Header(), first.Body)
		}
		if got := again.Header().Get(idempotency.ReplayedHeader); got != "true" {
			t.Errorf("retry: %s = %q, want true", idempotency.ReplayedHeader, got)
		}
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want 1", n)
	}
	// The same key without quotes is the same key.
	bare := serve(h, request("POST", "/orders", strings.Trim(draftKey, `"`), `{"item":"book"}`))
	if bare.Body.String() != first.Body.String() || o.calls.Load() != 1 {
		t.Errorf("retry with the key unquoted ran the handler or answered %q", bare.Body)
	}
}

func testHTTPMismatch(t *testing.T, e *env) {
	o := &orders{}
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{})(o)
	serve(h, request("POST", "/orders", draftKey, `{"item":"book"}`))
	cases := []struct{ what, method, target, body string }{
		{"other body", "POST", "/orders", `{"item":"pen"}`},
		{"other path", "POST", "/carts", `{"item":"book"}`},
		{"other query", "POST", "/orders?express=1", `{"item":"book"}`},
		{"other method", "PATCH", "/orders", `{"item":"book"}`},
	}
	for _, c := range cases {
		w := serve(h, request(c.method, c.target, draftKey, c.body))
		d := wantProblem(t, c.what, w, http.StatusUnprocessableEntity)
		if d.Title != "Idempotency-Key is already used" {
			t.Errorf("%s: title %q", c.what, d.Title)
		}
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want 1", n)
	}
}

func testHTTPConcurrent(t *testing.T, e *env) {
	o := &orders{started: make(chan struct{}), gate: make(chan struct{})}
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{})(o)
	firstDone := make(chan *httptest.ResponseRecorder)
	go func() { firstDone <- serve(h, request("POST", "/orders", draftKey, `{"item":"book"}`)) }()
	select { // wait until the first request runs its handler
	case <-o.started:
	case w := <-firstDone:
		t.Fatalf("first request ended before its handler ran: %d %s", w.Code, w.Body)
	}
	w := serve(h, request("POST", "/orders", draftKey, `{"item":"book"}`))
	d := wantProblem(t, "concurrent request", w, http.StatusConflict)
	if d.Title != "A request is outstanding for this Idempotency-Key" {
		t.Errorf("409 title %q", d.Title)
	}
	close(o.gate)
	first := <-firstDone
	if first.Code != http.StatusCreated {
		t.Fatalf("first request: %d", first.Code)
	}
	after := serve(h, request("POST", "/orders", draftKey, `{"item":"book"}`))
	if after.Body.String() != first.Body.String() || o.calls.Load() != 1 {
		t.Errorf("request after the first ended: %q (handler ran %d times), want the replay", after.Body, o.calls.Load())
	}
}

func testHTTPMissingKey(t *testing.T, e *env) {
	o := &orders{}
	required := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{
		Required:    func(r *http.Request) bool { return r.URL.Path == "/payments" },
		ProblemType: "https://docs.example/idempotency",
	})(o)
	w := serve(required, request("POST", "/payments", "", `{}`))
	d := wantProblem(t, "missing key", w, http.StatusBadRequest)
	if d.Title != "Idempotency-Key is missing" || d.Type != "https://docs.example/idempotency" {
		t.Errorf("400: title %q type %q", d.Title, d.Type)
	}
	if w := serve(required, request("POST", "/orders", "", `{}`)); w.Code != http.StatusCreated {
		t.Errorf("request without a key where none is required: %d", w.Code)
	}
	if w := serve(required, request("POST", "/orders", "", `{}`)); w.Code != http.StatusCreated || o.calls.Load() != 2 {
		t.Errorf("requests without a key must each run: %d, %d calls", w.Code, o.calls.Load())
	}
}

func testHTTPMalformedKey(t *testing.T, e *env) {
	o := &orders{}
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{})(o)
	longest := strings.Repeat("k", idempotency.MaxKeyLen)
	cases := []struct{ what, key string }{
		{"256 characters", strings.Repeat("k", idempotency.MaxKeyLen+1)},
		{"256 characters quoted", `"` + strings.Repeat("k", idempotency.MaxKeyLen+1) + `"`},
		{"empty quoted", `""`},
		{"unterminated", `"abc`},
		{"non-ASCII", `"clé"`},
		{"space in a bare key", `a b`},
		{"garbage after the string", `"abc" x`},
		{"bad escape", `"a\b"`},
	}
	for _, c := range cases {
		w := serve(h, request("POST", "/orders", c.key, `{}`))
		wantProblem(t, c.what, w, http.StatusBadRequest)
	}
	r := request("POST", "/orders", "", `{}`)
	r.Header.Add(idempotency.Header, `"a"`)
	r.Header.Add(idempotency.Header, `"b"`)
	wantProblem(t, "two keys", serve(h, r), http.StatusBadRequest)
	if n := o.calls.Load(); n != 0 {
		t.Errorf("the handler ran %d times for malformed keys", n)
	}
	if w := serve(h, request("POST", "/orders", `"`+longest+`"`, `{}`)); w.Code != http.StatusCreated {
		t.Errorf("a key of %d characters: %d, want 201", idempotency.MaxKeyLen, w.Code)
	}
	if w := serve(h, request("POST", "/orders", `"a\"b"`, `{}`)); w.Code != http.StatusCreated {
		t.Errorf(`a key with an escaped quote: %d, want 201`, w.Code)
	}
	for key, want := range map[string]string{`"a\"b\\c"`: `a"b\c`, ` "x";p=1 `: "x", "abc": "abc"} {
		if got, err := idempotency.ParseKey(key); got != want || err != nil {
			t.Errorf("ParseKey(%s) = %q, %v; want %q", key, got, err, want)
		}
	}
	if _, err := idempotency.ParseKey(`"`); !errors.Is(err, idempotency.ErrMalformedKey) {
		t.Errorf("ParseKey(\") = %v, want ErrMalformedKey", err)
	}
}

func testHTTPScopes(t *testing.T, e *env) {
	o := &orders{}
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{
		Scope: func(r *http.Request) (string, error) {
			if u := r.Header.Get("X-User"); u != "" {
				return u, nil
			}
			return "", errors.New("no user")
		},
	})(o)
	for _, user := range []string{"alice", "bob", "alice"} {
		r := request("POST", "/orders", draftKey, `{"item":"book"}`)
		r.Header.Set("X-User", user)
		serve(h, r)
	}
	if n := o.calls.Load(); n != 2 {
		t.Errorf("two callers with one key: the handler ran %d times, want 2", n)
	}
	wantProblem(t, "unidentified caller", serve(h, request("POST", "/orders", draftKey, `{}`)), http.StatusForbidden)
}

func testHTTPRetryable(t *testing.T, e *env) {
	o := &orders{status: http.StatusServiceUnavailable}
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{})(o)
	if w := serve(h, request("POST", "/orders", draftKey, `{}`)); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("first request: %d", w.Code)
	}
	o.status = http.StatusCreated
	w := serve(h, request("POST", "/orders", draftKey, `{}`))
	if w.Code != http.StatusCreated || w.Header().Get(idempotency.ReplayedHeader) != "" || o.calls.Load() != 2 {
		t.Errorf("retry after a 503: %d, replayed %q, %d calls; want the request run again", w.Code, w.Header().Get(idempotency.ReplayedHeader), o.calls.Load())
	}
	// A client error is an answer: it is stored and replayed.
	o.status = http.StatusBadRequest
	serve(h, request("POST", "/orders", `"k2"`, `{}`))
	w = serve(h, request("POST", "/orders", `"k2"`, `{}`))
	if w.Code != http.StatusBadRequest || w.Header().Get(idempotency.ReplayedHeader) != "true" || o.calls.Load() != 3 {
		t.Errorf("retry after a 400: %d, replayed %q, %d calls; want the 400 replayed", w.Code, w.Header().Get(idempotency.ReplayedHeader), o.calls.Load())
	}
}

func testHTTPPanic(t *testing.T, e *env) {
	var calls atomic.Int64
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			panic(http.ErrAbortHandler)
		}
		w.WriteHeader(http.StatusCreated)
	}))
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("recovered %v, want the handler's panic", p)
			}
		}()
		serve(h, request("POST", "/orders", draftKey, `{}`))
	}()
	if w := serve(h, request("POST", "/orders", draftKey, `{}`)); w.Code != http.StatusCreated || calls.Load() != 2 {
		t.Errorf("retry after a panic: %d, %d calls; want the request run again", w.Code, calls.Load())
	}
}

func testHTTPTooLarge(t *testing.T, e *env) {
	big := strings.Repeat("x", MaxResponse+1)
	var calls atomic.Int64
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, big)
	}))
	first := serve(h, request("POST", "/orders", draftKey, `{}`))
	if first.Code != http.StatusCreated || first.Body.String() != big {
		t.Fatalf("first request: %d, %d bytes; want 201 with the whole body", first.Code, first.Body.Len())
	}
	again := serve(h, request("POST", "/orders", draftKey, `{}`))
	d := wantProblem(t, "retry of a request whose response was too large", again, http.StatusInternalServerError)
	if calls.Load() != 1 || again.Header().Get(idempotency.ReplayedHeader) != "true" {
		t.Errorf("retry: %d calls, replayed %q; want 1 call and a replay", calls.Load(), again.Header().Get(idempotency.ReplayedHeader))
	}
	if got, _ := d.Extensions["originalStatus"].(float64); got != http.StatusCreated {
		t.Errorf("problem %+v: originalStatus = %v, want 201", d, d.Extensions["originalStatus"])
	}
}

func testHTTPOtherMethods(t *testing.T, e *env) {
	o := &orders{}
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{})(o)
	for range 2 {
		if w := serve(h, request("GET", "/orders", draftKey, "")); w.Header().Get(idempotency.ReplayedHeader) != "" {
			t.Error("a GET was replayed")
		}
	}
	if n := o.calls.Load(); n != 2 {
		t.Errorf("GET with a key ran %d times, want 2 (keys apply to POST and PATCH)", n)
	}
	put := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{Methods: []string{"PUT"}})(o)
	serve(put, request("PUT", "/orders/1", draftKey, "{}"))
	if w := serve(put, request("PUT", "/orders/1", draftKey, "{}")); w.Header().Get(idempotency.ReplayedHeader) != "true" {
		t.Error("a PUT under Methods: [PUT] was not replayed")
	}
}

func testHTTPBodyTooLarge(t *testing.T, e *env) {
	o := &orders{}
	h := idempotency.Middleware(e.Store, idempotency.MiddlewareConfig{MaxRequestBody: 8})(o)
	wantProblem(t, "body of 9 bytes", serve(h, request("POST", "/orders", draftKey, "123456789")), http.StatusRequestEntityTooLarge)
	if w := serve(h, request("POST", "/orders", draftKey, "12345678")); w.Code != http.StatusCreated {
		t.Errorf("body of 8 bytes: %d", w.Code)
	}
	var got map[string]any
	json.Unmarshal(serve(h, request("POST", "/orders", draftKey, "12345678")).Body.Bytes(), &got)
	if got["request"] != "12345678" {
		t.Errorf("the handler read the body %q, want it whole", got["request"])
	}
}
