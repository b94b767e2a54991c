package memory_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
)

// Append to a stream, read it back, and subscribe to the global log: catch up
// with what is stored, then receive an event appended while the subscription
// waits.
func ExampleDB_Events() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()
	store := db.Events()

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

	for m, err := range store.Subscribe(ctx, recado.Position{}) {
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
	// stale append: eventstore: append "order-42": expected version 1, actual version 2 (stream exists)
	// 1 OrderPlaced {"total":1999}
	// 2 OrderPaid {"amount":1999}
	// event at 1 order-42 OrderPlaced
	// event at 2 order-42 OrderPaid
	// caught up at 2
	// event at 3 order-42 OrderShipped
}

// A unit of work appends to two streams: both commit, or, when its function
// fails, neither does. Inside the unit, State sees what the unit wrote;
// outside, nothing shows until it commits.
func ExampleDB_Tx() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()
	store := db.Events()

	errOutOfStock := errors.New("out of stock")
	reserve := func(qty int) error {
		return db.Tx(ctx, func(tx *memory.Tx) error {
			in := eventstore.InTx(tx)
			if _, err := store.Append(ctx, "order-7", []recado.Event{recado.NewEvent("OrderPlaced", nil)}, in); err != nil {
				return err
			}
			st, err := store.State(ctx, "order-7", in)
			if err != nil {
				return err
			}
			outside, err := store.State(ctx, "order-7")
			if err != nil {
				return err
			}
			fmt.Println("inside: version", st.Version, "- outside: version", outside.Version)
			if qty > 3 {
				return errOutOfStock
			}
			tx.OnCommit(func() { fmt.Println("committed") })
			_, err = store.Append(ctx, "stock-1", []recado.Event{recado.NewEvent("StockReserved", nil)}, in)
			return err
		})
	}

	fmt.Println("reserve 5:", reserve(5))
	fmt.Println("reserve 2:", reserve(2))
	for e, err := range store.ReadAll(ctx, recado.Position{}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(e.Position, e.Stream, e.Type)
	}
	// Output:
	// inside: version 1 - outside: version 0
	// reserve 5: out of stock
	// inside: version 1 - outside: version 0
	// committed
	// reserve 2: <nil>
	// 1 order-7 OrderPlaced
	// 2 stock-1 StockReserved
}
