// Package idempotency makes a request safe to retry: the first request with
// an idempotency key runs, and a retry with the same key gets the stored
// response instead of running again. Its Store keeps the keys; its
// [Middleware] applies them to HTTP as the IETF draft "The Idempotency-Key
// HTTP Header Field" describes.
//
// A request claims its key with a fingerprint of what it asks for:
//
//	c, err := keys.Claim(ctx, nil, caller, key, fingerprint)
//	switch c.Status {
//	case idempotency.Claimed:    // run it, then keys.Complete(ctx, nil, c, response)
//	                             // or, on a failure worth retrying, keys.Release(ctx, nil, c)
//	case idempotency.Completed:  // answer c.Response
//	case idempotency.InProgress: // the first request is still running: try later
//	case idempotency.Mismatch:   // the key was used for another request: refuse
//	}
//
// Completing the key in the unit of work that makes the request's effect
// (pass the tx) makes the two commit together: a crash between them cannot
// leave an effect without its stored response.
//
// The rules, the same on every backend (memory.DB.IdempotencyKeys, ...):
//
//   - Keys are scoped: the same key from two callers are two keys. A scope is
//     at most [MaxScopeLen] bytes (empty is allowed), a key 1 to [MaxKeyLen]
//     bytes, both UTF-8 without NUL; a fingerprint at most
//     [MaxFingerprintLen] bytes.
//   - A claim in progress holds the key for [Config.LockTimeout] (1 minute
//     by default): a claim of the key after that takes it over with a new
//     token, and the old claim's Complete and Release fail with [ErrLost].
//     This frees a key whose request died with its process.
//   - A key is kept for [Config.Retention] (24 hours by default) from its
//     first claim; after that it counts as absent, and [Store.Cleanup]
//     deletes it in small batches.
//   - A response is at most [Config.MaxResponse] bytes (1 MiB by default);
//     a larger one fails with [ErrTooLarge] and is not stored.
//   - Every error is an [*Error] wrapping [ErrInvalid], [ErrTooLarge],
//     [ErrLost], [ErrClosed] or the backend's error.
package idempotency

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/idempotency/driver"
	"github.com/recado-dev/recado/resilience/internal/check"
)

// Limits every backend holds; input beyond them fails with [ErrInvalid].
const (
	// MaxScopeLen is the longest scope, in bytes.
	MaxScopeLen = 255
	// MaxKeyLen is the longest key, in bytes: the draft's 255 characters of
	// an HTTP header's ASCII.
	MaxKeyLen = 255
	// MaxFingerprintLen is the longest fingerprint, in bytes: a SHA-512
	// digest fits.
	MaxFingerprintLen = 64
)

// Defaults of [Config].
const (
	DefaultRetention    = 24 * time.Hour
	DefaultLockTimeout  = time.Minute
	DefaultMaxResponse  = 1 << 20
	DefaultCleanupBatch = 500
)

var (
	// ErrInvalid: the arguments are wrong (an empty or oversized key, a
	// Claim that is not Claimed passed to Complete, a unit of work of another
	// DB). Nothing was stored.
	ErrInvalid = errors.New("idempotency: invalid argument")
	// ErrTooLarge: a response is larger than the Store keeps. Nothing was
	// stored.
	ErrTooLarge = errors.New("idempotency: response too large to store")
	// ErrLost: the claim no longer holds its key: the key expired, was
	// released, or a later claim took it over after the lock timeout.
	ErrLost = errors.New("idempotency: claim lost")
	// ErrClosed: the backend's DB was closed.
	ErrClosed = driver.ErrClosed
)

// Error is the error every call of a [Store] returns.
type Error struct {
	// Op is "claim", "complete", "release" or "cleanup".
	Op         string
	Scope, Key string
	Err        error
}

func (e *Error) Error() string {
	if e.Op == "cleanup" {
		return "idempotency: cleanup: " + e.Err.Error()
	}
	return "idempotency: " + e.Op + " " + strconv.Quote(e.Scope) + " " + strconv.Quote(e.Key) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Status is what a claim found.
type Status uint8

const (
	// Claimed: the key is the caller's now; run the request, then Complete
	// or Release.
	Claimed Status = iota + 1
	// InProgress: another claim of the key is running.
	InProgress
	// Completed: the request ran; Claim.Response is its response.
	Completed
	// Mismatch: the key was used for a request with another fingerprint.
	Mismatch
)

func (s Status) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case InProgress:
		return "in progress"
	case Completed:
		return "completed"
	case Mismatch:
		return "mismatch"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Claim is the outcome of [Store.Claim].
type Claim struct {
	Scope, Key string
	Status     Status
	// Token identifies a Claimed claim; Complete and Release check it.
	Token uint64
	// Response is the stored response of a Completed key.
	Response []byte
	// Created is when the key was first claimed.
	Created time.Time
}

// Config sets a Store's clock, limits and retention. The zero Config is
// ready to use; zero or negative fields take their defaults.
type Config struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Retention is how long a key is kept from its first claim. Default 24
	// hours, as the draft's examples and common practice have it.
	Retention time.Duration
	// LockTimeout is how long a claim in progress holds its key against
	// other claims. Default 1 minute. Make it longer than the slowest
	// request.
	LockTimeout time.Duration
	// MaxResponse is the largest response stored, in bytes. Default 1 MiB.
	MaxResponse int
	// CleanupBatch is how many keys one transaction of Cleanup deletes at
	// most. Default 500.
	CleanupBatch int
}

// Store keeps idempotency keys. It is safe for concurrent use.
type Store struct {
	d   driver.Driver
	now func() time.Time
	cfg Config
}

// New returns the front over d. Backends call it; applications get a Store
// from their backend's DB.
func New(d driver.Driver, cfg Config) *Store {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.MaxResponse <= 0 {
		cfg.MaxResponse = DefaultMaxResponse
	}
	if cfg.CleanupBatch <= 0 {
		cfg.CleanupBatch = DefaultCleanupBatch
	}
	return &Store{d: d, now: check.Clock(cfg.Now), cfg: cfg}
}

// MaxResponse returns the largest response the Store keeps, in bytes.
func (s *Store) MaxResponse() int { return s.cfg.MaxResponse }

// Claim claims key in scope for a request with fingerprint (a digest of what
// the request asks for), in the unit of work tx or, when tx is nil, in a
// transaction of its own, and says what it found (see [Status]). Of
// concurrent claims of a new key exactly one is Claimed.
func (s *Store) Claim(ctx context.Context, tx recado.Tx, scope, key string, fingerprint []byte) (Claim, error) {
	r := &driver.Request{Op: driver.Claim, Scope: scope, Key: key, Fingerprint: bytes.Clone(fingerprint), Tx: tx}
	if len(fingerprint) > MaxFingerprintLen {
		return Claim{}, &Error{Op: "claim", Scope: scope, Key: key,
			Err: invalid(fmt.Errorf("fingerprint of %d bytes, longer than %d", len(fingerprint), MaxFingerprintLen))}
	}
	if r.Fingerprint == nil {
		r.Fingerprint = []byte{}
	}
	if err := s.apply(ctx, "claim", r); err != nil {
		return Claim{}, err
	}
	c := Claim{Scope: scope, Key: key, Created: r.Current.Created}
	switch r.Outcome {
	case driver.New:
		c.Status, c.Token, c.Created = Claimed, r.Next.Token, r.Next.Created
	case driver.Busy:
		c.Status = InProgress
	case driver.Done:
		c.Status, c.Response = Completed, r.Current.Response
	case driver.Mismatch:
		c.Status = Mismatch
	default:
		return Claim{}, &Error{Op: "claim", Scope: scope, Key: key, Err: undecided(r)}
	}
	return c, nil
}

// Complete stores response as the response of the request that made the
// claim c (Claimed), in the unit of work tx (best: the one that made the request's
// effect) or in a transaction of its own. Later claims of the key get it. It
// fails with [ErrTooLarge] for a response beyond [Config.MaxResponse], and
// with [ErrLost] if c no longer holds the key.
func (s *Store) Complete(ctx context.Context, tx recado.Tx, c Claim, response []byte) error {
	if len(response) > s.cfg.MaxResponse {
		return &Error{Op: "complete", Scope: c.Scope, Key: c.Key,
			Err: fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(response), s.cfg.MaxResponse)}
	}
	r := &driver.Request{Op: driver.Complete, Scope: c.Scope, Key: c.Key, Token: c.Token, Response: bytes.Clone(response), Tx: tx}
	if r.Response == nil {
		r.Response = []byte{}
	}
	return s.finish(ctx, "complete", c, r)
}

// Release gives up the claim c (Claimed) without a response, so that a retry runs
// the request again: call it when the request failed in a way worth
// retrying and left no effect. It fails with [ErrLost] if c no longer holds
// the key.
func (s *Store) Release(ctx context.Context, tx recado.Tx, c Claim) error {
	return s.finish(ctx, "release", c, &driver.Request{Op: driver.Release, Scope: c.Scope, Key: c.Key, Token: c.Token, Tx: tx})
}

func (s *Store) finish(ctx context.Context, op string, c Claim, r *driver.Request) error {
	if c.Status != Claimed || c.Token == 0 {
		return &Error{Op: op, Scope: c.Scope, Key: c.Key, Err: invalid(fmt.Errorf("the claim is %v, not claimed", c.Status))}
	}
	if err := s.apply(ctx, op, r); err != nil {
		return err
	}
	switch r.Outcome {
	case driver.Done:
		return nil
	case driver.Lost:
		return &Error{Op: op, Scope: c.Scope, Key: c.Key, Err: lost(r)}
	}
	return &Error{Op: op, Scope: c.Scope, Key: c.Key, Err: undecided(r)}
}

// Cleanup deletes the keys older than the retention, in transactions of at
// most [Config.CleanupBatch] keys each, so that it never holds a lock for
// long. It returns how many it deleted, and stops early (with the context's
// error) when ctx ends.
func (s *Store) Cleanup(ctx context.Context) (int, error) {
	before := check.Now(s.now).Add(-s.cfg.Retention)
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, &Error{Op: "cleanup", Err: err}
		}
		n, err := s.d.Cleanup(ctx, before, s.cfg.CleanupBatch)
		total += n
		if err != nil {
			return total, &Error{Op: "cleanup", Err: driverError(err)}
		}
		if n < s.cfg.CleanupBatch {
			return total, nil
		}
	}
}

// apply checks r, sets its time and settings and passes it to the driver.
func (s *Store) apply(ctx context.Context, op string, r *driver.Request) error {
	fail := func(err error) error { return &Error{Op: op, Scope: r.Scope, Key: r.Key, Err: err} }
	if err := check.Text("scope", r.Scope, MaxScopeLen); err != nil {
		return fail(invalid(err))
	}
	if err := check.Name("key", r.Key, MaxKeyLen); err != nil {
		return fail(invalid(err))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	r.Now, r.Retention, r.LockTimeout = check.Now(s.now), s.cfg.Retention, s.cfg.LockTimeout
	if err := s.d.Apply(ctx, r); err != nil {
		return fail(driverError(err))
	}
	return nil
}

// lost explains a Lost outcome.
func lost(r *driver.Request) error {
	cur := r.Current
	switch {
	case !r.Found:
		return fmt.Errorf("%w: the key is not stored (released, or cleaned up)", ErrLost)
	case r.Expired(cur):
		return fmt.Errorf("%w: the key expired", ErrLost)
	case cur.Token != r.Token:
		return fmt.Errorf("%w: claim %d was taken over by claim %d after the lock timeout", ErrLost, r.Token, cur.Token)
	}
	return fmt.Errorf("%w: the key is completed already", ErrLost)
}

func undecided(r *driver.Request) error {
	return fmt.Errorf("the backend left the request undecided (outcome %d)", r.Outcome)
}

func invalid(err error) error { return fmt.Errorf("%w: %v", ErrInvalid, err) }

func driverError(err error) error {
	if errors.Is(err, driver.ErrForeignTx) {
		return invalid(err)
	}
	return err
}
