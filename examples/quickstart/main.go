// Command quickstart shows recado's event store in one minute: it opens an
// SQLite file, appends events under optimistic concurrency, retries an append
// safely, reads a stream back as Go values, and follows the global log with a
// live subscription.
//
//	go run ./examples/quickstart            # a fresh file in a temporary folder
//	go run ./examples/quickstart -db my.db  # keep the file; run again to add more
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/sqlite"
)

// The events of an order. Type names are stored with the events: keep them
// when the Go types are renamed.
type (
	OrderPlaced struct {
		OrderID string   `json:"order_id"`
		Items   []string `json:"items"`
		Total   int      `json:"total_cents"`
	}
	OrderPaid struct {
		OrderID string `json:"order_id"`
		Method  string `json:"method"`
	}
)

func main() {
	path := flag.String("db", "", "SQLite file to use (default: a new file in a temporary folder)")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *path); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, w io.Writer, path string) error {
	if path == "" {
		dir, err := os.MkdirTemp("", "recado-quickstart-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "quickstart.db")
	}
	db, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	store := db.Events()

	reg := recado.NewRegistry(nil)
	if err := errors.Join(
		recado.Register[OrderPlaced](reg, "OrderPlaced"),
		recado.Register[OrderPaid](reg, "OrderPaid"),
	); err != nil {
		return err
	}
	fmt.Fprintln(w, "event store:", path)

	// 1. Place an order: the stream must not exist yet.
	id := recado.NewID()
	orderID := id[len(id)-8:] // the random end of a UUIDv7
	stream := "order-" + orderID
	placed, err := reg.NewEvent(OrderPlaced{OrderID: orderID, Items: []string{"tea", "cup"}, Total: 1850},
		recado.Metadata{CorrelationID: orderID})
	if err != nil {
		return err
	}
	res, err := store.Append(ctx, stream, []recado.Event{placed}, eventstore.Expect(eventstore.NoStream))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "appended OrderPlaced to %s: version %d, position %s\n", stream, res.LastVersion, res.LastPosition)

	// 2. The network failed and we do not know whether that append went through:
	// retrying with the same event (same ID) is safe and stores nothing new.
	again, err := store.Append(ctx, stream, []recado.Event{placed}, eventstore.Expect(eventstore.NoStream))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "retried the same append: duplicate=%v, same position %s\n", again.Duplicate, again.LastPosition)

	// 3. Two writers decided on version 1; only the first one's append wins.
	paid, _ := reg.NewEvent(OrderPaid{OrderID: orderID, Method: "card"}, recado.Metadata{CorrelationID: orderID})
	if _, err := store.Append(ctx, stream, []recado.Event{paid}, eventstore.ExpectVersion(res.LastVersion)); err != nil {
		return err
	}
	stale, _ := reg.NewEvent(OrderPaid{OrderID: orderID, Method: "voucher"}, recado.Metadata{})
	_, err = store.Append(ctx, stream, []recado.Event{stale}, eventstore.ExpectVersion(res.LastVersion))
	var conflict *eventstore.ConflictError
	if !errors.As(err, &conflict) {
		return fmt.Errorf("expected a conflict, got %v", err)
	}
	fmt.Fprintf(w, "a stale writer is refused: expected version %s, actual %d\n", conflict.Expected, conflict.Actual)

	// 4. Read the stream back as Go values.
	fmt.Fprintln(w, "stream", stream+":")
	for e, err := range store.ReadStream(ctx, stream) {
		if err != nil {
			return err
		}
		v, err := reg.Decode(e)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  v%d %-11s %+v\n", e.Version, e.Type, v)
	}

	// 5. Follow every order stream from the start of the log, then live: when
	// the subscription has caught up, a second order is placed, and it arrives
	// at once (the store wakes its subscribers on commit).
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	late := "order-late-" + orderID
	fmt.Fprintln(w, "subscription to order-*:")
	filter := eventstore.Filter{StreamPrefixes: []string{"order-"}}
	for m, err := range store.Subscribe(ctx, recado.Position{}, eventstore.WithFilter(filter)) {
		if err != nil {
			return err
		}
		switch m.Kind {
		case eventstore.KindEvent:
			fmt.Fprintf(w, "  %-6s %-22s %s\n", m.Position, m.Event.Stream, m.Event.Type)
			if m.Event.Stream == late {
				fmt.Fprintln(w, "done: the late order arrived live")
				return nil
			}
		case eventstore.KindCaughtUp:
			fmt.Fprintf(w, "  caught up at %s; placing another order\n", m.Position)
			next, err := reg.NewEvent(OrderPlaced{OrderID: "late", Items: []string{"pot"}, Total: 3200}, recado.Metadata{})
			if err != nil {
				return err
			}
			if _, err := store.Append(ctx, late, []recado.Event{next}); err != nil {
				return err
			}
		}
	}
	return nil
}
