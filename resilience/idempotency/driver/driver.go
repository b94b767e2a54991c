// Package driver is the contract between package idempotency's Store front
// and the backends that keep idempotency keys (memory, SQLite, PostgreSQL).
// Applications do not use it: they call the front, *idempotency.Store, which
// every backend's DB hands out.
//
// The rules live once, here and in the front: the front checks the input
// and reads the clock; a backend reads a key's record in a transaction, with
// the record locked, and calls [Request.Decide], which says what happens and
// what to store.
package driver

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/recado-dev/recado"
)

// Driver is what a backend implements. The front calls it only with checked
// input: scopes, keys and fingerprints within the limits of package
// idempotency, responses within the Store's limit, times in UTC truncated to
// the microsecond.
type Driver interface {
	// Apply reads the record of r.Scope and r.Key in a transaction (r.Tx's
	// when it is not nil, else one of its own), locks it until that
	// transaction ends, calls r.Decide with it (found false if there is
	// none) and, when Decide returns true, stores r.Next in its place, or
	// deletes the record if r.Delete is set. Of concurrent Applies on one
	// key, each decides on what the ones before it stored; in particular of
	// concurrent claims of a new key exactly one is New. With r.Tx set the
	// driver returns [ErrForeignTx] if r.Tx is not its own, live, unit of
	// work.
	Apply(ctx context.Context, r *Request) error

	// Cleanup deletes at most limit records created before before, in one
	// short transaction, and returns how many it deleted.
	Cleanup(ctx context.Context, before time.Time, limit int) (int, error)
}

var (
	// ErrClosed: the backend's DB was closed.
	ErrClosed = errors.New("idempotency: store closed")
	// ErrForeignTx: the unit of work given is not one of this backend's DB,
	// or it has ended. The front reports it as idempotency.ErrInvalid.
	ErrForeignTx = errors.New("idempotency: unit of work of another DB, or finished")
)

// State is the state of a stored key.
type State uint8

const (
	// InProgress: a request with the key is being handled.
	InProgress State = iota + 1
	// Completed: the request was handled; Response is its response.
	Completed
)

// Record is what a backend keeps of one key.
type Record struct {
	Scope, Key  string
	Fingerprint []byte
	State       State
	// Token identifies the claim that holds the key. A record that is
	// created starts at a random token (a released record is deleted, so a
	// count would start again and a released claim could pass for the next
	// one); a take-over adds one.
	Token uint64
	// Response is the stored response of a completed request.
	Response []byte
	// Created is when the key was first claimed; the record expires
	// Retention after it.
	Created time.Time
	// Locked is when the claim in progress was made; another claim may take
	// the key over LockTimeout after it.
	Locked time.Time
}

// Op is what a [Request] asks for.
type Op uint8

const (
	// Claim claims the key for a request with Fingerprint.
	Claim Op = iota + 1
	// Complete stores Response for the claim with Token.
	Complete
	// Release gives up the claim with Token, so that the key can be claimed
	// again.
	Release
)

// Outcome is what became of a request.
type Outcome uint8

const (
	// Pending: not decided yet.
	Pending Outcome = iota
	// New: a Claim holds the key now (r.Next is stored).
	New
	// Busy: a Claim found another claim of the key in progress.
	Busy
	// Done: a Claim found the key completed (r.Current.Response); or a
	// Complete or Release was applied.
	Done
	// Mismatch: a Claim found the key used with another fingerprint.
	Mismatch
	// Lost: a Complete or Release found that its claim no longer holds the
	// key (it expired, was released, or another claim took it over).
	Lost
)

// Request is one operation on a key on its way through a driver. The front
// fills the first fields; [Request.Decide] fills the rest.
type Request struct {
	Op          Op
	Scope, Key  string
	Fingerprint []byte // Claim
	Token       uint64 // Complete, Release
	Response    []byte // Complete
	// Now is the time of the request, read by the front.
	Now time.Time
	// Retention and LockTimeout are the front's settings: a record created
	// Retention before Now has expired; a claim in progress for LockTimeout
	// may be taken over.
	Retention, LockTimeout time.Duration
	// Tx is the caller's unit of work, or nil.
	Tx recado.Tx

	// Outcome is set by Decide.
	Outcome Outcome
	// Current and Found are the record the decision was made on.
	Current Record
	Found   bool
	// Next is what the driver stores when Decide returns true, unless
	// Delete is set: then it deletes the record.
	Next   Record
	Delete bool
}

// Expired reports whether rec has outlived the retention at r.Now.
func (r *Request) Expired(rec Record) bool {
	return !r.Now.Before(rec.Created.Add(r.Retention))
}

// Decide applies the rules to the key's record cur (found false when there
// is none) and returns true when the driver must store r.Next (or delete the
// record, if r.Delete is set).
//
// The rules. A record that has outlived the retention counts as absent. A
// Claim of an absent key is New: the key is in progress, with the next
// token. A Claim with another fingerprint than the stored one is Mismatch,
// whatever the state. A Claim of a key in progress is Busy, unless the
// claim in progress is LockTimeout old: then the new claim takes the key
// over (New, with the next token), and the old claim has lost it. A Claim
// of a completed key is Done, with the stored response. A Complete or
// Release succeeds (Done) only for the claim that holds the key: in
// progress, with the same token, not expired; otherwise it is Lost.
func (r *Request) Decide(cur Record, found bool) bool {
	r.Outcome, r.Current, r.Found, r.Next, r.Delete = Pending, cur, found, Record{}, false
	live := found && !r.Expired(cur)
	if r.Op != Claim {
		if !live || cur.State != InProgress || cur.Token != r.Token {
			r.Outcome = Lost
			return false
		}
		r.Outcome = Done
		if r.Op == Release {
			r.Delete = true
			return true
		}
		r.Next = cur
		r.Next.State, r.Next.Response = Completed, r.Response
		return true
	}
	switch {
	case !live:
		r.Outcome = New
		r.Next = Record{Scope: r.Scope, Key: r.Key, Fingerprint: r.Fingerprint, State: InProgress,
			Token: freshToken(cur.Token), Created: r.Now, Locked: r.Now}
		return true
	case !bytes.Equal(cur.Fingerprint, r.Fingerprint):
		r.Outcome = Mismatch
	case cur.State == Completed:
		r.Outcome = Done
	case r.Now.Before(cur.Locked.Add(r.LockTimeout)):
		r.Outcome = Busy
	default: // the claim in progress has run past its lock: take it over
		r.Outcome = New
		r.Next = cur
		r.Next.Token, r.Next.Locked = cur.Token+1, r.Now
		return true
	}
	return false
}

// freshToken returns the token of a new record: random, never 0 and never
// old (the token of the expired record it replaces, if any).
func freshToken(old uint64) uint64 {
	for {
		if t := rand.Uint64() >> 1; t != 0 && t != old {
			return t
		}
	}
}
