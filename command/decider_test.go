package command_test

import (
	"errors"
	"reflect"
	"testing"

	ct "github.com/recado-dev/recado/command/commandtest"
)

// The sample order decider, as given/when/then: given past events, when a
// command, then new events or a refusal. No store is involved.
func TestOrderDecider(t *testing.T) {
	placed := ct.OrderPlaced{OrderID: "1", Items: []string{"tea"}, Total: 450}
	line := func(n int) ct.LineAdded { return ct.LineAdded{OrderID: "1", Line: n, Item: "cup"} }
	tests := []struct {
		name    string
		given   []ct.OrderEvent
		when    ct.OrderCommand
		then    []ct.OrderEvent
		refused error
	}{
		{"place a new order", nil, ct.PlaceOrder{OrderID: "1", Items: []string{"tea"}, Total: 450}, []ct.OrderEvent{placed}, nil},
		{"place it twice", []ct.OrderEvent{placed}, ct.PlaceOrder{OrderID: "1", Items: []string{"pot"}}, nil, ct.ErrPlaced},
		{"add the first line", []ct.OrderEvent{placed}, ct.AddLine{OrderID: "1", Line: 1, Item: "cup"}, []ct.OrderEvent{line(1)}, nil},
		{"add the next line", []ct.OrderEvent{placed, line(1), line(2)}, ct.AddLine{OrderID: "1", Line: 3, Item: "cup"}, []ct.OrderEvent{line(3)}, nil},
		{"a line out of order", []ct.OrderEvent{placed, line(1)}, ct.AddLine{OrderID: "1", Line: 3}, nil, ct.ErrLineOrder},
		{"a line twice", []ct.OrderEvent{placed, line(1)}, ct.AddLine{OrderID: "1", Line: 1}, nil, ct.ErrLineOrder},
		{"a line before the order", nil, ct.AddLine{OrderID: "1", Line: 1}, nil, ct.ErrNotPlaced},
		{"cancel", []ct.OrderEvent{placed, line(1)}, ct.CancelOrder{OrderID: "1", Reason: "changed my mind"},
			[]ct.OrderEvent{ct.OrderCancelled{OrderID: "1", Reason: "changed my mind"}}, nil},
		{"cancel twice", []ct.OrderEvent{placed, ct.OrderCancelled{OrderID: "1"}}, ct.CancelOrder{OrderID: "1"}, nil, ct.ErrCancelled},
		{"cancel before the order", nil, ct.CancelOrder{OrderID: "1"}, nil, ct.ErrNotPlaced},
		{"a line after the cancel", []ct.OrderEvent{placed, ct.OrderCancelled{OrderID: "1"}}, ct.AddLine{OrderID: "1", Line: 1}, nil, ct.ErrCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ct.Orders.Run(tc.given, tc.when)
			if !errors.Is(err, tc.refused) {
				t.Fatalf("refusal = %v, want %v", err, tc.refused)
			}
			if !reflect.DeepEqual(got, tc.then) {
				t.Errorf("events = %+v, want %+v", got, tc.then)
			}
		})
	}
}

func TestOrderFold(t *testing.T) {
	o := ct.Orders.Fold(
		ct.OrderPlaced{OrderID: "1", Items: []string{"tea"}, Total: 450},
		ct.LineAdded{OrderID: "1", Line: 1, Item: "cup"},
		ct.OrderCancelled{OrderID: "1"},
	)
	want := ct.Order{ID: "1", Placed: true, Cancelled: true, Items: []string{"tea", "cup"}, Total: 450, Lines: 1}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("Fold = %+v, want %+v", o, want)
	}
	if zero := ct.Orders.Fold(); !reflect.DeepEqual(zero, ct.Order{}) {
		t.Errorf("Fold() = %+v, want the zero ct.Order", zero)
	}
}
