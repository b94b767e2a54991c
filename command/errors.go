package command

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/recado-dev/recado/command/driver"
)

// Sentinel errors. Every call of the package returns them wrapped in an
// [*Error] naming the operation; test with [errors.Is].
var (
	// ErrInvalid: the command or the call's arguments are wrong (a command
	// whose Validate fails, an empty type name, a name beyond the limits, a
	// unit of work of another DB). Nothing was stored. Over HTTP: 422.
	ErrInvalid = errors.New("command: invalid")
	// ErrUnknownCommand: no handler is registered for the command's type.
	// The error holds an [*UnknownCommandError]. Over HTTP: 404.
	ErrUnknownCommand = errors.New("command: unknown command")
	// ErrNotFound: no command has the ID (or its record was cleaned up).
	ErrNotFound = errors.New("command: not found")
	// ErrMismatch: the idempotency key was used before, by the same caller,
	// for another command. Over HTTP: 422.
	ErrMismatch = errors.New("command: idempotency key already used for another command")
	// ErrTooLarge: the encoded command is larger than the store keeps.
	ErrTooLarge = errors.New("command: too large")
	// ErrClosed: the backend's DB was closed.
	ErrClosed = driver.ErrClosed
)

// Error is the error every call of the package returns, except the errors
// of the handlers themselves, which [Bus.Dispatch] returns as they are.
type Error struct {
	// Op is "accept", "dispatch", "status", "wait", "cleanup", "load",
	// "update", "snapshot" or "run".
	Op string
	// ID is the command the call was about, if one; Type its type, if
	// known.
	ID, Type string
	Err      error
}

func (e *Error) Error() string {
	s := "command: " + e.Op
	if e.Type != "" {
		s += " " + e.Type
	}
	if e.ID != "" {
		s += " " + strconv.Quote(e.ID)
	}
	return s + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// UnknownCommandError names a command type no handler is registered for.
type UnknownCommandError struct {
	// Type is the type name, or the Go type when the name is not known.
	Type string
}

func (e *UnknownCommandError) Error() string {
	return fmt.Sprintf("no handler for command type %q", e.Type)
}

// Is reports whether target is [ErrUnknownCommand].
func (e *UnknownCommandError) Is(target error) bool { return target == ErrUnknownCommand }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// driverError maps a driver's error to what users see.
func driverError(err error) error {
	if errors.Is(err, driver.ErrForeignTx) {
		return invalid("%v", err)
	}
	return err
}
