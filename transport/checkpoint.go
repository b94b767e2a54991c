package transport

import (
	"context"
	"errors"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// Checkpoints keeps how far each relay has published.
type Checkpoints interface {
	// Load returns the position relay name has published up to, or the
	// zero position if it has none.
	Load(ctx context.Context, name string) (recado.Position, error)
	// Save records p for name in the unit of work tx.
	Save(ctx context.Context, tx recado.Tx, name string, p recado.Position) error
}

// CheckpointStreamPrefix starts the name of the stream where
// [StreamCheckpoints] keeps a relay's checkpoints; a [Relay] never
// publishes the events of such a stream.
const CheckpointStreamPrefix = "$relay-"

// checkpointType is the type of a checkpoint event; its data is the
// position in text form.
const checkpointType = "recado.RelayCheckpoint"

// StreamCheckpoints keeps checkpoints in the event store itself, one
// stream per relay ("$relay-<name>"), one small event per published batch,
// so that any backend with units of work can run a relay. The events stay
// in the global log: readers of the whole log see them (filter by stream
// prefix to skip them).
func StreamCheckpoints(store *eventstore.Store) Checkpoints { return streamCheckpoints{store} }

type streamCheckpoints struct{ s *eventstore.Store }

func (c streamCheckpoints) Load(ctx context.Context, name string) (recado.Position, error) {
	for e, err := range c.s.ReadStream(ctx, CheckpointStreamPrefix+name, eventstore.Backwards(), eventstore.Limit(1)) {
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return recado.Position{}, nil
		}
		if err != nil {
			return recado.Position{}, err
		}
		return recado.ParsePosition(string(e.Data))
	}
	return recado.Position{}, nil
}

func (c streamCheckpoints) Save(ctx context.Context, tx recado.Tx, name string, p recado.Position) error {
	_, err := c.s.Append(ctx, CheckpointStreamPrefix+name,
		[]recado.Event{recado.NewEvent(checkpointType, p.AppendText(nil))}, eventstore.InTx(tx))
	return err
}
