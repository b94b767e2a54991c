package recado

import "time"

// Event is one immutable fact recorded in a stream.
//
// When appending, a caller sets ID, Type, Data and Metadata; the store sets
// Stream, Version, Position and Time (a non-zero Time given by the caller is
// kept, for imports). Events read from a store have every field set.
type Event struct {
	// ID identifies the event across the whole store. Appending an event whose ID
	// is already stored, with the same type and data, stores nothing new: that is
	// what makes a retried append safe. Use [NewID] unless the ID comes from
	// elsewhere (a message ID, a deterministic saga command ID).
	ID string
	// Stream is the name of the stream the event belongs to, e.g. "order-42".
	Stream string
	// Version is the event's number within its stream: 1 for the first event.
	Version uint64
	// Position is the event's place in the store's global log.
	Position Position
	// Type is the stable type name the [Registry] maps to a Go type.
	Type string
	// Data is the encoded event, as the registry's [Codec] wrote it.
	Data []byte
	// Metadata carries correlation, causation, idempotency and trace context.
	Metadata Metadata
	// Time is when the event was recorded.
	Time time.Time
}

// NewEvent returns an event with a new ID and the given type and encoded data,
// ready to append. [Registry.NewEvent] does the same from a Go value.
func NewEvent(typ string, data []byte) Event {
	return Event{ID: NewID(), Type: typ, Data: data}
}
