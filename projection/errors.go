package projection

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/deadletter"
)

var (
	// ErrInvalid: the options or arguments are wrong.
	ErrInvalid = errors.New("projection: invalid argument")
	// ErrParked: the event at the position waited for went to the
	// dead-letter queue, or is parked behind a letter of its stream: the
	// read model will not reflect it until someone replays or discards the
	// letter. The error is a [*ParkedError].
	ErrParked = errors.New("projection: event parked in the dead-letter queue")
	// ErrRunning: Run was called on a runner that is running already.
	ErrRunning = errors.New("projection: runner already running")
)

// Error is the error the package's functions and methods return, but for
// the *ParkedError that WaitFor returns as it is.
type Error struct {
	// Op is "new", "run", "rebuild", "wait" or "status".
	Op string
	// Projection is the projection's name.
	Projection string
	Err        error
}

func (e *Error) Error() string {
	return "projection " + strconv.Quote(e.Projection) + ": " + e.Op + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ParkedError reports that the event at Position is in the dead-letter
// queue of the projection's active copy: it failed (Letter is the failed
// letter, and Head too), or it is parked behind the failed letter Head of
// its stream.
type ParkedError struct {
	Projection string
	Position   recado.Position
	// Letter holds the event.
	Letter deadletter.Letter
	// Head is the letter at the head of the stream's queue: the one to fix
	// and replay (or discard). It is Letter when the event itself failed.
	Head deadletter.Letter
}

func (e *ParkedError) Error() string {
	m := &e.Letter.Message
	where := fmt.Sprintf("projection %q: the event at position %s (stream %q, version %d)", e.Projection, e.Position, m.Stream, m.Version)
	if e.Head.ID == e.Letter.ID {
		return fmt.Sprintf("%s is dead letter %d (%s): %s", where, e.Letter.ID, e.Letter.State, e.Letter.Error)
	}
	return fmt.Sprintf("%s is parked as dead letter %d behind dead letter %d (%s) of its stream: %s",
		where, e.Letter.ID, e.Head.ID, e.Head.State, e.Head.Error)
}

// Is reports whether target is [ErrParked].
func (e *ParkedError) Is(target error) bool { return target == ErrParked }
