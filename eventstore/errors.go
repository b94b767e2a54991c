package eventstore

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/recado-dev/recado/eventstore/driver"
)

// Sentinel errors. Every backend returns them wrapped in an [*Error] naming
// the operation and the stream; test with [errors.Is].
var (
	// ErrConflict: the stream was not at the expected version. The error
	// holds a [*ConflictError].
	ErrConflict = driver.ErrConflict
	// ErrStreamNotFound: the stream has no events, or was soft-deleted.
	ErrStreamNotFound = driver.ErrStreamNotFound
	// ErrStreamDeleted: the stream was tombstoned; it can never be written again.
	ErrStreamDeleted = driver.ErrStreamDeleted
	// ErrDuplicateID: an event ID is already stored for a different event
	// (another type, other data, another stream or another place in the
	// stream). The error holds a [*DuplicateIDError].
	ErrDuplicateID = driver.ErrDuplicateID
	// ErrInvalid: the call's arguments are wrong (an empty stream name, no
	// events, an event without ID or type, a name beyond the limits, a unit
	// of work of another DB, ...). Nothing was stored.
	ErrInvalid = driver.ErrInvalid
	// ErrClosed: the store was closed.
	ErrClosed = driver.ErrClosed
	// ErrUnknownOutcome: the caller gave up (its context ended) while the
	// append was being committed, so it may or may not have been stored.
	// Retrying the same events with the same IDs is safe: a stored append is
	// recognised and its original result returned.
	ErrUnknownOutcome = driver.ErrUnknownOutcome
	// ErrTxAborted: the backend ended the unit of work's transaction under
	// it (SQLite does on interrupts, disk full, I/O errors): every later call
	// in that unit of work fails, and nothing of it commits.
	ErrTxAborted = driver.ErrTxAborted
)

// Error is the error every call of a [Store] returns: the operation, the
// stream (empty for reads of the global log) and the cause, which wraps the
// sentinels above or is a [*ConflictError] or [*DuplicateIDError]. Messages
// read the same on every backend.
type Error struct {
	// Op is "append", "read stream", "read all", "subscribe", "state",
	// "delete" or "tombstone".
	Op string
	// Stream is the stream the call was about.
	Stream string
	Err    error
}

func (e *Error) Error() string {
	if e.Stream == "" {
		return "eventstore: " + e.Op + ": " + e.Err.Error()
	}
	return "eventstore: " + e.Op + " " + strconv.Quote(e.Stream) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

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
	return fmt.Sprintf("expected version %s, actual version %d (stream %s)", e.Expected, e.Actual, state)
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
	return fmt.Sprintf("event ID %q already stored in stream %q for a different event: %s", e.ID, e.Stream, e.Reason)
}

// Is reports whether target is [ErrDuplicateID].
func (e *DuplicateIDError) Is(target error) bool { return target == ErrDuplicateID }

// invalid returns an error wrapping ErrInvalid.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// errorf returns a plain error with a formatted message.
func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func isForeignTx(err error) bool { return errors.Is(err, driver.ErrForeignTx) }
