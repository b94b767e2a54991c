package postgres_test

import (
	"context"
	"errors"
	"log"
	"os"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/postgres"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/lease"
)

// A consumer that owns its work through a lease and handles each message
// exactly once: the lease's Guard, the inbox claim, the event it appends and
// its read-model write commit in one unit of work, or not at all; a message
// that keeps failing goes to the dead-letter queue. (It needs a server, so
// it is compiled, not run, by go test.)
func Example_consumer() {
	ctx := context.Background()
	db, err := postgres.Connect(ctx, os.Getenv("DATABASE_URL"), postgres.Options{Schema: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	leases, handled, letters := db.Leases(lease.Config{}), db.Inbox(inbox.Config{}), db.DeadLetters(deadletter.Config{})

	owner, err := leases.Acquire(ctx, "consumer:billing", "node-1", 30*time.Second)
	if err != nil {
		log.Fatal(err) // lease.ErrHeld: another node runs the consumer
	}
	handle := func(msg recado.Event) error {
		return db.Tx(ctx, func(tx *postgres.Tx) error {
			if err := leases.Guard(ctx, tx, owner); err != nil {
				return err // lease.ErrLost: another node took over; write nothing
			}
			first, err := handled.Claim(ctx, tx, "billing", msg.ID)
			if err != nil || !first {
				return err // handled before: nothing to do
			}
			invoice := recado.NewEvent("InvoiceIssued", msg.Data)
			if _, err := db.Events().Append(ctx, "invoices-"+msg.Stream, []recado.Event{invoice}, eventstore.InTx(tx)); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO billing.invoices (order_id) VALUES ($1)", msg.Stream)
			return err
		})
	}

	msg := recado.Event{ID: "m-1", Stream: "order-42", Type: "OrderPlaced", Data: []byte(`{"total":42}`)}
	if err := handle(msg); err != nil && !errors.Is(err, lease.ErrLost) {
		// After its retries: keep the message for people to see and replay.
		if _, err := letters.Add(ctx, nil, deadletter.Failure{Source: "consumer:billing", Key: msg.Stream, Message: msg, Err: err}); err != nil {
			log.Fatal(err)
		}
	}
}
