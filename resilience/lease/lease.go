// Package lease hands out named, expiring, renewable leases with fencing
// tokens: the one primitive that makes a single process the owner of some
// work (a projection, a command queue, a source of dead letters) for a while,
// and keeps a former owner from writing once it has lost the lease.
//
// A holder [Store.Acquire]s a lease for a time to live, [Store.Renew]s it
// before it expires and [Store.Release]s it when done. Each Acquire gives the
// new holder a fencing token one higher than the last. A process can pause
// (a garbage collection, a stopped VM, a slow disk) past its lease's expiry
// and carry on as if it still held it; so every write the lease guards calls
// [Store.Guard] in the write's unit of work, which refuses a token that is no
// longer current. Time alone cannot make a single owner; the token can.
//
// Each backend's DB hands out a Store (memory.DB.Leases, ...); the rules
// below hold on every backend because this package applies them once over
// the backend's driver (package lease/driver):
//
//   - A lease is held while its holder is set and the clock reads before its
//     expiry. Acquire succeeds only on a lease nobody holds; Renew, Release
//     and Guard only for the current holder with the current token, before
//     the expiry. A holder whose lease expired has lost it even if nobody
//     took it since, and must acquire it again, with a new token.
//   - The clock is the Store's ([Config.Now]). Processes that share leases
//     should keep their clocks close: skew shortens or lengthens leases, but
//     the fencing tokens keep writes safe whatever the skew.
//   - Names and holders are 1 to [MaxNameLen] and [MaxHolderLen] bytes of
//     UTF-8 without NUL; times are kept to the microsecond.
//   - Every error is an [*Error] naming the operation and the lease, wrapping
//     [ErrHeld] (with a [*HeldError]), [ErrLost], [ErrNotFound],
//     [ErrInvalid] or [ErrClosed].
package lease

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/internal/check"
	"github.com/recado-dev/recado/resilience/lease/driver"
)

// Limits every backend holds; input beyond them fails with [ErrInvalid].
const (
	// MaxNameLen is the longest lease name, in bytes.
	MaxNameLen = 255
	// MaxHolderLen is the longest holder name, in bytes.
	MaxHolderLen = 255
)

var (
	// ErrHeld: someone else holds the lease. The error holds a [*HeldError].
	ErrHeld = errors.New("lease: held by another holder")
	// ErrLost: the caller's lease expired, was released, or another holder
	// took it; the token is stale. Writes guarded by it must not happen.
	ErrLost = errors.New("lease: lost (expired, released or taken over)")
	// ErrNotFound: the lease was never acquired.
	ErrNotFound = errors.New("lease: not found")
	// ErrInvalid: the arguments are wrong (an empty or oversized name, a
	// time to live that is not positive, a unit of work of another DB).
	// Nothing was stored.
	ErrInvalid = errors.New("lease: invalid argument")
	// ErrClosed: the backend's DB was closed.
	ErrClosed = driver.ErrClosed
)

// Error is the error every call of a [Store] returns.
type Error struct {
	// Op is "acquire", "renew", "release", "guard" or "get".
	Op   string
	Name string
	Err  error
}

func (e *Error) Error() string {
	return "lease: " + e.Op + " " + strconv.Quote(e.Name) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// HeldError reports the holder of a lease that an Acquire could not take.
type HeldError struct {
	Holder  string
	Expires time.Time
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("held by %q until %s", e.Holder, e.Expires.Format(time.RFC3339Nano))
}

// Is reports whether target is [ErrHeld].
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Lease is a lease as its holder knows it. Pass it back to Renew, Release
// and Guard.
type Lease struct {
	Name string
	// Holder holds the lease; empty for a released lease read with Get.
	Holder string
	// Token is the fencing token: higher for each new holder.
	Token uint64
	// Acquired is when the holder acquired the lease.
	Acquired time.Time
	// Expires is when the lease ends unless renewed. Renew well before it:
	// the lease is lost at Expires, even if nobody takes it.
	Expires time.Time
}

// HeldAt reports whether the lease is held at t.
func (l Lease) HeldAt(t time.Time) bool { return l.Holder != "" && t.Before(l.Expires) }

// Config sets a Store's clock. The zero Config is ready to use.
type Config struct {
	// Now is the clock; nil means time.Now. Tests pass a fake one.
	Now func() time.Time
}

// Store hands out leases. It is safe for concurrent use.
type Store struct {
	d   driver.Driver
	now func() time.Time
}

// New returns the front over d. Backends call it; applications get a Store
// from their backend's DB.
func New(d driver.Driver, cfg Config) *Store {
	return &Store{d: d, now: check.Clock(cfg.Now)}
}

// Acquire takes the lease name for holder for ttl, if nobody holds it, and
// returns it with a fencing token higher than any holder's before. A lease
// someone holds (the same holder included: holder names should be unique per
// process) fails with [ErrHeld].
func (s *Store) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error) {
	return s.apply(ctx, "acquire", &driver.Request{Op: driver.Acquire, Name: name, Holder: holder, TTL: ttl})
}

// Renew extends l by ttl from now and returns the renewed lease (same
// token). It fails with [ErrLost] if l has expired or is no longer the
// current lease.
func (s *Store) Renew(ctx context.Context, l Lease, ttl time.Duration) (Lease, error) {
	return s.apply(ctx, "renew", &driver.Request{Op: driver.Renew, Name: l.Name, Holder: l.Holder, Token: l.Token, TTL: ttl})
}

// Release gives up l, so that another holder can acquire it at once. It
// fails with [ErrLost] if l had already expired or is not current.
func (s *Store) Release(ctx context.Context, l Lease) error {
	_, err := s.apply(ctx, "release", &driver.Request{Op: driver.Release, Name: l.Name, Holder: l.Holder, Token: l.Token})
	return err
}

// Guard checks, in the unit of work tx, that l is still the current lease
// and has not expired, and fails with [ErrLost] otherwise. Call it in every
// unit of work whose writes the lease guards: the check holds until tx
// commits (no new holder's Acquire commits before it), so a holder that lost
// its lease cannot write. With a nil tx it is a check at one instant, which
// guards nothing.
func (s *Store) Guard(ctx context.Context, tx recado.Tx, l Lease) error {
	_, err := s.apply(ctx, "guard", &driver.Request{Op: driver.Guard, Name: l.Name, Holder: l.Holder, Token: l.Token, Tx: tx})
	return err
}

// Get returns the lease called name as stored: its holder (empty once
// released) and token, whether or not it has expired (see [Lease.HeldAt]).
// A lease never acquired is [ErrNotFound].
func (s *Store) Get(ctx context.Context, name string) (Lease, error) {
	fail := func(err error) (Lease, error) { return Lease{}, &Error{Op: "get", Name: name, Err: err} }
	if err := check.Name("lease name", name, MaxNameLen); err != nil {
		return fail(invalid(err))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	rec, found, err := s.d.Get(ctx, name)
	switch {
	case err != nil:
		return fail(driverError(err))
	case !found:
		return fail(ErrNotFound)
	}
	return Lease(rec), nil
}

// Now returns the Store's clock reading, as leases are compared with it.
func (s *Store) Now() time.Time { return check.Now(s.now) }

func (s *Store) apply(ctx context.Context, op string, r *driver.Request) (Lease, error) {
	fail := func(err error) (Lease, error) { return Lease{}, &Error{Op: op, Name: r.Name, Err: err} }
	if err := s.checkRequest(r); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if err := s.d.Apply(ctx, r); err != nil {
		return fail(driverError(err))
	}
	switch r.Outcome {
	case driver.Written:
		return Lease(r.Next), nil
	case driver.Valid:
		return Lease(r.Current), nil
	case driver.Held:
		return fail(&HeldError{Holder: r.Current.Holder, Expires: r.Current.Expires})
	case driver.Lost:
		return fail(lost(r))
	}
	return fail(fmt.Errorf("the backend left the request undecided (outcome %d)", r.Outcome))
}

// checkRequest checks r's input and sets its time.
func (s *Store) checkRequest(r *driver.Request) error {
	if err := check.Name("lease name", r.Name, MaxNameLen); err != nil {
		return invalid(err)
	}
	if err := check.Name("holder", r.Holder, MaxHolderLen); err != nil {
		return invalid(err)
	}
	r.Now = check.Now(s.now)
	if r.Op == driver.Acquire || r.Op == driver.Renew {
		if r.TTL <= 0 {
			return invalid(fmt.Errorf("time to live %v is not positive", r.TTL))
		}
		if _, ok := check.Add(r.Now, r.TTL); !ok {
			return invalid(fmt.Errorf("time to live %v ends after year 9999", r.TTL))
		}
	}
	if r.Op != driver.Acquire && r.Token == 0 {
		return invalid(errors.New("no fencing token: pass the Lease that Acquire returned"))
	}
	return nil
}

// lost explains an ErrLost outcome.
func lost(r *driver.Request) error {
	cur := r.Current
	switch {
	case !r.Found:
		return fmt.Errorf("%w: the lease was never acquired", ErrLost)
	case cur.Token != r.Token:
		return fmt.Errorf("%w: token %d is stale, the current token is %d", ErrLost, r.Token, cur.Token)
	case cur.Holder == "":
		return fmt.Errorf("%w: released", ErrLost)
	case cur.Holder != r.Holder:
		return fmt.Errorf("%w: held by %q, not %q", ErrLost, cur.Holder, r.Holder)
	}
	return fmt.Errorf("%w: expired at %s", ErrLost, cur.Expires.Format(time.RFC3339Nano))
}

func invalid(err error) error { return fmt.Errorf("%w: %v", ErrInvalid, err) }

// driverError maps a driver's error to what users see.
func driverError(err error) error {
	if errors.Is(err, driver.ErrForeignTx) {
		return invalid(err)
	}
	return err
}
