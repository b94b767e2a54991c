package postgres_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/postgres"
)

// Opening the event store on a pool, appending, reading the log, and
// appending in a unit of work together with a read-model write. (It needs a
// server, so it is compiled, not run, by go test.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	db, err := postgres.Open(ctx, pool, postgres.Options{Schema: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	store := db.Events()

	placed := recado.NewEvent("OrderPlaced", []byte(`{"total":42}`))
	res, err := store.Append(ctx, "order-42", []recado.Event{placed}, eventstore.Expect(eventstore.NoStream))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("order-42 at version", res.LastVersion, "position", res.LastPosition)

	// The event and the read model commit together, or not at all.
	err = db.Tx(ctx, func(tx *postgres.Tx) error {
		paid := recado.NewEvent("OrderPaid", []byte(`{}`))
		if _, err := store.Append(ctx, "order-42", []recado.Event{paid}, eventstore.InTx(tx), eventstore.ExpectVersion(1)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE orders SET status = 'paid' WHERE id = 42")
		return err
	})
	if err != nil {
		log.Fatal(err)
	}

	for e, err := range store.ReadAll(ctx, recado.Position{}, eventstore.Limit(10)) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Position, e.Stream, e.Version, e.Type)
	}

	// How long readers are held back by an open transaction: alert on it.
	h, err := db.Horizon(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("readers held back for", h.Age, "by", h.HeldBack, "events")
}
