package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/postgres"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// Order summaries kept by a projection in the database that holds the
// events: the summaries and the projection's checkpoint commit in one unit
// of work, so each event counts once. The handler is a
// projection.BatchHandler: while catching up, each unit's events are folded
// into one change per order and written in one statement. (It needs a
// server, so it is compiled, not run, by go test.)
func Example_projection() {
	ctx := context.Background()
	db, err := postgres.Connect(ctx, os.Getenv("DATABASE_URL"), postgres.Options{Schema: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	_, err = db.Pool().Exec(ctx, `CREATE TABLE IF NOT EXISTS order_summary_1 (
	id text PRIMARY KEY, items bigint NOT NULL, total bigint NOT NULL, paid boolean NOT NULL)`)
	if err != nil {
		log.Fatal(err)
	}
	stores := projection.Stores{
		Events:      db.Events(),
		Checkpoints: db.Checkpoints(checkpoint.Config{}),
		Leases:      db.Leases(lease.Config{}),
		DeadLetters: db.DeadLetters(deadletter.Config{}),
	}
	runner, err := projection.NewRunner(db, stores, projection.Options[*postgres.Tx]{
		Name:    "order-summaries",
		Handler: summaries{},
		Filter:  eventstore.Filter{StreamPrefixes: []string{"order-"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go runner.Run(ctx) // until ctx ends

	res, err := db.Events().Append(ctx, "order-1", []recado.Event{
		recado.NewEvent("ItemAdded", []byte(`{"price": 1250}`)),
		recado.NewEvent("ItemAdded", []byte(`{"price": 399}`)),
	})
	if err != nil {
		log.Fatal(err)
	}
	// Read your own write: wait until the summaries include the append.
	if err := runner.WaitFor(ctx, res.LastPosition); err != nil {
		log.Fatal(err)
	}
	var items, total int64
	err = db.Pool().QueryRow(ctx, "SELECT items, total FROM order_summary_1 WHERE id = $1", "order-1").Scan(&items, &total)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(items, total) // 2 1649
}

// summaries writes order summaries, a table per copy of the read model.
type summaries struct{}

// Apply applies one event: an event retried alone, or delivered again from
// the dead-letter queue.
func (s summaries) Apply(ctx context.Context, tx *postgres.Tx, e projection.Event) error {
	return s.ApplyBatch(ctx, tx, []projection.Event{e})
}

// ApplyBatch folds events into one change per order and writes them in one
// upsert. If an event is bad, the batch fails, and the runner applies the
// events one at a time to find it.
func (summaries) ApplyBatch(ctx context.Context, tx *postgres.Tx, events []projection.Event) error {
	type change struct {
		items, total int64
		paid         bool
	}
	changes := make(map[string]*change)
	var ids []string
	for _, e := range events {
		c := changes[e.Stream]
		if c == nil {
			c = &change{}
			changes[e.Stream], ids = c, append(ids, e.Stream)
		}
		switch e.Type {
		case "ItemAdded":
			var item struct{ Price int64 }
			if err := json.Unmarshal(e.Data, &item); err != nil || item.Price <= 0 {
				return resilience.MarkPermanent(fmt.Errorf("item without a positive price: %s", e.Data))
			}
			c.items, c.total = c.items+1, c.total+item.Price
		case "OrderPaid":
			c.paid = true
		}
	}
	items, totals, paid := make([]int64, len(ids)), make([]int64, len(ids)), make([]bool, len(ids))
	for i, id := range ids {
		c := changes[id]
		items[i], totals[i], paid[i] = c.items, c.total, c.paid
	}
	table := pgx.Identifier{fmt.Sprintf("order_summary_%d", events[0].Copy)}.Sanitize()
	_, err := tx.Exec(ctx, `INSERT INTO `+table+` AS o (id, items, total, paid)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::boolean[])
ON CONFLICT (id) DO UPDATE SET items = o.items + excluded.items, total = o.total + excluded.total, paid = o.paid OR excluded.paid`,
		ids, items, totals, paid)
	return err
}
