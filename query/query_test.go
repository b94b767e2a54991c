package query_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/query"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/problem"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeWaiter reaches every position up to reached at once, and never one
// after it.
type fakeWaiter struct {
	mu      sync.Mutex
	reached recado.Position
	asked   []recado.Position
}

func (f *fakeWaiter) WaitFor(ctx context.Context, pos recado.Position) error {
	f.mu.Lock()
	f.asked = append(f.asked, pos)
	ok := !f.reached.Before(pos)
	f.mu.Unlock()
	if ok {
		return nil
	}
	<-ctx.Done()
	return fmt.Errorf("waiting: %w", ctx.Err())
}

var echo = query.HandlerFunc[string, string](func(_ context.Context, q string) (string, error) { return "answer to " + q, nil })

func TestConsistent(t *testing.T) {
	w := &fakeWaiter{reached: recado.NewPosition(10, 0)}
	h := query.Consistent(echo, w, 20*time.Millisecond)
	got, err := h.Handle(t.Context(), "q")
	if err != nil || got != "answer to q" || len(w.asked) != 0 {
		t.Errorf("without a position: %q, %v, waited for %v; want the answer at once", got, err, w.asked)
	}
	got, err = h.Handle(query.WithPosition(t.Context(), recado.NewPosition(10, 0)), "q")
	if err != nil || got != "answer to q" || len(w.asked) != 1 || w.asked[0] != recado.NewPosition(10, 0) {
		t.Errorf("with a position reached: %q, %v, waited for %v; want the answer after waiting for 10", got, err, w.asked)
	}
	_, err = h.Handle(query.WithPosition(t.Context(), recado.NewPosition(11, 0)), "q")
	var te *query.TimeoutError
	if !errors.Is(err, query.ErrTimeout) || !errors.As(err, &te) || te.Position != recado.NewPosition(11, 0) ||
		te.Timeout != 20*time.Millisecond || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("with a position not reached = %v, want a *TimeoutError for 11 after 20ms", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.Handle(query.WithPosition(ctx, recado.NewPosition(11, 0)), "q"); errors.Is(err, query.ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Errorf("with the caller gone = %v, want context.Canceled, not a timeout", err)
	}
	if pos, ok := query.PositionFrom(t.Context()); ok {
		t.Errorf("PositionFrom a plain context = %v, true; want false", pos)
	}
}

func get(t *testing.T, srv *httptest.Server, path string, header string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
	if header != "" {
		req.Header.Set(query.PositionHeader, header)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func readProblem(t *testing.T, resp *http.Response, body []byte) problem.Details {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("Content-Type = %q, want %q; body %s", ct, problem.ContentType, body)
	}
	var d problem.Details
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestHTTPRequests(t *testing.T) {
	w := &fakeWaiter{reached: recado.NewPosition(10, 0)}
	decode := func(r *http.Request) (string, error) {
		q := r.URL.Query().Get("q")
		switch q {
		case "":
			return "", errors.New("no q")
		case "teapot":
			return "", problem.New(http.StatusTeapot, "short and stout")
		}
		return q, nil
	}
	h := query.HandlerFunc[string, string](func(_ context.Context, q string) (string, error) {
		switch q {
		case "missing":
			return "", fmt.Errorf("order 7: %w", query.ErrNotFound)
		case "broken":
			return "", errors.New("secret connection string")
		}
		return "answer to " + q, nil
	})
	srv := httptest.NewServer(query.NewHTTPHandler(h, query.HTTPOptions[string, string]{Decode: decode, Waiter: w, Timeout: 20 * time.Millisecond}))
	defer srv.Close()
	noWait := httptest.NewServer(query.NewHTTPHandler(h, query.HTTPOptions[string, string]{Decode: decode}))
	defer noWait.Close()

	cases := []struct {
		name, path, header string
		srv                *httptest.Server
		status             int
		body               string // for 200
		problem            string // in the problem's detail, or its type
	}{
		{"no position", "/?q=a", "", srv, 200, `"answer to a"`, ""},
		{"position reached, header", "/?q=a", "10", srv, 200, `"answer to a"`, ""},
		{"position reached, parameter", "/?q=a&position=9", "", srv, 200, `"answer to a"`, ""},
		{"header and parameter agree", "/?q=a&position=9", "9", srv, 200, `"answer to a"`, ""},
		{"header and parameter differ", "/?q=a&position=9", "8", srv, 400, "", "differ"},
		{"malformed position", "/?q=a", "ten", srv, 400, "", "malformed position"},
		{"position not reached", "/?q=a", "11", srv, 503, "", query.TypeBehind},
		{"no waiter", "/?q=a", "1", noWait, 400, "", "does not wait"},
		{"bad query", "/", "", srv, 400, "", "no q"},
		{"decoder's problem", "/?q=teapot", "", srv, 418, "", "short and stout"},
		{"not found", "/?q=missing", "", srv, 404, "", "not found"},
		{"handler fails", "/?q=broken", "", srv, 500, "", "the query failed"},
	}
	for _, c := range cases {
		resp, body := get(t, c.srv, c.path, c.header)
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d; body %s", c.name, resp.StatusCode, c.status, body)
			continue
		}
		if c.status == 200 {
			if strings.TrimSpace(string(body)) != c.body || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s: body %s (%s), want %s as JSON", c.name, body, resp.Header.Get("Content-Type"), c.body)
			}
			continue
		}
		d := readProblem(t, resp, body)
		if !strings.Contains(d.Detail, c.problem) && d.Type != c.problem {
			t.Errorf("%s: problem %+v, want %q in it", c.name, d, c.problem)
		}
		if strings.Contains(string(body), "secret") {
			t.Errorf("%s: the answer shows the handler's error: %s", c.name, body)
		}
		if c.status == 503 && (resp.Header.Get("Retry-After") != "1" || d.Extensions["position"] != "11") {
			t.Errorf("%s: Retry-After %q, extensions %v; want 1 and the position", c.name, resp.Header.Get("Retry-After"), d.Extensions)
		}
	}
}

// orderView is the read model of the end-to-end test: order totals by
// order, in process memory, updated when the runner's unit commits.
type orderView struct {
	mu     sync.Mutex
	orders map[string]int
}

func (v *orderView) apply(_ context.Context, tx *memory.Tx, e projection.Event) error {
	if e.Type == "Poison" {
		return resilience.MarkPermanent(errors.New("amount is not a number"))
	}
	tx.OnCommit(func() {
		v.mu.Lock()
		v.orders[e.Stream]++
		v.mu.Unlock()
	})
	return nil
}

// A client appends an order (as a command would) and reads it back at once,
// passing the position it got: the answer always has it. A position whose
// event is parked is answered with a problem that names the letter.
func TestHTTPReadYourWrites(t *testing.T) {
	db := memory.New()
	defer db.Close()
	stores := projection.Stores{Events: db.Events(), Checkpoints: db.Checkpoints(checkpoint.Config{}),
		Leases: db.Leases(lease.Config{}), DeadLetters: db.DeadLetters(deadletter.Config{})}
	view := &orderView{orders: map[string]int{}}
	r, err := projection.NewRunner(db, stores, projection.Options[*memory.Tx]{
		Name: "order-view", Handler: projection.HandlerFunc[*memory.Tx](view.apply), Partitions: 2,
		PollInterval: 5 * time.Millisecond, Clock: resiliencetest.NewAutoClock(time.Now()),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	lookup := query.HandlerFunc[string, int](func(_ context.Context, id string) (int, error) {
		view.mu.Lock()
		defer view.mu.Unlock()
		n, ok := view.orders[id]
		if !ok {
			return 0, query.ErrNotFound
		}
		return n, nil
	})
	mux := http.NewServeMux()
	mux.Handle("GET /orders/{id}", query.NewHTTPHandler(lookup, query.HTTPOptions[string, int]{
		Decode:  func(r *http.Request) (string, error) { return r.PathValue("id"), nil },
		Waiter:  r,
		Timeout: 10 * time.Second,
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for i := range 50 {
		id := fmt.Sprintf("order-%d", i)
		res, err := db.Events().Append(t.Context(), id, []recado.Event{recado.NewEvent("OrderPlaced", []byte(`{}`))},
			eventstore.Expect(eventstore.NoStream))
		if err != nil {
			t.Fatal(err)
		}
		resp, body := get(t, srv, "/orders/"+id, res.LastPosition.String())
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "1" {
			t.Fatalf("GET %s with its position = %d %s, want 200 and the order", id, resp.StatusCode, body)
		}
	}

	bad, err := db.Events().Append(t.Context(), "order-7", []recado.Event{recado.NewEvent("Poison", []byte(`{}`))})
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, srv, "/orders/order-7?position="+bad.LastPosition.String(), "")
	if resp.StatusCode != 500 {
		t.Fatalf("GET with the position of a parked event = %d %s, want 500", resp.StatusCode, body)
	}
	d := readProblem(t, resp, body)
	letters, err := stores.DeadLetters.List(t.Context(), deadletter.Query{})
	if err != nil || len(letters) != 1 {
		t.Fatalf("letters = %v, %v; want one", letters, err)
	}
	id := float64(letters[0].ID)
	if d.Type != query.TypeParked || d.Extensions["deadLetter"] != id || d.Extensions["headLetter"] != id ||
		!strings.Contains(d.Detail, "amount is not a number") {
		t.Errorf("problem = %+v, want type %s naming dead letter %v and its error", d, query.TypeParked, id)
	}
}
