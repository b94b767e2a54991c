package command

import "github.com/recado-dev/recado"

// Option sets an option of one call of [Bus.Dispatch] or [Queue.Accept].
// Each option says which of the two it applies to; the other refuses it
// with [ErrInvalid].
type Option func(*options)

type options struct {
	id         string
	md         recado.Metadata
	tx         recado.Tx
	scope, key string
	hasKey     bool
	set        uint8
}

const (
	setID = 1 << iota
	setKey
)

// WithID gives a dispatched command its ID, from which its events' IDs are
// derived ([EventID]): dispatching the same command with the same ID again
// appends nothing twice. Dispatch only: accepted commands get their IDs from
// the store, and are made idempotent by [WithIdempotencyKey].
func WithID(id string) Option {
	return func(o *options) { o.id, o.set = id, o.set|setID }
}

// WithMetadata sends md along with the command: its handler sees it, and
// the events it writes carry it (correlation ID, trace context). Dispatch
// and Accept.
func WithMetadata(md recado.Metadata) Option {
	return func(o *options) { o.md = md }
}

// WithIdempotencyKey makes an accept idempotent: the first accept with key
// in scope stores the command, and another accept with the same key and the
// same command (type and encoded value) returns the same receipt; with
// another command, it fails with [ErrMismatch]. Scope is the caller's
// identity (a user, an API client): two callers' keys never meet. Accept
// only.
func WithIdempotencyKey(scope, key string) Option {
	return func(o *options) { o.scope, o.key, o.hasKey, o.set = scope, key, true, o.set|setKey }
}

// InTx makes the call part of the unit of work tx of the backend's DB:
// Accept stores the command, and Dispatch appends its events, when tx
// commits, or not at all. Dispatch and Accept.
func InTx(tx recado.Tx) Option {
	return func(o *options) { o.tx = tx }
}

// resolve folds opts for the operation op ("dispatch" or "accept").
func resolve(opts []Option, op string) (options, error) {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	switch {
	case op == "dispatch" && o.set&setKey != 0:
		return o, invalid("an idempotency key applies to Accept; give Dispatch an ID (WithID)")
	case op == "accept" && o.set&setID != 0:
		return o, invalid("Accept makes the command's ID; make it idempotent with WithIdempotencyKey")
	case o.set&setID != 0:
		if err := checkName("command ID", o.id, MaxTypeLen); err != nil {
			return o, invalid("%v", err)
		}
	case o.hasKey && o.key == "":
		return o, invalid("an empty idempotency key")
	}
	return o, nil
}
