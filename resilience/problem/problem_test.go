package problem

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestWriteAndRead(t *testing.T) {
	want := Details{
		Type: "https://recado.dev/problems/circuit-open", Title: "Service Unavailable", Status: 503,
		Detail: "cart is failing", Instance: "/cart/42",
		Extensions: map[string]any{"retryAfter": 5.0, "breaker": "cart"},
	}
	rec := httptest.NewRecorder()
	if err := Write(rec, want); err != nil {
		t.Fatal(err)
	}
	resp := rec.Result()
	if resp.StatusCode != 503 || resp.Header.Get("Content-Type") != ContentType {
		t.Errorf("status %d, Content-Type %q; want 503, %q", resp.StatusCode, resp.Header.Get("Content-Type"), ContentType)
	}
	got, err := Read(resp)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestMarshalOmitsEmptyAndKeepsStandardMembers(t *testing.T) {
	b, err := json.Marshal(Details{Status: 404, Extensions: map[string]any{"status": "spoofed", "x": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"status":404,"x":1}`; got != want {
		t.Errorf("Marshal = %s, want %s", got, want)
	}
}

func TestUnmarshalIgnoresWrongTypes(t *testing.T) {
	var d Details
	if err := json.Unmarshal([]byte(`{"title":5,"status":"x","detail":"d"}`), &d); err != nil {
		t.Fatal(err)
	}
	if d.Title != "" || d.Status != 0 || d.Detail != "d" {
		t.Errorf("got %+v, want only Detail", d)
	}
}

func TestReadRejectsOtherMediaTypes(t *testing.T) {
	resp := &http.Response{StatusCode: 500, Header: http.Header{"Content-Type": {"text/plain"}},
		Body: http.NoBody}
	if _, err := Read(resp); !errors.Is(err, ErrNotProblem) {
		t.Errorf("err = %v, want ErrNotProblem", err)
	}
}

func TestNewAndError(t *testing.T) {
	d := New(http.StatusBadGateway, "upstream broke")
	if got, want := d.Error(), "502 Bad Gateway: upstream broke"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(`{"type":"about:blank","status":400,"x":[1,2]}`)
	f.Add(`{"status":1e400}`)
	f.Fuzz(func(t *testing.T, s string) {
		var d Details
		if json.Unmarshal([]byte(s), &d) != nil {
			return
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("Marshal after Unmarshal(%q): %v", s, err)
		}
		var again Details
		if err := json.Unmarshal(b, &again); err != nil || !strings.HasPrefix(string(b), "{") {
			t.Fatalf("re-read %s: %v", b, err)
		}
	})
}
