// Package inbox makes a consumer idempotent: it records, in the consumer's
// unit of work, that the consumer has handled a message, so that a message
// delivered again (at-least-once delivery, a retry, a replay from the
// dead-letter queue) has its effect once.
//
// A consumer claims the message in the same unit of work as its effect:
//
//	err := db.Tx(ctx, func(tx *memory.Tx) error {
//		first, err := inbox.Claim(ctx, tx, "billing", msg.ID)
//		if err != nil || !first {
//			return err // handled before: do nothing
//		}
//		return applyEffect(ctx, tx, msg)
//	})
//
// The claim commits with the effect or not at all: a failure rolls both
// back, and the next delivery finds the message unclaimed. Of concurrent
// deliveries of one message exactly one claims it.
//
// Entries are kept at least [Config.Retention] (7 days by default), which
// must be longer than the longest time a message can come back: the retry
// window of the sender, a dead letter waiting for its replay. [Store.Cleanup]
// removes older entries in small batches.
//
// Each backend's DB hands out a Store (memory.DB.Inbox, ...). Consumer names
// and message IDs are 1 to [MaxConsumerLen] and [MaxMessageIDLen] bytes of
// UTF-8 without NUL. Every error is an [*Error] wrapping [ErrInvalid],
// [ErrClosed] or the backend's error.
package inbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/inbox/driver"
	"github.com/recado-dev/recado/resilience/internal/check"
)

// Limits every backend holds; input beyond them fails with [ErrInvalid].
const (
	// MaxConsumerLen is the longest consumer name, in bytes.
	MaxConsumerLen = 255
	// MaxMessageIDLen is the longest message ID, in bytes.
	MaxMessageIDLen = 255
)

// Defaults of [Config].
const (
	DefaultRetention    = 7 * 24 * time.Hour
	DefaultCleanupBatch = 500
)

var (
	// ErrInvalid: the arguments are wrong (an empty or oversized name, a
	// unit of work of another DB). Nothing was stored.
	ErrInvalid = errors.New("inbox: invalid argument")
	// ErrClosed: the backend's DB was closed.
	ErrClosed = driver.ErrClosed
)

// Error is the error every call of a [Store] returns.
type Error struct {
	// Op is "claim", "handled" or "cleanup".
	Op string
	// Consumer and MessageID are the call's (empty for cleanup).
	Consumer, MessageID string
	Err                 error
}

func (e *Error) Error() string {
	if e.Consumer == "" && e.MessageID == "" {
		return "inbox: " + e.Op + ": " + e.Err.Error()
	}
	return "inbox: " + e.Op + " " + strconv.Quote(e.Consumer) + " " + strconv.Quote(e.MessageID) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Config sets a Store's clock and retention. The zero Config is ready to
// use; zero or negative fields take their defaults.
type Config struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Retention is how long an entry is kept at least: longer than the
	// longest time a message can come back. Default 7 days.
	Retention time.Duration
	// CleanupBatch is how many entries one transaction of Cleanup deletes
	// at most. Default 500.
	CleanupBatch int
}

// Store records which messages each consumer has handled. It is safe for
// concurrent use.
type Store struct {
	d         driver.Driver
	now       func() time.Time
	retention time.Duration
	batch     int
}

// New returns the front over d. Backends call it; applications get a Store
// from their backend's DB.
func New(d driver.Driver, cfg Config) *Store {
	s := &Store{d: d, now: check.Clock(cfg.Now), retention: cfg.Retention, batch: cfg.CleanupBatch}
	if s.retention <= 0 {
		s.retention = DefaultRetention
	}
	if s.batch <= 0 {
		s.batch = DefaultCleanupBatch
	}
	return s
}

// Claim records that consumer handles the message messageID, in the unit of
// work tx, and reports whether this is the first claim: true means go ahead
// with the effect (in tx), false means the message was handled before. With
// a nil tx the claim commits at once, before the effect: a failure after it
// loses the message for this consumer (at most once), so pass the unit of
// work that makes the effect.
//
// A claim in a unit of work that is still open makes concurrent claims of the
// same message wait for it to end; they then see it (false), or claim the
// message themselves if it rolled back.
func (s *Store) Claim(ctx context.Context, tx recado.Tx, consumer, messageID string) (bool, error) {
	fail := func(err error) (bool, error) {
		return false, &Error{Op: "claim", Consumer: consumer, MessageID: messageID, Err: err}
	}
	if err := checkIDs(consumer, messageID); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	claimed, err := s.d.Claim(ctx, tx, driver.Entry{Consumer: consumer, MessageID: messageID, Time: check.Now(s.now)})
	if err != nil {
		return fail(driverError(err))
	}
	return claimed, nil
}

// Handled reports whether consumer has handled messageID: whether a claim of
// it has committed (and not been cleaned up).
func (s *Store) Handled(ctx context.Context, consumer, messageID string) (bool, error) {
	fail := func(err error) (bool, error) {
		return false, &Error{Op: "handled", Consumer: consumer, MessageID: messageID, Err: err}
	}
	if err := checkIDs(consumer, messageID); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	_, found, err := s.d.Get(ctx, consumer, messageID)
	if err != nil {
		return fail(driverError(err))
	}
	return found, nil
}

// Cleanup deletes the entries older than the retention, in transactions of at
// most [Config.CleanupBatch] entries each, so that it never holds a lock for
// long. It returns how many it deleted, and stops early (with the context's
// error) when ctx ends. Run it now and then, from one process or many.
func (s *Store) Cleanup(ctx context.Context) (int, error) {
	before := check.Now(s.now).Add(-s.retention)
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, &Error{Op: "cleanup", Err: err}
		}
		n, err := s.d.Cleanup(ctx, before, s.batch)
		total += n
		if err != nil {
			return total, &Error{Op: "cleanup", Err: driverError(err)}
		}
		if n < s.batch {
			return total, nil
		}
	}
}

func checkIDs(consumer, messageID string) error {
	if err := check.Name("consumer name", consumer, MaxConsumerLen); err != nil {
		return invalid(err)
	}
	if err := check.Name("message ID", messageID, MaxMessageIDLen); err != nil {
		return invalid(err)
	}
	return nil
}

func invalid(err error) error { return fmt.Errorf("%w: %v", ErrInvalid, err) }

func driverError(err error) error {
	if errors.Is(err, driver.ErrForeignTx) {
		return invalid(err)
	}
	return err
}
