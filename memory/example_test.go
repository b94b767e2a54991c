package memory_test

import (
	"context"
	"fmt"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
)

// Append to a stream, read it back, and subscribe to the global log: catch up
// with what is stored, then receive an event appended while the subscription
// waits.
func Example() {
	ctx := context.Background()
	store := memory.New()
	defer store.Close()

	res, err := store.Append(ctx, "order-42", []recado.Event{
		recado.NewEvent("OrderPlaced", []byte(`{"total":1999}`)),
		recado.NewEvent("OrderPaid", []byte(`{"amount":1999}`)),
	}, eventstore.Expect(eventstore.NoStream))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("appended versions", res.FirstVersion, "to", res.LastVersion)

	// The next append expects version 2; one expecting version 1 conflicts.
	_, err = store.Append(ctx, "order-42", []recado.Event{recado.NewEvent("OrderShipped", nil)}, eventstore.ExpectVersion(1))
	fmt.Println("stale append:", err)

	for e, err := range store.ReadStream(ctx, "order-42") {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(e.Version, e.Type, string(e.Data))
	}

	for m, err := range eventstore.Subscribe(ctx, store, recado.Position{}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		switch m.Kind {
		case eventstore.KindEvent:
			fmt.Println("event at", m.Position, m.Event.Stream, m.Event.Type)
			if m.Event.Type == "OrderShipped" {
				return
			}
		case eventstore.KindCaughtUp:
			fmt.Println("caught up at", m.Position)
			_, err := store.Append(ctx, "order-42", []recado.Event{recado.NewEvent("OrderShipped", nil)}, eventstore.ExpectVersion(2))
			if err != nil {
				fmt.Println(err)
				return
			}
		}
	}
	// Output:
	// appended versions 1 to 2
	// stale append: eventstore: stream "order-42": expected version 1, actual version 2 (stream exists)
	// 1 OrderPlaced {"total":1999}
	// 2 OrderPaid {"amount":1999}
	// event at 1 order-42 OrderPlaced
	// event at 2 order-42 OrderPaid
	// caught up at 2
	// event at 3 order-42 OrderShipped
}
