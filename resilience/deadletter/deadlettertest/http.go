package deadlettertest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/problem"
)

var httpTests = []test{
	{"ListShowGroups", testHTTPRead},
	{"ReplayAndDiscard", testHTTPWrite},
	{"NoAuthorizer", testHTTPNoAuthorizer},
	{"Refused", testHTTPRefused},
	{"BadRequests", testHTTPBad},
}

// operator is an authorizer that lets the user "ops" do everything.
func operator(r *http.Request, a deadletter.Action) error {
	if r.Header.Get("X-User") != "ops" {
		return errors.New("only ops may " + string(a))
	}
	return nil
}

func do(h http.Handler, method, target, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Header.Set("X-User", "ops")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func decode(t *testing.T, w *httptest.ResponseRecorder, status int, v any) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d (%s), want %d", w.Code, w.Body, status)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("body %s: %v", w.Body, err)
	}
}

func wantHTTPProblem(t *testing.T, what string, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	d, err := problem.Read(w.Result())
	if w.Code != status || err != nil || d.Status != status {
		t.Errorf("%s: %d %s (%v), want %d with problem details", what, w.Code, w.Body, err, status)
	}
}

type letterView struct {
	ID       uint64 `json:"id"`
	Source   string `json:"source"`
	Key      string `json:"key"`
	State    string `json:"state"`
	Error    string `json:"error"`
	Class    string `json:"class"`
	Attempts int    `json:"attempts"`
	Reason   string `json:"reason"`
	Message  struct {
		ID         string          `json:"id"`
		Type       string          `json:"type"`
		Stream     string          `json:"stream"`
		Position   string          `json:"position"`
		Data       json.RawMessage `json:"data"`
		DataBase64 []byte          `json:"dataBase64"`
		Metadata   recado.Metadata `json:"metadata"`
	} `json:"message"`
}

func testHTTPRead(t *testing.T, e *env) {
	h := deadletter.NewHandler(e.Store, deadletter.HandlerConfig{Authorize: operator})
	l1 := add(t, e, nil, "order-1", 1, errBoom)
	bin, err := e.Store.Add(t.Context(), nil, deadletter.Failure{Source: src, Key: "order-2",
		Message: recado.Event{ID: "bin", Type: "Blob", Data: []byte{0xff, 0x00}}, Err: errors.New("other error")})
	if err != nil {
		t.Fatal(err)
	}
	p := park(t, e, nil, "order-1", 2)

	type listView struct {
		Letters []letterView `json:"letters"`
		Next    uint64       `json:"next"`
	}
	var list listView
	list = listView{}
	decode(t, do(h, "GET", "/letters", ""), http.StatusOK, &list)
	if len(list.Letters) != 3 || list.Next != 0 {
		t.Fatalf("GET /letters = %+v", list)
	}
	v := list.Letters[0]
	if v.ID != l1.ID || v.Source != src || v.Key != "order-1" || v.State != "failed" || v.Error != errBoom.Error() ||
		v.Class != "transient" || v.Attempts != 3 || v.Message.ID != "m-1" || v.Message.Type != "OrderPlaced" ||
		v.Message.Position != "101" || string(v.Message.Data) != `{"i":1}` || v.Message.Metadata.Fields["tenant"] != "acme" {
		t.Errorf("first letter = %+v", v)
	}
	if b := list.Letters[1]; string(b.Message.DataBase64) != "\xff\x00" || b.Message.Data != nil {
		t.Errorf("binary data shown as %+v, want base64", b.Message)
	}
	if list.Letters[2].State != "parked" {
		t.Errorf("third letter = %+v", list.Letters[2])
	}
	list = listView{}
	decode(t, do(h, "GET", "/letters?limit=2", ""), http.StatusOK, &list)
	if len(list.Letters) != 2 || list.Next != bin.ID {
		t.Errorf("page of 2: %d letters, next %d; want next %d", len(list.Letters), list.Next, bin.ID)
	}
	next := list.Next
	list = listView{}
	decode(t, do(h, "GET", fmt.Sprintf("/letters?limit=2&after=%d", next), ""), http.StatusOK, &list)
	if len(list.Letters) != 1 || list.Letters[0].ID != p.ID || list.Next != 0 {
		t.Errorf("second page = %+v", list)
	}
	list = listView{}
	decode(t, do(h, "GET", "/letters?state=failed&error="+url.QueryEscape("other"), ""), http.StatusOK, &list)
	if len(list.Letters) != 1 || list.Letters[0].ID != bin.ID {
		t.Errorf("filtered list = %+v", list)
	}
	list = listView{}
	decode(t, do(h, "GET", "/letters?state=replayed,discarded", ""), http.StatusOK, &list)
	if len(list.Letters) != 0 {
		t.Errorf("list of handled letters = %+v", list)
	}
	since := url.QueryEscape(T0.Add(-time.Second).Format("2006-01-02T15:04:05.999999999Z07:00"))
	list = listView{}
	decode(t, do(h, "GET", "/letters?since="+since+"&source="+url.QueryEscape(src), ""), http.StatusOK, &list)
	if len(list.Letters) != 2 {
		t.Errorf("letters since a time = %d, want the 2 that failed", len(list.Letters))
	}

	var one letterView
	list = listView{}
	decode(t, do(h, "GET", fmt.Sprintf("/letters/%d", l1.ID), ""), http.StatusOK, &one)
	if one.ID != l1.ID || one.Message.Stream != "order-1" {
		t.Errorf("GET /letters/%d = %+v", l1.ID, one)
	}
	wantHTTPProblem(t, "GET a missing letter", do(h, "GET", "/letters/9999", ""), http.StatusNotFound)

	var groups struct {
		Groups []struct {
			Source  string `json:"source"`
			Error   string `json:"error"`
			Count   int    `json:"count"`
			FirstID uint64 `json:"firstId"`
		} `json:"groups"`
	}
	list = listView{}
	decode(t, do(h, "GET", "/groups?source="+url.QueryEscape(src), ""), http.StatusOK, &groups)
	if len(groups.Groups) != 2 || groups.Groups[0].FirstID != l1.ID || groups.Groups[0].Count != 1 || groups.Groups[0].Error != errBoom.Error() {
		t.Errorf("GET /groups = %+v", groups)
	}
}

func testHTTPWrite(t *testing.T, e *env) {
	h := deadletter.NewHandler(e.Store, deadletter.HandlerConfig{Authorize: operator})
	l1 := add(t, e, nil, "order-1", 1, errBoom)
	p2 := park(t, e, nil, "order-1", 2)
	l3 := add(t, e, nil, "order-3", 3, errBoom)
	l4 := add(t, e, nil, "order-4", 4, errors.New("group me"))
	l5 := add(t, e, nil, "order-5", 5, errors.New("group me"))

	var resp struct {
		Requested int `json:"requested"`
	}
	decode(t, do(h, "POST", fmt.Sprintf("/letters/%d/replay", l1.ID), ""), http.StatusOK, &resp)
	if resp.Requested != 1 {
		t.Errorf("replay one: %+v", resp)
	}
	wantState(t, e, l1.ID, deadletter.Requested)
	wantHTTPProblem(t, "second replay", do(h, "POST", fmt.Sprintf("/letters/%d/replay", l1.ID), ""), http.StatusConflict)
	wantHTTPProblem(t, "replay of a parked message", do(h, "POST", fmt.Sprintf("/letters/%d/replay", p2.ID), ""), http.StatusConflict)
	wantHTTPProblem(t, "replay of a missing letter", do(h, "POST", "/letters/9999/replay", ""), http.StatusNotFound)

	decode(t, do(h, "POST", "/replay", fmt.Sprintf(`{"ids":[%d]}`, l3.ID)), http.StatusOK, &resp)
	if resp.Requested != 1 {
		t.Errorf("replay many: %+v", resp)
	}
	decode(t, do(h, "POST", "/replay", fmt.Sprintf(`{"source":%q,"error":"group me"}`, src)), http.StatusOK, &resp)
	if resp.Requested != 2 {
		t.Errorf("replay group: %+v", resp)
	}
	wantState(t, e, l4.ID, deadletter.Requested)
	wantState(t, e, l5.ID, deadletter.Requested)

	l6 := add(t, e, nil, "order-6", 6, errBoom)
	var d letterView
	decode(t, do(h, "POST", fmt.Sprintf("/letters/%d/discard", l6.ID), `{"reason":"customer cancelled"}`), http.StatusOK, &d)
	if d.State != "discarded" || d.Reason != "customer cancelled" {
		t.Errorf("discard: %+v", d)
	}
	wantHTTPProblem(t, "second discard", do(h, "POST", fmt.Sprintf("/letters/%d/discard", l6.ID), `{"reason":"again"}`), http.StatusConflict)
	wantHTTPProblem(t, "discard without a reason", do(h, "POST", fmt.Sprintf("/letters/%d/discard", l1.ID), `{}`), http.StatusBadRequest)
	if got := redeliver(t, e); len(got) != 5 {
		t.Errorf("the replays requested over HTTP delivered %v, want 5 messages", got)
	}
}

func testHTTPNoAuthorizer(t *testing.T, e *env) {
	h := deadletter.NewHandler(e.Store, deadletter.HandlerConfig{})
	l := add(t, e, nil, "order-1", 1, errBoom)
	if w := do(h, "GET", "/letters", ""); w.Code != http.StatusOK {
		t.Errorf("GET /letters without an authorizer: %d, want 200", w.Code)
	}
	wantHTTPProblem(t, "replay without an authorizer", do(h, "POST", fmt.Sprintf("/letters/%d/replay", l.ID), ""), http.StatusForbidden)
	wantHTTPProblem(t, "replay many without an authorizer", do(h, "POST", "/replay", fmt.Sprintf(`{"ids":[%d]}`, l.ID)), http.StatusForbidden)
	wantHTTPProblem(t, "discard without an authorizer", do(h, "POST", fmt.Sprintf("/letters/%d/discard", l.ID), `{"reason":"x"}`), http.StatusForbidden)
	wantState(t, e, l.ID, deadletter.Failed)
}

func testHTTPRefused(t *testing.T, e *env) {
	h := deadletter.NewHandler(e.Store, deadletter.HandlerConfig{Authorize: operator})
	l := add(t, e, nil, "order-1", 1, errBoom)
	for _, c := range []struct{ method, target, body string }{
		{"GET", "/letters", ""},
		{"GET", fmt.Sprintf("/letters/%d", l.ID), ""},
		{"GET", "/groups", ""},
		{"POST", fmt.Sprintf("/letters/%d/replay", l.ID), ""},
		{"POST", fmt.Sprintf("/letters/%d/discard", l.ID), `{"reason":"x"}`},
	} {
		r := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
		r.Header.Set("X-User", "intruder")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		wantHTTPProblem(t, c.method+" "+c.target+" by a user the authorizer refuses", w, http.StatusForbidden)
	}
	wantState(t, e, l.ID, deadletter.Failed)
}

func testHTTPBad(t *testing.T, e *env) {
	h := deadletter.NewHandler(e.Store, deadletter.HandlerConfig{Authorize: operator})
	for _, c := range []struct{ method, target, body string }{
		{"GET", "/letters?state=lost", ""},
		{"GET", "/letters?since=yesterday", ""},
		{"GET", "/letters?after=x", ""},
		{"GET", "/letters?limit=0", ""},
		{"GET", "/letters?limit=100000", ""},
		{"GET", "/groups?after=3", ""},
		{"GET", "/letters/abc", ""},
		{"GET", "/letters/0", ""},
		{"POST", "/replay", `{}`},
		{"POST", "/replay", `{"ids":[1],"source":"x","error":"y"}`},
		{"POST", "/replay", `{"ids":"x"}`},
		{"POST", "/replay", `{"idz":[1]}`},
		{"POST", "/replay", `{"source":"x"}`},
		{"POST", "/letters/1/discard", `not json`},
	} {
		wantHTTPProblem(t, c.method+" "+c.target+" "+c.body, do(h, c.method, c.target, c.body), http.StatusBadRequest)
	}
}
