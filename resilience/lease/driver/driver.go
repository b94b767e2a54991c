// Package driver is the contract between package lease's Store front and the
// backends that keep leases (memory, SQLite, PostgreSQL). Applications do not
// use it: they call the front, *lease.Store, which every backend's DB hands
// out.
//
// As with the event store, the rules live once, here and in the front: the
// front checks the input and reads the clock; a backend reads the lease's
// record in a transaction, with the record locked, and calls
// [Request.Decide], which says what happens and what to store.
package driver

import (
	"context"
	"errors"
	"time"

	"github.com/recado-dev/recado"
)

// Driver is what a backend implements. The front calls it only with checked
// input: names and holders within the limits of package lease, a time in UTC
// truncated to the microsecond.
type Driver interface {
	// Apply reads the record of the lease r.Name in a transaction (r.Tx's
	// when it is not nil, else one of its own), locks it until that
	// transaction ends, calls r.Decide with it (found false if there is
	// none) and, when Decide returns true, stores r.Next in its place. Of
	// concurrent Applies on one lease, each decides on what the ones before
	// it stored. With r.Tx set the driver returns [ErrForeignTx] if r.Tx is
	// not its own, live, unit of work.
	//
	// A Guard (r.Op) never writes, but its lock must hold until r.Tx ends,
	// so that no Acquire of the same lease commits before the guarded unit
	// of work does.
	Apply(ctx context.Context, r *Request) error

	// Get returns the stored record of a lease, as committed; found is
	// false if the lease was never acquired.
	Get(ctx context.Context, name string) (rec Record, found bool, err error)
}

var (
	// ErrClosed: the backend's DB was closed.
	ErrClosed = errors.New("lease: store closed")
	// ErrForeignTx: the unit of work given is not one of this backend's DB,
	// or it has ended. The front reports it as lease.ErrInvalid.
	ErrForeignTx = errors.New("lease: unit of work of another DB, or finished")
)

// Record is what a backend keeps of one lease.
type Record struct {
	Name string
	// Holder holds the lease until Expires; empty once released.
	Holder string
	// Token is the fencing token of the current (or last) holder: it grows
	// by one with each Acquire.
	Token uint64
	// Acquired is when the current holder acquired the lease.
	Acquired time.Time
	// Expires is when the holder's lease ends, unless renewed.
	Expires time.Time
}

// HeldAt reports whether the record is held by someone at t.
func (rec Record) HeldAt(t time.Time) bool {
	return rec.Holder != "" && t.Before(rec.Expires)
}

// Op is what a [Request] asks for.
type Op uint8

const (
	// Acquire takes the lease for Holder for TTL, if nobody holds it.
	Acquire Op = iota + 1
	// Renew extends the lease of Holder with Token by TTL from Now.
	Renew
	// Release gives up the lease of Holder with Token.
	Release
	// Guard checks that Holder with Token still holds the lease.
	Guard
)

// Outcome is what became of a request.
type Outcome uint8

const (
	// Pending: not decided yet.
	Pending Outcome = iota
	// Written: the driver stores r.Next.
	Written
	// Held: an Acquire found the lease held by someone (r.Current).
	Held
	// Lost: the caller's lease has expired, was released, or another
	// holder has taken it since (r.Current says which).
	Lost
	// Valid: a Guard found the caller's lease current.
	Valid
)

// Request is one operation on a lease on its way through a driver. The front
// fills the first fields; [Request.Decide] fills the rest.
type Request struct {
	Op     Op
	Name   string
	Holder string
	// Token is the caller's fencing token (Renew, Release, Guard).
	Token uint64
	// TTL is how long the lease lasts from Now (Acquire, Renew).
	TTL time.Duration
	// Now is the time of the request, read by the front.
	Now time.Time
	// Tx is the caller's unit of work, or nil.
	Tx recado.Tx

	// Outcome is set by Decide.
	Outcome Outcome
	// Current and Found are the record the decision was made on.
	Current Record
	Found   bool
	// Next is what the driver stores when Outcome is Written.
	Next Record
}

// Decide applies the rules to the lease's record cur (found false when the
// lease has none) and returns true when the driver must store r.Next.
//
// The rules: an Acquire succeeds when nobody holds the lease at Now (never
// acquired, released, or expired), and gives the new holder the next fencing
// token. A Renew, Release or Guard succeeds only while the caller still holds
// the lease: same holder and token, not released, and Now before Expires. A
// holder whose lease expired has lost it, even if nobody has taken it since:
// it must acquire it again, with a new token.
func (r *Request) Decide(cur Record, found bool) bool {
	r.Outcome, r.Current, r.Found, r.Next = Pending, cur, found, Record{}
	if r.Op == Acquire {
		if found && cur.HeldAt(r.Now) {
			r.Outcome = Held
			return false
		}
		r.Outcome = Written
		r.Next = Record{Name: r.Name, Holder: r.Holder, Token: cur.Token + 1, Acquired: r.Now,
			Expires: r.Now.Add(r.TTL).Truncate(time.Microsecond)}
		return true
	}
	if !found || !cur.HeldAt(r.Now) || cur.Holder != r.Holder || cur.Token != r.Token {
		r.Outcome = Lost
		return false
	}
	switch r.Op {
	case Renew:
		r.Next = cur
		r.Next.Expires = r.Now.Add(r.TTL).Truncate(time.Microsecond)
	case Release:
		r.Next = cur
		r.Next.Holder, r.Next.Expires = "", r.Now
	default: // Guard
		r.Outcome = Valid
		return false
	}
	r.Outcome = Written
	return true
}
