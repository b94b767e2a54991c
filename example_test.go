package recado_test

import (
	"fmt"

	"github.com/recado-dev/recado"
)

type OrderPlaced struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

func ExampleRegistry() {
	reg := recado.NewRegistry(nil) // JSON
	if err := recado.Register[OrderPlaced](reg, "OrderPlaced"); err != nil {
		fmt.Println(err)
		return
	}
	e, err := reg.NewEvent(OrderPlaced{OrderID: "o-1", Total: 4200}, recado.Metadata{CorrelationID: "o-1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.Type, string(e.Data))

	placed, err := recado.Decode[OrderPlaced](reg, e)
	fmt.Println(placed.OrderID, placed.Total, err)
	// Output:
	// OrderPlaced {"order_id":"o-1","total":4200}
	// o-1 4200 <nil>
}

func ExampleRegistry_AddUpcaster() {
	reg := recado.NewRegistry(nil)
	_ = recado.Register[OrderPlaced](reg, "OrderPlaced.v2")
	// Version 1 stored the total in euros as "amount"; version 2 keeps cents.
	_ = reg.AddUpcaster("OrderPlaced.v1", func(e recado.Event) (recado.Event, error) {
		var v1 struct {
			OrderID string `json:"order_id"`
			Amount  int    `json:"amount"`
		}
		if err := reg.Codec().Unmarshal(e.Data, &v1); err != nil {
			return e, err
		}
		data, err := reg.Codec().Marshal(OrderPlaced{OrderID: v1.OrderID, Total: v1.Amount * 100})
		e.Type, e.Data = "OrderPlaced.v2", data
		return e, err
	})
	old := recado.Event{ID: recado.NewID(), Type: "OrderPlaced.v1", Data: []byte(`{"order_id":"o-7","amount":12}`)}
	placed, err := recado.Decode[OrderPlaced](reg, old)
	fmt.Println(placed.OrderID, placed.Total, err)
	// Output: o-7 1200 <nil>
}

func ExamplePosition() {
	p := recado.NewPosition(1042, 0)
	q, _ := recado.ParsePosition("1043")
	fmt.Println(p, q, p.Compare(q), p.Before(q))
	// Output: 1042 1043 -1 true
}
