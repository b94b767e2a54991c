package eventstore

import (
	"errors"
	"fmt"
)

// Sentinel errors. Backends return them wrapped, with the stream or event named;
// test with [errors.Is].
var (
	// ErrConflict: the stream was not at the expected version. The error is a
	// [*ConflictError].
	ErrConflict = errors.New("eventstore: wrong expected version")
	// ErrStreamNotFound: the stream has no events, or was soft-deleted.
	ErrStreamNotFound = errors.New("eventstore: stream not found")
	// ErrStreamDeleted: the stream was tombstoned; it can never be written again.
	ErrStreamDeleted = errors.New("eventstore: stream deleted")
	// ErrDuplicateID: an event ID is already stored for a different event (another
	// type, other data, another stream or another place in the stream). The error
	// is a [*DuplicateIDError].
	ErrDuplicateID = errors.New("eventstore: event ID already used by a different event")
	// ErrInvalid: the call's arguments are wrong (empty stream name, no events,
	// an event without ID or type, ...). Nothing was stored.
	ErrInvalid = errors.New("eventstore: invalid argument")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("eventstore: store closed")
	// ErrUnknownOutcome: the caller gave up (its context ended) while the append
	// was being committed, so it may or may not have been stored. Retrying the same
	// events with the same IDs is safe: a stored append is recognised and its
	// original result returned.
	ErrUnknownOutcome = errors.New("eventstore: append outcome unknown")
)

// ConflictError reports an append or delete whose expected version did not hold.
type ConflictError struct {
	Stream   string
	Expected ExpectedVersion
	// Actual is the stream's current version: 0 when it has no events.
	Actual uint64
	// Exists reports whether the stream exists (has events and is not deleted).
	Exists bool
}

func (e *ConflictError) Error() string {
	state := "does not exist"
	if e.Exists {
		state = "exists"
	}
	return fmt.Sprintf("eventstore: stream %q: expected version %s, actual version %d (stream %s)",
		e.Stream, e.Expected, e.Actual, state)
}

// Is reports whether target is [ErrConflict].
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// DuplicateIDError reports an event ID that is stored for a different event.
type DuplicateIDError struct {
	ID string
	// Stream is the stream the stored event belongs to.
	Stream string
	// Reason says what differs.
	Reason string
}

func (e *DuplicateIDError) Error() string {
	return fmt.Sprintf("eventstore: event ID %q already stored in stream %q for a different event: %s",
		e.ID, e.Stream, e.Reason)
}

// Is reports whether target is [ErrDuplicateID].
func (e *DuplicateIDError) Is(target error) bool { return target == ErrDuplicateID }

// invalid returns an error wrapping ErrInvalid.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// UnknownOutcome returns the error an append reports when its caller's context
// ended while the append was committing: it wraps both [ErrUnknownOutcome] and
// cause (usually the context's error).
func UnknownOutcome(stream string, cause error) error {
	return fmt.Errorf("eventstore: append to %q: %w: %w", stream, ErrUnknownOutcome, cause)
}
