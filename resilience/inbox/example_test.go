package inbox_test

import (
	"context"
	"fmt"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/inbox"
)

// A consumer receives the same message twice (at-least-once delivery). It
// claims the message in the unit of work that appends its effect, so the
// effect happens once.
func Example() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()
	handled := db.Inbox(inbox.Config{})
	events := db.Events()

	handle := func(messageID string) error {
		return db.Tx(ctx, func(tx *memory.Tx) error {
			first, err := handled.Claim(ctx, tx, "billing", messageID)
			if err != nil || !first {
				return err // handled before: nothing to do
			}
			_, err = events.Append(ctx, "invoice-7", []recado.Event{recado.NewEvent("InvoiceIssued", nil)}, eventstore.InTx(tx))
			return err
		})
	}
	for range 2 {
		if err := handle("order-7-paid"); err != nil {
			fmt.Println(err)
		}
	}
	st, _ := events.State(ctx, "invoice-7")
	fmt.Println("invoices issued:", st.Version)
	// Output: invoices issued: 1
}
