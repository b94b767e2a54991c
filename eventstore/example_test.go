package eventstore_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
)

func ExampleStore_Append() {
	ctx := context.Background()
	store := memory.New().Events()

	placed := recado.NewEvent("OrderPlaced", []byte(`{"order_id":"42"}`))
	res, err := store.Append(ctx, "order-42", []recado.Event{placed}, eventstore.Expect(eventstore.NoStream))
	fmt.Println(res.LastVersion, res.LastPosition, err)

	// A retry of the same events (same IDs) stores nothing new.
	res, err = store.Append(ctx, "order-42", []recado.Event{placed}, eventstore.Expect(eventstore.NoStream))
	fmt.Println(res.LastVersion, res.Duplicate, err)

	// A writer that read version 0 is refused.
	paid := recado.NewEvent("OrderPaid", []byte(`{}`))
	_, err = store.Append(ctx, "order-42", []recado.Event{paid}, eventstore.Expect(eventstore.NoStream))
	var conflict *eventstore.ConflictError
	fmt.Println(errors.Is(err, eventstore.ErrConflict), errors.As(err, &conflict) && conflict.Actual == 1)
	// Output:
	// 1 1 <nil>
	// 1 true <nil>
	// true true
}

func ExampleStore_ReadStream() {
	ctx := context.Background()
	store := memory.New().Events()
	for _, typ := range []string{"Placed", "Paid", "Shipped"} {
		if _, err := store.Append(ctx, "order-7", []recado.Event{recado.NewEvent(typ, nil)}); err != nil {
			fmt.Println(err)
		}
	}
	for e, err := range store.ReadStream(ctx, "order-7", eventstore.Backwards(), eventstore.Limit(2)) {
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Println(e.Version, e.Type)
	}
	for _, err := range store.ReadStream(ctx, "order-8") {
		fmt.Println(errors.Is(err, eventstore.ErrStreamNotFound))
	}
	// Output:
	// 3 Shipped
	// 2 Paid
	// true
}

func ExampleStore_Subscribe() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := memory.New().Events()
	for _, stream := range []string{"order-1", "cart-1", "order-2"} {
		if _, err := store.Append(ctx, stream, []recado.Event{recado.NewEvent("Created", nil)}); err != nil {
			fmt.Println(err)
		}
	}

	// Catch up on the order streams, then receive new events live.
	orders := eventstore.Filter{StreamPrefixes: []string{"order-"}}
	var checkpoint recado.Position
	for m, err := range store.Subscribe(ctx, checkpoint, eventstore.WithFilter(orders)) {
		if err != nil {
			fmt.Println(err)
			break
		}
		checkpoint = m.Position // store it to resume after it
		switch m.Kind {
		case eventstore.KindEvent:
			fmt.Println("event", m.Event.Stream, "at", m.Position)
		case eventstore.KindCaughtUp:
			fmt.Println("caught up at", m.Position)
			if m.Position.Compare(recado.NewPosition(4, 0)) >= 0 {
				return
			}
			// A new event arrives while we wait.
			_, _ = store.Append(ctx, "order-3", []recado.Event{recado.NewEvent("Created", nil)})
		}
	}
	// Output:
	// event order-1 at 1
	// event order-2 at 3
	// caught up at 3
	// event order-3 at 4
	// caught up at 4
}

func ExampleStore_State() {
	ctx := context.Background()
	store := memory.New().Events()
	_, err := store.Append(ctx, "cart-9", []recado.Event{recado.NewEvent("ItemAdded", nil), recado.NewEvent("ItemAdded", nil)})
	fmt.Println(err)
	st, err := store.State(ctx, "cart-9")
	fmt.Printf("%+v %v\n", st, err)

	// A soft-deleted stream keeps its version: the next append continues from it.
	err = store.Delete(ctx, "cart-9", eventstore.ExpectVersion(2))
	fmt.Println(err)
	st, _ = store.State(ctx, "cart-9")
	fmt.Printf("%+v\n", st)

	st, _ = store.State(ctx, "cart-10") // never written: the zero state
	fmt.Printf("%+v\n", st)
	// Output:
	// <nil>
	// {Version:2 Exists:true Deleted:false Tombstoned:false} <nil>
	// <nil>
	// {Version:2 Exists:false Deleted:true Tombstoned:false}
	// {Version:0 Exists:false Deleted:false Tombstoned:false}
}

func ExampleExact() {
	ctx := context.Background()
	store := memory.New().Events()
	res, _ := store.Append(ctx, "order-1", []recado.Event{recado.NewEvent("Placed", nil)}, eventstore.Expect(eventstore.NoStream))

	// Writers that read version 1 race; one wins, the other learns the version it missed.
	_, err := store.Append(ctx, "order-1", []recado.Event{recado.NewEvent("Paid", nil)}, eventstore.Expect(eventstore.Exact(res.LastVersion)))
	fmt.Println(err)
	_, err = store.Append(ctx, "order-1", []recado.Event{recado.NewEvent("Cancelled", nil)}, eventstore.Expect(eventstore.Exact(res.LastVersion)))
	fmt.Println(err)
	// Output:
	// <nil>
	// eventstore: append "order-1": expected version 1, actual version 2 (stream exists)
}
