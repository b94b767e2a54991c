// Package driver is the contract between package eventstore's Store front and
// the backends that keep events (memory, SQLite, PostgreSQL, ...), and the
// toolkit those backends share. Applications do not use it: they call the
// front, *eventstore.Store, which every backend's DB hands out.
//
// The split follows database/sql over database/sql/driver. The front validates
// input against the shared limits, copies the caller's events, resolves
// options, builds every error users see and runs subscriptions. A backend
// implements [Driver]: it stores and reads, and it keeps what makes it fast
// (group commit, SQL, its locks). The rules of the contract are not the
// backend's to write: inside its transaction a backend gathers the facts (the
// stream's [State], the stored events that share an ID with the request) and
// calls [Request.Decide] or [Request.DecideDelete], which decide once for every
// backend what happens.
package driver

import (
	"context"
	"errors"
	"iter"
	"sync"

	"github.com/recado-dev/recado"
)

// Driver is what a backend implements. The front calls it only with validated
// input: stream names, IDs and types within the limits ([MaxStreamLen], ...),
// at least one event, no ID twice in a request, times in UTC within
// [MinTime]..[MaxTime] truncated to [TimePrecision]. The events in a [Request]
// are the front's copies: the driver may keep them (and their Data and
// Metadata) after it returns; the caller never sees them again.
//
// The outcome of a decided request is in the request ([Request.Outcome]), not
// in the error: the front turns it into the error users see. A driver's own
// errors are wrapped by the front with the operation and the stream; it
// returns the sentinels below (wrapped with detail) where they apply.
type Driver interface {
	// Append commits r: it gathers the facts in its transaction, calls
	// r.Decide, and stores r.Events at the versions r says (setting each
	// event's Stream, Version and Position, and r's positions) when r.Outcome
	// is [Written]. With r.Tx set the append joins that unit of work and
	// skips group commit; the driver returns [ErrForeignTx] if r.Tx is not its
	// own, live, unit. If ctx ends while a commit the request is part of is in
	// flight, the error wraps [ErrUnknownOutcome]. A request the backend
	// refused before sending it (too big, say) has a known outcome: an
	// ordinary error.
	Append(ctx context.Context, r *Request) error

	// Delete applies a soft delete or a tombstone (r.Tombstone) to r.Stream: it
	// reads the stream's state in its transaction, calls r.DecideDelete and,
	// when r.Outcome is [Written], deletes. r.Events is empty.
	Delete(ctx context.Context, r *Request) error

	// State returns a stream's state, inside tx when tx is not nil (then
	// [ErrForeignTx] if tx is not the driver's own, live, unit).
	State(ctx context.Context, stream string, tx recado.Tx) (State, error)

	// ReadStream reads one stream's visible events (after a soft delete, only
	// the later ones) as r says, yielding [ErrStreamNotFound] if the stream
	// does not exist and [ErrStreamDeleted] if it is tombstoned, also when
	// that happens between pages of a long read.
	ReadStream(ctx context.Context, stream string, r Read) iter.Seq2[recado.Event, error]

	// ReadAll reads the global log after (forwards) or before (backwards)
	// position after, at most r.Limit events (0: no limit); r.From does not
	// apply. A forward read never skips a committed event: a reader that
	// resumes after the last position it saw sees every event once, each
	// stream in order.
	ReadAll(ctx context.Context, after recado.Position, r Read) iter.Seq2[recado.Event, error]

	// Committed returns a channel closed the next time events may have been
	// committed, and when the driver closes (a [Signal] does this).
	// Subscriptions take it before reading and wait on it after.
	Committed() <-chan struct{}

	// Close stops the driver; calls in flight end, later calls return
	// [ErrClosed]. Closing twice is harmless.
	Close() error
}

// Read is one read's settings, resolved and checked by the front.
type Read struct {
	// From is the first stream version to read (inclusive); 0 means the start
	// forwards and the end backwards.
	From uint64
	// Backwards reads newest first.
	Backwards bool
	// Limit is the most events to read; 0 means no limit.
	Limit int
}

var (
	ErrConflict       = errors.New("eventstore: wrong expected version")
	ErrStreamNotFound = errors.New("eventstore: stream not found")
	ErrStreamDeleted  = errors.New("eventstore: stream deleted")
	ErrDuplicateID    = errors.New("eventstore: event ID already used by a different event")
	ErrInvalid        = errors.New("eventstore: invalid argument")
	ErrClosed         = errors.New("eventstore: store closed")
	ErrUnknownOutcome = errors.New("eventstore: append outcome unknown")
	// ErrForeignTx: the unit of work given to a store is not one of this
	// store's DB, or it has ended. The front reports it as ErrInvalid.
	ErrForeignTx = errors.New("eventstore: unit of work of another DB, or finished")
	// ErrTxAborted: the backend ended the unit of work's transaction under it
	// (SQLite does on interrupts, disk full, I/O errors); every later call in
	// that unit of work fails and nothing commits.
	ErrTxAborted = errors.New("eventstore: unit of work aborted by the backend")
)

// Signal broadcasts "events were committed" to any number of waiters: a driver
// embeds one to implement Committed, calls Notify after each commit and on
// Close. The zero value is ready to use.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// Committed returns a channel closed by the next [Signal.Notify].
func (s *Signal) Committed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes every waiter. It is cheap when nobody waits.
func (s *Signal) Notify() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}
