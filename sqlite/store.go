package sqlite

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
)

// EventStore is the event store kept in a [DB]'s file. It implements
// [eventstore.Store], [eventstore.Notifier], [eventstore.Subscriber] and
// [eventstore.Deleter], over the DB's [driver.Driver].
//
// (Until package eventstore's front lands, EventStore does the front's part
// itself: validation, copies, errors. It goes then.)
type EventStore struct {
	db *DB
	d  *eventDriver
}

var (
	_ eventstore.Store      = (*EventStore)(nil)
	_ eventstore.Notifier   = (*EventStore)(nil)
	_ eventstore.Subscriber = (*EventStore)(nil)
	_ eventstore.Deleter    = (*EventStore)(nil)
)

// Append implements [eventstore.Store]. Without [eventstore.InTx] the append
// joins the next group commit; with it, it joins the caller's [Tx].
func (s *EventStore) Append(ctx context.Context, stream string, evs []recado.Event, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	o := eventstore.NewAppendOptions(opts...)
	if s.db.isClosing() {
		return eventstore.AppendResult{}, frontErr(driver.ErrClosed)
	}
	if err := eventstore.ValidateAppend(stream, evs, o); err != nil {
		return eventstore.AppendResult{}, err
	}
	r := &driver.Request{Stream: stream, Expected: expected(o.Expected), Events: make([]recado.Event, len(evs))}
	now := time.Now().UTC().Truncate(driver.TimePrecision)
	for i, e := range evs {
		if e.Time.IsZero() {
			e.Time = now
		}
		e.Time = e.Time.UTC().Truncate(driver.TimePrecision)
		if e.Time.Before(driver.MinTime) || e.Time.After(driver.MaxTime) {
			return eventstore.AppendResult{}, fmt.Errorf("%w: append to %q: event %d (%s): time %v is outside %v to %v",
				eventstore.ErrInvalid, stream, i, e.ID, e.Time, driver.MinTime, driver.MaxTime)
		}
		e.Data = append([]byte(nil), e.Data...)
		e.Metadata.Fields = maps.Clone(e.Metadata.Fields)
		r.Events[i] = e
	}
	if err := s.tx(o.Tx, r); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := s.d.Append(ctx, r); err != nil {
		return eventstore.AppendResult{}, frontErr(err)
	}
	if err := outcomeErr(r, o.Expected); err != nil {
		return eventstore.AppendResult{}, err
	}
	return eventstore.AppendResult{
		FirstVersion: r.FirstVersion, LastVersion: r.LastVersion,
		FirstPosition: r.FirstPosition, LastPosition: r.LastPosition,
		Duplicate: r.Outcome == driver.Duplicate,
	}, nil
}

func (s *EventStore) tx(unit any, r *driver.Request) error {
	if unit == nil {
		return nil
	}
	tx, ok := unit.(recado.Tx)
	if !ok {
		return fmt.Errorf("%w: unit of work %T is not a recado.Tx", eventstore.ErrInvalid, unit)
	}
	r.Tx = tx
	return nil
}

func expected(e eventstore.ExpectedVersion) driver.Expected {
	switch e {
	case eventstore.NoStream:
		return driver.Expected{Kind: driver.ExpectNoStream}
	case eventstore.StreamExists:
		return driver.Expected{Kind: driver.ExpectStreamExists}
	}
	if v, ok := e.IsExact(); ok {
		return driver.Expected{Kind: driver.ExpectExact, Version: v}
	}
	return driver.Expected{}
}

// outcomeErr is the error of a decided request.
func outcomeErr(r *driver.Request, e eventstore.ExpectedVersion) error {
	switch r.Outcome {
	case driver.Written, driver.Duplicate:
		return nil
	case driver.Conflict:
		return &eventstore.ConflictError{Stream: r.Stream, Expected: e, Actual: r.State.Version, Exists: r.State.Exists()}
	case driver.DuplicateID:
		return &eventstore.DuplicateIDError{ID: r.DupID, Stream: r.DupStream, Reason: r.DupReason}
	case driver.Deleted:
		return fmt.Errorf("sqlite: %q: %w", r.Stream, eventstore.ErrStreamDeleted)
	case driver.NotFound:
		return fmt.Errorf("sqlite: %q: %w", r.Stream, eventstore.ErrStreamNotFound)
	}
	return fmt.Errorf("sqlite: %q: request left undecided (outcome %d)", r.Stream, r.Outcome)
}

// frontError makes a driver's error match package eventstore's sentinels.
type frontError struct{ err error }

func frontErr(err error) error {
	if err == nil {
		return nil
	}
	return frontError{err}
}

func (e frontError) Error() string { return e.err.Error() }
func (e frontError) Unwrap() error { return e.err }

func (e frontError) Is(target error) bool {
	pairs := []struct{ front, driver error }{
		{eventstore.ErrClosed, driver.ErrClosed},
		{eventstore.ErrUnknownOutcome, driver.ErrUnknownOutcome},
		{eventstore.ErrStreamNotFound, driver.ErrStreamNotFound},
		{eventstore.ErrStreamDeleted, driver.ErrStreamDeleted},
		{eventstore.ErrInvalid, driver.ErrForeignTx},
	}
	for _, p := range pairs {
		if target == p.front {
			return errors.Is(e.err, p.driver)
		}
	}
	return false
}

// Committed implements [eventstore.Notifier].
func (s *EventStore) Committed() <-chan struct{} { return s.d.Committed() }

// Subscribe implements [eventstore.Subscriber] with [eventstore.Poll].
func (s *EventStore) Subscribe(ctx context.Context, after recado.Position, opts ...eventstore.SubscribeOption) iter.Seq2[eventstore.Message, error] {
	opts = append([]eventstore.SubscribeOption{eventstore.WithPollInterval(s.db.opts.PollInterval)}, opts...)
	return eventstore.Poll(ctx, s, after, opts...)
}

// Delete implements [eventstore.Deleter] (soft delete).
func (s *EventStore) Delete(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return s.deleteStream(ctx, stream, false, opts)
}

// Tombstone implements [eventstore.Deleter] (permanent delete).
func (s *EventStore) Tombstone(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return s.deleteStream(ctx, stream, true, opts)
}

func (s *EventStore) deleteStream(ctx context.Context, stream string, tombstone bool, opts []eventstore.AppendOption) error {
	o := eventstore.NewAppendOptions(opts...)
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	r := &driver.Request{Stream: stream, Expected: expected(o.Expected), Tombstone: tombstone}
	if err := s.tx(o.Tx, r); err != nil {
		return err
	}
	if err := s.d.Delete(ctx, r); err != nil {
		return frontErr(err)
	}
	return outcomeErr(r, o.Expected)
}

// ReadAll implements [eventstore.Store].
func (s *EventStore) ReadAll(ctx context.Context, after recado.Position, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	if err := o.Validate(); err != nil {
		return failed(err)
	}
	return frontSeq(s.d.ReadAll(ctx, after, driver.Read{Backwards: o.Backwards, Limit: o.Limit}))
}

// ReadStream implements [eventstore.Store].
func (s *EventStore) ReadStream(ctx context.Context, stream string, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	if err := o.Validate(); err != nil {
		return failed(err)
	}
	if err := eventstore.ValidateStream(stream); err != nil {
		return failed(err)
	}
	return frontSeq(s.d.ReadStream(ctx, stream, driver.Read{From: o.From, Backwards: o.Backwards, Limit: o.Limit}))
}

func failed(err error) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) { yield(recado.Event{}, err) }
}

func frontSeq(seq iter.Seq2[recado.Event, error]) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		for e, err := range seq {
			if !yield(e, frontErr(err)) {
				return
			}
		}
	}
}
