// Package driver is the contract between package inbox's Store front and the
// backends that keep inbox entries (memory, SQLite, PostgreSQL).
// Applications do not use it: they call the front, *inbox.Store, which every
// backend's DB hands out.
//
// The front checks the input, reads the clock and decides what may be
// cleaned up; a backend stores an entry once, atomically, inside the
// caller's unit of work.
package driver

import (
	"context"
	"errors"
	"time"

	"github.com/recado-dev/recado"
)

// Driver is what a backend implements. The front calls it only with checked
// input: consumer names and message IDs within the limits of package inbox,
// times in UTC truncated to the microsecond.
type Driver interface {
	// Claim stores e unless an entry with e's Consumer and MessageID is
	// stored, and reports whether it stored it. It runs in tx when tx is
	// not nil (then [ErrForeignTx] if tx is not the driver's own, live,
	// unit of work), else in a transaction of its own. Of concurrent claims
	// of one entry exactly one stores it; one whose unit of work is still
	// open makes the others wait, and if that unit rolls back, one of them
	// stores it.
	Claim(ctx context.Context, tx recado.Tx, e Entry) (claimed bool, err error)

	// Get returns the committed entry of consumer and messageID.
	Get(ctx context.Context, consumer, messageID string) (e Entry, found bool, err error)

	// Cleanup deletes at most limit entries whose Time is before before, in
	// one short transaction, and returns how many it deleted.
	Cleanup(ctx context.Context, before time.Time, limit int) (int, error)
}

var (
	// ErrClosed: the backend's DB was closed.
	ErrClosed = errors.New("inbox: store closed")
	// ErrForeignTx: the unit of work given is not one of this backend's DB,
	// or it has ended. The front reports it as inbox.ErrInvalid.
	ErrForeignTx = errors.New("inbox: unit of work of another DB, or finished")
)

// Entry records that a consumer has handled a message.
type Entry struct {
	Consumer  string
	MessageID string
	// Time is when the claim was made.
	Time time.Time
}
