package transport

import (
	"context"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/inbox"
)

// Inbox returns a Handler that gives each message one effect, however
// often it is delivered: in one unit of work of u it claims (consumer,
// m.ID) in box and, on the first claim only, runs h with that unit of work.
// h's writes (an append through eventstore.InTx(tx), a read model's row)
// commit with the claim or not at all: if h fails, both roll back and the
// next delivery runs h again; once they commit, a redelivery finds the
// claim and does nothing.
//
// consumer names the handler (1 to inbox.MaxConsumerLen bytes): two
// handlers of one message need two names. Keep the inbox's retention longer
// than a message can come back (a dead letter's replay included).
func Inbox[T recado.Tx](u recado.UnitOfWork[T], box *inbox.Store, consumer string, h func(ctx context.Context, tx T, m Message) error) Handler {
	return func(ctx context.Context, m Message) error {
		return u.Tx(ctx, func(tx T) error {
			first, err := box.Claim(ctx, tx, consumer, m.ID)
			if err != nil || !first {
				return err
			}
			return h(ctx, tx, m)
		})
	}
}
