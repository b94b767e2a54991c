package command

import (
	"context"
	"errors"
	"time"

	"github.com/recado-dev/recado/command/driver"
)

// DefaultQueue is the default of [QueueConfig.Name].
const DefaultQueue = "commands"

// QueueConfig sets up a Queue. The zero value is ready to use.
type QueueConfig struct {
	// Name names the queue: its records, the leases its workers share and
	// the source of its dead letters ("command:" and the name). Services
	// that share one database give their queues different names. Default
	// "commands".
	Name string
	// StatusLocation returns where the status of command id, of type typ,
	// can be read, for receipts. Default "/commands/{typ}/{id}", where the
	// HTTP adapter serves it by default.
	StatusLocation func(typ, id string) string
}

// Queue accepts commands now, for a [Worker] to run later: "OK, I accept
// your order and will work on it in the background". It validates a
// command, records it durably in the Store (the backend's, the same as the
// events') and returns a [Receipt] at once. It is safe for concurrent use.
type Queue struct {
	bus   *Bus
	store *Store
	name  string
	loc   func(typ, id string) string
}

// NewQueue returns a Queue of commands routed by bus and recorded in store.
func NewQueue(bus *Bus, store *Store, cfg QueueConfig) (*Queue, error) {
	if bus == nil || store == nil {
		return nil, errors.New("command: NewQueue needs a Bus and a Store")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultQueue
	}
	if err := checkName("queue name", cfg.Name, MaxQueueLen); err != nil {
		return nil, errors.New("command: QueueConfig.Name: " + err.Error())
	}
	if cfg.StatusLocation == nil {
		cfg.StatusLocation = func(typ, id string) string { return "/commands/" + typ + "/" + id }
	}
	return &Queue{bus: bus, store: store, name: cfg.Name, loc: cfg.StatusLocation}, nil
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// Bus returns the Bus that routes the queue's commands.
func (q *Queue) Bus() *Bus { return q.bus }

// Store returns the Store that records the queue's commands.
func (q *Queue) Store() *Store { return q.store }

// Receipt is the answer to an accepted command: its ID, where to ask how it
// is going, and what it was when accepted (or, for a command accepted
// before with the same idempotency key, what it is now).
type Receipt struct {
	ID   string
	Type string
	// Location is where the command's status can be read.
	Location string
	State    State
	Accepted time.Time
	// Existing reports that the command was accepted before, with the same
	// idempotency key: nothing new was stored.
	Existing bool
}

// Accept validates the command v, stores it durably and returns a receipt,
// without running it: a [Worker] runs it, in the order it was accepted
// among the commands of its key. The options [WithIdempotencyKey],
// [WithMetadata] and [InTx] apply.
//
// When Accept returns a receipt, the command is stored (committed, or in
// the caller's unit of work); when it returns an error, nothing is. Errors:
// [ErrUnknownCommand] for a type no handler is registered for,
// [ErrInvalid] for a command that does not validate, [ErrMismatch] for an
// idempotency key used before for another command, [ErrTooLarge], and the
// store's own (the store is down: try again later).
func (q *Queue) Accept(ctx context.Context, v any, opts ...Option) (Receipt, error) {
	r, v, err := q.bus.lookup(v)
	if err != nil {
		return Receipt{}, &Error{Op: "accept", Err: err}
	}
	return q.accept(ctx, r, v, opts)
}

func (q *Queue) accept(ctx context.Context, r *route, v any, opts []Option) (Receipt, error) {
	fail := func(err error) (Receipt, error) { return Receipt{}, &Error{Op: "accept", Type: r.name, Err: err} }
	o, err := resolve(opts, "accept")
	if err != nil {
		return fail(err)
	}
	key, err := r.check(v)
	if err != nil {
		return fail(err)
	}
	data, err := q.bus.codec.Marshal(v)
	if err != nil {
		return fail(invalid("encode: %v", err))
	}
	md := o.md
	if md.IdempotencyKey == "" {
		md.IdempotencyKey = o.key
	}
	rec := driver.Record{Queue: q.name, Type: r.name, Data: data, Metadata: md, Key: key,
		Scope: o.scope, IdempotencyKey: o.key}
	st, existing, err := q.store.insert(ctx, o.tx, &rec)
	if err != nil {
		return fail(err)
	}
	return Receipt{ID: st.ID, Type: st.Type, Location: q.loc(st.Type, st.ID), State: st.State,
		Accepted: st.Accepted, Existing: existing}, nil
}

// Status returns the status of command id.
func (q *Queue) Status(ctx context.Context, id string) (Status, error) { return q.store.Get(ctx, id) }

// Wait waits until command id reaches a final state, for at most timeout,
// and returns its status then (see [Store.Wait]).
func (q *Queue) Wait(ctx context.Context, id string, timeout time.Duration) (Status, error) {
	return q.store.Wait(ctx, id, timeout)
}
