package command_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/resilience/problem"
)

// httpOrders returns the HTTP adapter over a memory DB with the sample
// order commands, under prefix.
func httpOrders(t testing.TB, prefix string) http.Handler {
	db, bus := orders(t)
	q, err := command.NewQueue(bus, db.Commands(command.StoreConfig{}), command.QueueConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return command.NewHTTPHandler(q, command.HTTPConfig{Prefix: prefix, MaxBody: 4 << 10})
}

// The adapter is a plain http.Handler: it works mounted at its prefix on any
// router (here http.ServeMux, as under gorilla/mux's PathPrefix).
func TestHTTPMounted(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/api/v1/commands/", httpOrders(t, "/api/v1/commands"))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/api/v1/commands/PlaceOrder", "application/json; charset=utf-8",
		strings.NewReader(`{"orderId":"1","items":["tea"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(loc, "/api/v1/commands/PlaceOrder/") {
		t.Fatalf("POST = %d, Location %q", resp.StatusCode, loc)
	}
	st, err := http.Get(srv.URL + loc)
	if err != nil {
		t.Fatal(err)
	}
	st.Body.Close()
	if st.StatusCode != http.StatusOK {
		t.Errorf("GET %s = %d, want 200", loc, st.StatusCode)
	}
}

// FuzzHTTPDecoder sends arbitrary commands to the adapter: no input makes it
// panic, and every input it does not accept (202) gets a 4xx, never a 5xx,
// with problem details.
func FuzzHTTPDecoder(f *testing.F) {
	f.Add("PlaceOrder", "application/json", "", []byte(`{"orderId":"1","items":["tea"],"totalCents":450}`))
	f.Add("PlaceOrder", "application/json", `"k-1"`, []byte(`{"orderId":"2","items":["tea"]}`))
	f.Add("AddLine", "application/problem+json", "k", []byte(`{"orderId":"2","line":1,"item":"cup"}`))
	f.Add("CancelOrder", "text/json", "", []byte(`{"orderId":"2"}`))
	f.Add("PlaceOrder", "application/json", `"\u00e9"`, []byte(`{"orderId":"\u0000","items":[null]}`))
	f.Add("PlaceOrder", "application/json;;", "", []byte(`[1,2]`))
	f.Add("PlaceOrder", "application/json", "", []byte(`{"orderId":"3","items":["a"]} {}`))
	f.Add("Place Order/1", "", "", []byte(``))
	f.Add("PlaceOrder", "application/json", "", []byte("{\"orderId\":\"\xff\",\"items\":[\"a\"]}"))
	f.Add("PlaceOrder", "application/json", "", bytes.Repeat([]byte("["), 5000))
	h := httpOrders(f, "")
	f.Fuzz(func(t *testing.T, typ, contentType, key string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/commands/x", bytes.NewReader(body))
		r.URL.Path = "/commands/" + typ
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		if key != "" {
			r.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		resp := w.Result()
		switch {
		case resp.StatusCode == http.StatusAccepted:
			if resp.Header.Get("Location") == "" {
				t.Errorf("202 without Location")
			}
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			if _, err := problem.Read(resp); err != nil {
				t.Errorf("%d is not problem details: %v", resp.StatusCode, err)
			}
		default:
			t.Errorf("POST %q (%q, key %q) %q: status %d, want 202 or a 4xx", typ, contentType, key, body, resp.StatusCode)
		}
	})
}
