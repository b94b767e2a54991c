package recado

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type orderPlaced struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

type orderPlacedV1 struct {
	ID    string `json:"id"`
	Cents int    `json:"cents"`
}

func TestRegistryRoundTrip(t *testing.T) {
	r := NewRegistry(nil)
	if err := Register[orderPlaced](r, "OrderPlaced"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{orderPlaced{"o1", 5}, &orderPlaced{"o1", 5}} {
		e, err := r.NewEvent(v, Metadata{CorrelationID: "o1"})
		if err != nil {
			t.Fatalf("NewEvent(%T) = %v", v, err)
		}
		if e.Type != "OrderPlaced" || e.ID == "" || e.Metadata.CorrelationID != "o1" {
			t.Errorf("NewEvent(%T) = %+v", v, e)
		}
		got, err := Decode[orderPlaced](r, e)
		if err != nil || got != (orderPlaced{"o1", 5}) {
			t.Errorf("Decode = %+v, %v", got, err)
		}
		anyV, err := r.Decode(e)
		if _, ok := anyV.(orderPlaced); !ok || err != nil {
			t.Errorf("Decode gives %T, %v; want orderPlaced", anyV, err)
		}
	}
}

func TestRegistryErrors(t *testing.T) {
	r := NewRegistry(nil)
	if err := Register[orderPlaced](r, "OrderPlaced"); err != nil {
		t.Fatal(err)
	}
	if err := Register[orderPlaced](r, "Other"); !errors.Is(err, ErrRegistered) {
		t.Errorf("registering a Go type twice: %v, want ErrRegistered", err)
	}
	if err := Register[orderPlacedV1](r, "OrderPlaced"); !errors.Is(err, ErrRegistered) {
		t.Errorf("registering a name twice: %v, want ErrRegistered", err)
	}
	if err := Register[*orderPlacedV1](r, "P"); err == nil {
		t.Error("registering a pointer type succeeded")
	}
	if err := Register[orderPlacedV1](r, ""); err == nil {
		t.Error("registering an empty name succeeded")
	}
	if _, _, err := r.Encode(struct{ X int }{1}); !errors.Is(err, ErrUnknownType) {
		t.Errorf("Encode of an unregistered type: %v, want ErrUnknownType", err)
	}
	// Reading never fails on an unknown type; decoding it does, naming the type.
	e := Event{ID: "e1", Type: "Mystery", Data: []byte(`{}`)}
	_, err := r.Decode(e)
	var ute *UnknownTypeError
	if !errors.As(err, &ute) || ute.Type != "Mystery" || !errors.Is(err, ErrUnknownType) {
		t.Errorf("Decode of unknown type: %v", err)
	}
	if _, err := Decode[orderPlaced](r, Event{ID: "e2", Type: "OrderPlaced", Data: []byte(`{bad`)}); err == nil ||
		!strings.Contains(err.Error(), "e2") {
		t.Errorf("Decode of bad data: %v, want an error naming the event", err)
	}
	if err := r.AddUpcaster("OrderPlaced", func(e Event) (Event, error) { return e, nil }); !errors.Is(err, ErrRegistered) {
		t.Errorf("upcaster from a current name: %v, want ErrRegistered", err)
	}
}

func TestRegistryUpcastChain(t *testing.T) {
	r := NewRegistry(nil)
	if err := Register[orderPlaced](r, "OrderPlaced.v3"); err != nil {
		t.Fatal(err)
	}
	// v1 {"id","cents"} -> v2 {"order_id","cents"} -> v3 {"order_id","total"}
	must(t, r.AddUpcaster("OrderPlaced.v1", func(e Event) (Event, error) {
		var v1 orderPlacedV1
		if err := json.Unmarshal(e.Data, &v1); err != nil {
			return e, err
		}
		e.Type = "OrderPlaced.v2"
		e.Data, _ = json.Marshal(map[string]any{"order_id": v1.ID, "cents": v1.Cents})
		return e, nil
	}))
	must(t, r.AddUpcaster("OrderPlaced.v2", func(e Event) (Event, error) {
		var v2 struct {
			OrderID string `json:"order_id"`
			Cents   int    `json:"cents"`
		}
		if err := json.Unmarshal(e.Data, &v2); err != nil {
			return e, err
		}
		e.Type = "OrderPlaced.v3"
		e.Data, _ = json.Marshal(orderPlaced{OrderID: v2.OrderID, Total: v2.Cents})
		return e, nil
	}))
	got, err := Decode[orderPlaced](r, Event{ID: "e", Type: "OrderPlaced.v1", Data: []byte(`{"id":"o9","cents":250}`)})
	if err != nil || got != (orderPlaced{"o9", 250}) {
		t.Errorf("upcast v1 -> v3 = %+v, %v", got, err)
	}
	if _, err := Decode[orderPlaced](r, Event{ID: "e", Type: "OrderPlaced.v1", Data: []byte(`nope`)}); err == nil {
		t.Error("a failing upcaster did not fail the decode")
	}

	// An upcaster that fails and returns a zero Event: the error still names the
	// event it failed on.
	bad := NewRegistry(nil)
	must(t, bad.AddUpcaster("f.v1", func(Event) (Event, error) { return Event{}, errors.New("boom") }))
	if _, err := bad.Upcast(Event{ID: "ev-7", Type: "f.v1"}); err == nil || !strings.Contains(err.Error(), "ev-7") {
		t.Errorf("failing upcaster: error %v does not name event ev-7", err)
	}

	cyc := NewRegistry(nil)
	must(t, cyc.AddUpcaster("A", func(e Event) (Event, error) { e.Type = "B"; return e, nil }))
	must(t, cyc.AddUpcaster("B", func(e Event) (Event, error) { e.Type = "A"; return e, nil }))
	if _, err := cyc.Upcast(Event{Type: "A"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("upcaster cycle: %v, want an error", err)
	}
}

type upperCodec struct{ JSONCodec }

func (c upperCodec) Marshal(v any) ([]byte, error) {
	b, err := c.JSONCodec.Marshal(v)
	return []byte(strings.ToUpper(string(b))), err
}

func TestRegistryCustomCodec(t *testing.T) {
	r := NewRegistry(upperCodec{})
	must(t, Register[orderPlaced](r, "OrderPlaced"))
	_, data, err := r.Encode(orderPlaced{OrderID: "abc"})
	if err != nil || !strings.Contains(string(data), "ABC") {
		t.Errorf("Encode with custom codec = %s, %v", data, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
