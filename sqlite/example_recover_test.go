package sqlite_test

import (
	"context"
	"fmt"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/sqlite"
)

// An idempotent consumer on SQLite: the inbox claim and the consumer's effect
// (here an append) commit in one unit of work, so a message delivered twice
// has its effect once.
func ExampleDB_Inbox() {
	db, err := sqlite.Open(sqlite.Memory, sqlite.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	ctx := context.Background()
	handled := db.Inbox(inbox.Config{})

	deliver := func(msgID string) error {
		return db.Tx(ctx, func(tx *sqlite.Tx) error {
			first, err := handled.Claim(ctx, tx, "billing", msgID)
			if err != nil || !first {
				return err // handled before: nothing to do
			}
			_, err = db.Events().Append(ctx, "invoice-"+msgID, []recado.Event{
				recado.NewEvent("InvoiceIssued", []byte(`{}`)),
			}, eventstore.InTx(tx))
			return err
		})
	}
	for range 2 { // the same message, delivered twice
		if err := deliver("order-42"); err != nil {
			fmt.Println(err)
			return
		}
	}
	n := 0
	for _, err := range db.Events().ReadStream(ctx, "invoice-order-42") {
		if err != nil {
			fmt.Println(err)
			return
		}
		n++
	}
	fmt.Println("invoices issued:", n)
	// Output:
	// invoices issued: 1
}
