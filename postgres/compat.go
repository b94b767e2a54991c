package postgres

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
)

// EventStore is the event store of a [DB] with the API from before the
// front/driver split (issue 7): an adapter over the driver that does what the
// front will do (validate, copy, turn outcomes into errors). It goes when
// [DB.Events] returns the front.
type EventStore struct {
	*eventDriver
}

var (
	_ eventstore.Store      = (*EventStore)(nil)
	_ eventstore.Notifier   = (*EventStore)(nil)
	_ eventstore.Subscriber = (*EventStore)(nil)
	_ eventstore.Deleter    = (*EventStore)(nil)
)

// Horizon is [DB.Horizon].
func (e *EventStore) Horizon(ctx context.Context) (Horizon, error) { return e.db.Horizon(ctx) }

// Subscribe implements [eventstore.Subscriber]: [eventstore.Poll] woken by
// LISTEN/NOTIFY, polling every Options.PollInterval (unless opts say
// otherwise) in case a notification is lost.
func (e *EventStore) Subscribe(ctx context.Context, after recado.Position, opts ...eventstore.SubscribeOption) iter.Seq2[eventstore.Message, error] {
	all := append([]eventstore.SubscribeOption{eventstore.WithPollInterval(e.db.opts.PollInterval)}, opts...)
	return eventstore.Poll(ctx, e, after, all...)
}

func expected(v eventstore.ExpectedVersion) driver.Expected {
	switch v {
	case eventstore.Any:
		return driver.Expected{Kind: driver.ExpectAny}
	case eventstore.NoStream:
		return driver.Expected{Kind: driver.ExpectNoStream}
	case eventstore.StreamExists:
		return driver.Expected{Kind: driver.ExpectStreamExists}
	}
	n, _ := v.IsExact()
	return driver.Expected{Kind: driver.ExpectExact, Version: n}
}

// oldErr makes a driver's error also wrap the old sentinel of the same name.
func oldErr(err error) error {
	pairs := [...][2]error{
		{driver.ErrClosed, eventstore.ErrClosed},
		{driver.ErrUnknownOutcome, eventstore.ErrUnknownOutcome},
		{driver.ErrStreamNotFound, eventstore.ErrStreamNotFound},
		{driver.ErrStreamDeleted, eventstore.ErrStreamDeleted},
		{driver.ErrInvalid, eventstore.ErrInvalid},
		{driver.ErrForeignTx, eventstore.ErrInvalid},
	}
	for _, p := range pairs {
		if errors.Is(err, p[0]) && !errors.Is(err, p[1]) {
			err = fmt.Errorf("%w: %w", p[1], err)
		}
	}
	return err
}

func (e *EventStore) unitOf(o eventstore.AppendOptions) (recado.Tx, error) {
	if o.Tx == nil {
		return nil, nil
	}
	tx, ok := o.Tx.(recado.Tx)
	if !ok {
		return nil, fmt.Errorf("%w: InTx given a %T, want a *postgres.Tx", eventstore.ErrInvalid, o.Tx)
	}
	return tx, nil
}

// Append implements [eventstore.Store.Append].
func (e *EventStore) Append(ctx context.Context, stream string, events []recado.Event, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	o := eventstore.NewAppendOptions(opts...)
	if e.db.closed.Load() {
		return eventstore.AppendResult{}, oldErr(errClosed())
	}
	if err := eventstore.ValidateAppend(stream, events, o); err != nil {
		return eventstore.AppendResult{}, err
	}
	tx, err := e.unitOf(o)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	events = slices.Clone(events)
	now := time.Now().UTC().Truncate(time.Microsecond)
	for i := range events {
		if events[i].Time.IsZero() {
			events[i].Time = now
		}
	}
	r := &driver.Request{Stream: stream, Events: events, Expected: expected(o.Expected), Tx: tx}
	if err := e.eventDriver.Append(ctx, r); err != nil {
		return eventstore.AppendResult{}, oldErr(err)
	}
	res := eventstore.AppendResult{FirstVersion: r.FirstVersion, LastVersion: r.LastVersion,
		FirstPosition: r.FirstPosition, LastPosition: r.LastPosition}
	switch r.Outcome {
	case driver.Written:
		return res, nil
	case driver.Duplicate:
		res.Duplicate = true
		return res, nil
	case driver.DuplicateID:
		return eventstore.AppendResult{}, &eventstore.DuplicateIDError{ID: r.DupID, Stream: r.DupStream, Reason: r.DupReason}
	}
	return eventstore.AppendResult{}, outcomeErr(r, o.Expected)
}

func outcomeErr(r *driver.Request, v eventstore.ExpectedVersion) error {
	switch r.Outcome {
	case driver.Conflict:
		return &eventstore.ConflictError{Stream: r.Stream, Expected: v, Actual: r.State.Version, Exists: r.State.Exists()}
	case driver.Deleted:
		return fmt.Errorf("stream %q: %w", r.Stream, eventstore.ErrStreamDeleted)
	case driver.NotFound:
		return fmt.Errorf("stream %q: %w", r.Stream, eventstore.ErrStreamNotFound)
	}
	return fmt.Errorf("stream %q: undecided request (outcome %d)", r.Stream, r.Outcome)
}

// Delete implements [eventstore.Deleter.Delete].
func (e *EventStore) Delete(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return e.delete(ctx, stream, false, opts)
}

// Tombstone implements [eventstore.Deleter.Tombstone].
func (e *EventStore) Tombstone(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return e.delete(ctx, stream, true, opts)
}

func (e *EventStore) delete(ctx context.Context, stream string, tomb bool, opts []eventstore.AppendOption) error {
	o := eventstore.NewAppendOptions(opts...)
	if e.db.closed.Load() {
		return oldErr(errClosed())
	}
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	tx, err := e.unitOf(o)
	if err != nil {
		return err
	}
	r := &driver.Request{Stream: stream, Expected: expected(o.Expected), Tx: tx, Tombstone: tomb}
	if err := e.eventDriver.Delete(ctx, r); err != nil {
		return oldErr(err)
	}
	if r.Outcome == driver.Written {
		return nil
	}
	return outcomeErr(r, o.Expected)
}

func readOpts(opts []eventstore.ReadOption) (driver.Read, error) {
	o := eventstore.NewReadOptions(opts...)
	if err := o.Validate(); err != nil {
		return driver.Read{}, err
	}
	return driver.Read{From: o.From, Backwards: o.Backwards, Limit: o.Limit}, nil
}

// ReadStream implements [eventstore.Store.ReadStream].
func (e *EventStore) ReadStream(ctx context.Context, stream string, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		o, err := readOpts(opts)
		if err == nil {
			err = eventstore.ValidateStream(stream)
		}
		if err != nil {
			yield(recado.Event{}, err)
			return
		}
		for ev, err := range e.eventDriver.ReadStream(ctx, stream, o) {
			if !yield(ev, oldErr(err)) {
				return
			}
		}
	}
}

// ReadAll implements [eventstore.Store.ReadAll].
func (e *EventStore) ReadAll(ctx context.Context, after recado.Position, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		o, err := readOpts(opts)
		if err != nil {
			yield(recado.Event{}, err)
			return
		}
		for ev, err := range e.eventDriver.ReadAll(ctx, after, o) {
			if !yield(ev, oldErr(err)) {
				return
			}
		}
	}
}
