// Package driver is the contract between package deadletter's Store front
// and the backends that keep dead letters (memory, SQLite, PostgreSQL).
// Applications do not use it: they call the front, *deadletter.Store, which
// every backend's DB hands out.
//
// The rules live once, in the front: which letter may be replayed, what a
// delivery or a discard does to the letters queued behind it. A backend
// stores and finds letters: it runs the front's function in a transaction
// with a [Writer] whose reads lock what they return, and answers the
// operators' queries.
package driver

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience"
)

// Driver is what a backend implements. The front calls it only with checked
// input: names within the limits of package deadletter, times in UTC
// truncated to the microsecond, queries with a positive limit and at least
// one state.
type Driver interface {
	// Update runs fn in a transaction: tx's when tx is not nil (then
	// [ErrForeignTx] if tx is not the driver's own, live, unit of work),
	// else one of its own, committed if fn returns nil and rolled back
	// otherwise. fn reads and writes letters through w. The front's fn
	// reads everything it needs before it writes, and returns an error only
	// before its first write (or with the error of a write).
	Update(ctx context.Context, tx recado.Tx, fn func(w Writer) error) error

	// Get returns the committed letter id.
	Get(ctx context.Context, id uint64) (l Letter, found bool, err error)

	// List returns the committed letters that match q, by ascending ID:
	// those whose ID is above q.After, at most q.Limit.
	List(ctx context.Context, q Query) ([]Letter, error)

	// Groups returns the committed letters that match q (q.After does not
	// apply) grouped by Source and Error: the most numerous groups first
	// (ties by Source, then Error), at most q.Limit groups.
	Groups(ctx context.Context, q Query) ([]Group, error)

	// Blocked returns the keys of source (not the empty key) that have an
	// open letter ([State.Open]), in ascending order.
	Blocked(ctx context.Context, source string) ([]string, error)

	// Cleanup deletes at most limit letters whose state is final and whose
	// Handled time is before before, in one short transaction, and returns
	// how many it deleted.
	Cleanup(ctx context.Context, before time.Time, limit int) (int, error)
}

// Writer reads and writes letters inside one transaction of [Driver.Update].
// It sees the transaction's own writes. What its reads return stays locked
// until the transaction ends: of two transactions that read the same letter
// (by ID or as the head of a key), the second waits for the first to end and
// then sees its writes.
type Writer interface {
	// Get returns letter id.
	Get(id uint64) (l Letter, found bool, err error)
	// Head returns the open letter of source and key with the lowest ID
	// (key is not empty). The driver locks enough that no other transaction
	// can add a letter to or change the letters of source and key until
	// this one ends.
	Head(source, key string) (l Letter, found bool, err error)
	// Insert stores l as a new letter and sets l.ID to a number higher than
	// any letter's before.
	Insert(l *Letter) error
	// Update stores l in place of the letter with l.ID.
	Update(l *Letter) error
}

var (
	// ErrClosed: the backend's DB was closed.
	ErrClosed = errors.New("deadletter: store closed")
	// ErrForeignTx: the unit of work given is not one of this backend's DB,
	// or it has ended. The front reports it as deadletter.ErrInvalid.
	ErrForeignTx = errors.New("deadletter: unit of work of another DB, or finished")
)

// State is where a letter is in its life.
type State uint8

const (
	// Failed: the message failed its handler and waits for people.
	Failed State = iota + 1
	// Parked: the message did not fail; it waits behind a failed letter of
	// its key, to keep the key's order.
	Parked
	// Requested: a replay was requested; the consumer that owns the source
	// delivers it.
	Requested
	// Replayed: delivered again, successfully. Final: an audit record.
	Replayed
	// Discarded: given up by people, with a reason. Final: an audit record.
	Discarded
)

// Open reports whether s is not final: the letter blocks its key.
func (s State) Open() bool { return s >= Failed && s <= Requested }

// Final reports whether s is Replayed or Discarded.
func (s State) Final() bool { return s == Replayed || s == Discarded }

func (s State) String() string {
	switch s {
	case Failed:
		return "failed"
	case Parked:
		return "parked"
	case Requested:
		return "requested"
	case Replayed:
		return "replayed"
	case Discarded:
		return "discarded"
	}
	return "unknown"
}

// Letter is what a backend keeps of one dead letter or parked message.
type Letter struct {
	// ID is assigned by [Writer.Insert]; it orders letters.
	ID uint64
	// Source is the handler the message is for ("projection:orders").
	Source string
	// Key is the sequence key (a stream ID, say); empty for none.
	Key string
	// Message is the message, as it was delivered.
	Message recado.Event
	// Error and Class are the last failure's message and class; empty and
	// zero for a message parked without failing.
	Error string
	Class resilience.Class
	// Attempts is how many times delivery failed.
	Attempts int
	State    State
	// Added is when the letter was stored.
	Added time.Time
	// FirstFailure and LastFailure bound the failures; zero for a parked
	// message that has not failed.
	FirstFailure, LastFailure time.Time
	// Requested is when the last replay was requested; zero if none was.
	Requested time.Time
	// Handled is when it was replayed or discarded; zero while open.
	Handled time.Time
	// Reason is why it was discarded.
	Reason string
}

// Query selects letters.
type Query struct {
	// Source selects one source; empty selects all.
	Source string
	// States selects letters in one of these states (never empty).
	States []State
	// ErrorContains selects letters whose Error contains it (byte for byte);
	// empty selects all.
	ErrorContains string
	// Since and Until select letters whose LastFailure is in [Since, Until);
	// a zero bound is no bound. A bound excludes letters that have not failed.
	Since, Until time.Time
	// After selects letters whose ID is above it (List only).
	After uint64
	// Limit is the most letters (or groups) returned, above zero.
	Limit int
}

// Match reports whether l matches q (After and Limit aside): the reference
// that SQL backends express in their WHERE clause.
func (q *Query) Match(l *Letter) bool {
	if q.Source != "" && l.Source != q.Source {
		return false
	}
	in := false
	for _, s := range q.States {
		in = in || s == l.State
	}
	if !in || !strings.Contains(l.Error, q.ErrorContains) {
		return false
	}
	if (!q.Since.IsZero() || !q.Until.IsZero()) && l.LastFailure.IsZero() {
		return false
	}
	if !q.Since.IsZero() && l.LastFailure.Before(q.Since) {
		return false
	}
	if !q.Until.IsZero() && !l.LastFailure.Before(q.Until) {
		return false
	}
	return true
}

// Group is the letters of one source that failed with one error.
type Group struct {
	Source, Error string
	// Count is how many letters match.
	Count int
	// FirstFailure is the earliest FirstFailure of the letters, LastFailure
	// the latest LastFailure.
	FirstFailure, LastFailure time.Time
	// FirstID is the lowest ID of the letters: one to look at.
	FirstID uint64
}
