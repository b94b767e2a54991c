// Package deadletter keeps the messages that kept failing after their
// retries, so that they neither vanish nor block the system: people see
// them, fix the bug and replay them, and the consumer that owns them
// delivers them again, in order.
//
// # Letters
//
// A consumer (a projection, a command worker, a saga, a transport's
// subscriber) whose handler keeps failing a message, after its retries and
// back-off, adds a letter with [Store.Add]: the message, the source (the
// handler's name, "projection:orders"), the last error and its class, the
// attempts, the first and last failure, and a sequence key (the message's
// stream, say) when the order of the key's messages matters.
//
// # Sequence blocking
//
// A letter with a key blocks the key: later messages of that key must not
// overtake it, while other keys flow. The consumer reads its blocked keys
// once with [Store.Blocked] and keeps the set: it adds letters itself, and
// [Store.Park] (which fails with [ErrNotBlocked] once a key is free again)
// tells it when someone else freed one. A message of a blocked key is parked
// behind the letter; the letter and the messages parked behind it form the
// key's queue, in the order they were added. Adding and parking can join the
// consumer's unit of work, so that moving past a message and parking it
// commit together.
//
// # Replay
//
// People replay one letter, many, or a whole group of letters that failed
// with one error ([Store.Replay], [Store.ReplayGroup]), or discard one with a
// reason ([Store.Discard]). A replay is a request, not a delivery: the
// consumer that owns the source (the holder of its lease, package lease)
// carries it out, so that it never races the running consumer.
// [Store.Redeliver] does it: it delivers each requested letter, marks it
// replayed, then delivers the messages parked behind it one by one, and
// stops at the first that fails again, which becomes the key's failed
// letter; the key stays blocked until its queue is empty. Discarding the
// failed letter at the head of a queue lets the messages behind it flow the
// same way. A letter that is replayed or discarded stays as an audit record
// for [Config.Retention] (30 days by default); [Store.Cleanup] removes older
// ones in small batches.
//
// Only the letter at the head of its key's queue can be replayed (the others
// follow it); any failed or parked letter can be discarded. A replay or
// discard of a letter that does not exist, was already replayed or
// discarded, or whose replay is under way is an error ([ErrNotFound],
// [ErrHandled], [ErrState]): a letter is never delivered twice by two
// requests.
//
// # Input
//
// Sources are 1 to [MaxSourceLen] bytes and keys up to [MaxKeyLen] bytes of
// UTF-8 without NUL; the message's ID, type and stream as the event store's
// limits say, and its metadata as recado.Metadata.Validate says. The error's
// message is kept as it is, up to [MaxErrorLen] bytes; invalid UTF-8 and NUL
// bytes in it are replaced, never refused, so a letter is never lost to its
// error's text. Every error is an [*Error] naming the operation.
//
// Each backend's DB hands out a Store (memory.DB.DeadLetters, ...); the
// rules above hold on every backend because this package applies them once
// over the backend's driver (package deadletter/driver). [NewHandler] serves
// the queue to operators over HTTP as JSON.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter/driver"
	"github.com/recado-dev/recado/resilience/internal/check"
)

// Limits every backend holds; input beyond them fails with [ErrInvalid].
const (
	// MaxSourceLen is the longest source name, in bytes.
	MaxSourceLen = 255
	// MaxKeyLen is the longest sequence key, in bytes (a stream name fits).
	MaxKeyLen = 1024
	// MaxErrorLen is the longest error message kept, in bytes: a longer one
	// is cut.
	MaxErrorLen = 4096
	// MaxReasonLen is the longest discard reason, in bytes.
	MaxReasonLen = 1024
	// MaxIDLen, MaxTypeLen and MaxStreamLen bound the message's ID, type and
	// stream, as in the event store.
	MaxIDLen     = 255
	MaxTypeLen   = 255
	MaxStreamLen = 1024
	// MaxLimit is the most letters or groups one List or Groups returns.
	MaxLimit = 1000
	// DefaultLimit is how many a List or Groups returns when Query.Limit is 0.
	DefaultLimit = 100
)

// Defaults of [Config].
const (
	DefaultRetention    = 30 * 24 * time.Hour
	DefaultCleanupBatch = 500
)

var (
	// ErrInvalid: the arguments are wrong (a letter without source or
	// error, an oversized key, invalid UTF-8, a unit of work of another
	// DB). Nothing was stored.
	ErrInvalid = errors.New("deadletter: invalid argument")
	// ErrNotFound: no letter has the ID (or it was cleaned up).
	ErrNotFound = errors.New("deadletter: letter not found")
	// ErrHandled: the letter was already replayed or discarded. The error
	// is a [*StateError].
	ErrHandled = errors.New("deadletter: letter already handled")
	// ErrState: the letter's state does not allow the operation: its replay
	// is requested already, or it waits behind another letter of its key.
	// The error is a [*StateError].
	ErrState = errors.New("deadletter: letter not in a state that allows this")
	// ErrNotBlocked: Park found no open letter for the key: deliver the
	// message instead.
	ErrNotBlocked = errors.New("deadletter: key not blocked")
	// ErrClosed: the backend's DB was closed.
	ErrClosed = driver.ErrClosed
)

// Error is the error every call of a [Store] returns.
type Error struct {
	// Op is "add", "park", "blocked", "requests", "delivered", "failed
	// again", "redeliver", "get", "list", "groups", "replay", "replay
	// group", "discard" or "cleanup".
	Op string
	// ID is the letter the call was about, if one.
	ID  uint64
	Err error
}

func (e *Error) Error() string {
	if e.ID == 0 {
		return "deadletter: " + e.Op + ": " + e.Err.Error()
	}
	return "deadletter: " + e.Op + " letter " + strconv.FormatUint(e.ID, 10) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// StateError reports a letter whose state does not allow an operation. It
// is [ErrHandled] for a replayed or discarded letter, [ErrState] otherwise.
type StateError struct {
	ID    uint64
	State State
	// Head is, for a letter waiting behind another letter of its key, the
	// ID of the letter at the head of the queue.
	Head uint64
}

// Error says what the state is; the [*Error] around it names the letter.
func (e *StateError) Error() string {
	switch {
	case e.State.Final():
		return "the letter was " + e.State.String() + " already"
	case e.Head != 0:
		return fmt.Sprintf("the letter (%s) waits behind letter %d of its key: replay or discard that one", e.State, e.Head)
	case e.State == Requested:
		return "the letter's replay is requested already and under way"
	}
	return "the letter is " + e.State.String()
}

// Is reports whether target is ErrHandled (final states) or ErrState (others).
func (e *StateError) Is(target error) bool {
	if e.State.Final() {
		return target == ErrHandled
	}
	return target == ErrState
}

// State is where a letter is in its life.
type State = driver.State

// The states of a letter.
const (
	// Failed: the message failed its handler and waits for people.
	Failed = driver.Failed
	// Parked: the message waits behind a failed letter of its key.
	Parked = driver.Parked
	// Requested: a replay was requested; the consumer delivers it.
	Requested = driver.Requested
	// Replayed: delivered again, successfully (an audit record).
	Replayed = driver.Replayed
	// Discarded: given up by people, with a reason (an audit record).
	Discarded = driver.Discarded
)

// Letter is a dead letter, or a message parked behind one. See the fields of
// driver.Letter.
type Letter = driver.Letter

// Group is the letters of one source that failed with one error.
type Group = driver.Group

// Query selects letters for [Store.List] and [Store.Groups]. The zero Query
// selects the open letters of every source, [DefaultLimit] at a time.
type Query struct {
	// Source selects one source; empty selects all.
	Source string
	// States selects letters in these states. Empty means the open ones
	// (Failed, Parked, Requested) for List, and Failed for Groups.
	States []State
	// ErrorContains selects letters whose error contains it (case matters).
	ErrorContains string
	// Since and Until select letters whose last failure is in [Since,
	// Until); a zero bound is no bound. A bound excludes parked messages that
	// never failed.
	Since, Until time.Time
	// After selects letters with an ID above it: pass the last ID of a page
	// to get the next page (List only).
	After uint64
	// Limit is the most letters (or groups) returned: 0 means
	// [DefaultLimit]; at most [MaxLimit].
	Limit int
}

// Failure is what a consumer knows of a message that kept failing.
type Failure struct {
	// Source names the handler that failed: "projection:orders".
	Source string
	// Key is the sequence key that orders the message with others (its
	// stream, say): its later messages are parked behind the letter. Empty
	// for a message that no other waits for.
	Key string
	// Message is the message that failed. The letter keeps a copy.
	Message recado.Event
	// Err is the last attempt's error; its class is resilience.Classify's.
	Err error
	// Attempts is how many times delivery failed; 0 counts as 1.
	Attempts int
	// FirstFailure is when the first attempt failed; zero means now.
	FirstFailure time.Time
}

// Config sets a Store's clock and retention. The zero Config is ready to
// use; zero or negative fields take their defaults.
type Config struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Retention is how long a replayed or discarded letter is kept as an
	// audit record. Default 30 days.
	Retention time.Duration
	// CleanupBatch is how many letters one transaction of Cleanup deletes
	// at most. Default 500.
	CleanupBatch int
}

// Store is a dead-letter queue. It is safe for concurrent use.
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
	if cfg.CleanupBatch <= 0 {
		cfg.CleanupBatch = DefaultCleanupBatch
	}
	return &Store{d: d, now: check.Clock(cfg.Now), cfg: cfg}
}

// Add stores a letter for a message that kept failing, in the unit of work
// tx or, when tx is nil, in a transaction of its own, and returns it. A
// letter with a key blocks the key; if the key is blocked already, the
// letter joins the end of its queue.
func (s *Store) Add(ctx context.Context, tx recado.Tx, f Failure) (Letter, error) {
	fail := func(err error) (Letter, error) { return Letter{}, &Error{Op: "add", Err: err} }
	if err := checkSourceKey(f.Source, f.Key, false); err != nil {
		return fail(err)
	}
	if f.Err == nil {
		return fail(invalid(errors.New("no error: a letter keeps the error that failed the message")))
	}
	if f.Attempts < 0 {
		return fail(invalid(fmt.Errorf("negative attempts %d", f.Attempts)))
	}
	msg, err := copyMessage(f.Message)
	if err != nil {
		return fail(err)
	}
	now := check.Now(s.now)
	first := now
	if !f.FirstFailure.IsZero() {
		if first, err = checkTime("first failure", f.FirstFailure); err != nil {
			return fail(err)
		}
	}
	l := Letter{Source: f.Source, Key: f.Key, Message: msg, Error: check.Clean(f.Err.Error(), MaxErrorLen),
		Class: resilience.Classify(f.Err), Attempts: max(f.Attempts, 1), State: Failed,
		Added: now, FirstFailure: first, LastFailure: now}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	err = s.d.Update(ctx, tx, func(w driver.Writer) error { return w.Insert(&l) })
	if err != nil {
		return fail(driverError(err))
	}
	return l, nil
}

// Park stores msg behind the open letters of source and key, in the unit of
// work tx or in a transaction of its own, to be delivered after them in
// order. It fails with [ErrNotBlocked] if the key has no open letter (it was
// freed since the consumer learned it was blocked): deliver the message
// instead.
func (s *Store) Park(ctx context.Context, tx recado.Tx, source, key string, msg recado.Event) (Letter, error) {
	fail := func(err error) (Letter, error) { return Letter{}, &Error{Op: "park", Err: err} }
	if err := checkSourceKey(source, key, true); err != nil {
		return fail(err)
	}
	m, err := copyMessage(msg)
	if err != nil {
		return fail(err)
	}
	l := Letter{Source: source, Key: key, Message: m, State: Parked, Added: check.Now(s.now)}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	err = s.d.Update(ctx, tx, func(w driver.Writer) error {
		if _, blocked, err := w.Head(source, key); err != nil || !blocked {
			if err == nil {
				err = fmt.Errorf("%w: source %q has no open letter with key %q", ErrNotBlocked, source, key)
			}
			return err
		}
		return w.Insert(&l)
	})
	if err != nil {
		return fail(driverError(err))
	}
	return l, nil
}

// Blocked returns the keys of source that are blocked (have an open letter),
// sorted. A consumer reads them when it starts and keeps the set up to date
// itself (see the package documentation).
func (s *Store) Blocked(ctx context.Context, source string) ([]string, error) {
	fail := func(err error) ([]string, error) { return nil, &Error{Op: "blocked", Err: err} }
	if err := check.Name("source", source, MaxSourceLen); err != nil {
		return fail(invalid(err))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	keys, err := s.d.Blocked(ctx, source)
	if err != nil {
		return fail(driverError(err))
	}
	return keys, nil
}

// Requests returns up to limit letters of source whose replay was requested,
// by ascending ID, for the consumer that owns the source to deliver (see
// [Store.Redeliver], which does it). A limit of 0 means [DefaultLimit].
func (s *Store) Requests(ctx context.Context, source string, limit int) ([]Letter, error) {
	fail := func(err error) ([]Letter, error) { return nil, &Error{Op: "requests", Err: err} }
	if err := check.Name("source", source, MaxSourceLen); err != nil {
		return fail(invalid(err))
	}
	q, err := resolve(Query{Source: source, States: []State{Requested}, Limit: limit}, Failed)
	if err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	letters, err := s.d.List(ctx, q)
	if err != nil {
		return fail(driverError(err))
	}
	return letters, nil
}

// Delivered records, in the unit of work tx (best: the one that made the
// delivery's effect) or in a transaction of its own, that the letter id,
// whose replay was requested, was delivered: it becomes Replayed, and the
// next letter of its key's queue, if any, is requested in turn.
func (s *Store) Delivered(ctx context.Context, tx recado.Tx, id uint64) error {
	now := check.Now(s.now)
	return s.update(ctx, "delivered", id, tx, func(w driver.Writer) error {
		l, err := s.get(w, id)
		if err != nil {
			return err
		}
		if l.State != Requested {
			return &StateError{ID: id, State: l.State}
		}
		l.State, l.Handled = Replayed, now
		if err := w.Update(&l); err != nil {
			return err
		}
		return advance(w, &l, now)
	})
}

// FailedAgain records, in the unit of work tx or in a transaction of its
// own, that the delivery of letter id, whose replay was requested, failed
// again with cause: it is Failed again, with one more attempt, and its key
// stays blocked. A parked message that fails becomes the key's failed letter.
func (s *Store) FailedAgain(ctx context.Context, tx recado.Tx, id uint64, cause error) error {
	if cause == nil {
		return &Error{Op: "failed again", ID: id, Err: invalid(errors.New("no error"))}
	}
	now := check.Now(s.now)
	return s.update(ctx, "failed again", id, tx, func(w driver.Writer) error {
		l, err := s.get(w, id)
		if err != nil {
			return err
		}
		if l.State != Requested {
			return &StateError{ID: id, State: l.State}
		}
		l.State, l.Attempts, l.LastFailure = Failed, l.Attempts+1, now
		l.Error, l.Class = check.Clean(cause.Error(), MaxErrorLen), resilience.Classify(cause)
		if l.FirstFailure.IsZero() {
			l.FirstFailure = now
		}
		return w.Update(&l)
	})
}

// Redeliver carries out the replay requests of source: the consumer that
// owns the source (holds its lease) calls it now and then. For each
// requested letter, by ascending ID, it calls deliver and records the
// outcome: [Store.Delivered] (the key's next parked message is requested in
// turn and delivered by the same call) or [Store.FailedAgain] (the key's
// replay stops there). It returns how many letters it delivered, and stops
// at the first error of the store or of ctx.
//
// Each outcome is recorded in a transaction of its own after deliver
// returns, so a crash in between delivers the letter again: make deliver
// idempotent (package inbox does, in deliver's unit of work), or record the
// outcome yourself in that unit of work with Requests, Delivered and
// FailedAgain.
func (s *Store) Redeliver(ctx context.Context, source string, deliver func(ctx context.Context, l Letter) error) (int, error) {
	n := 0
	for {
		letters, err := s.Requests(ctx, source, 0)
		if err != nil || len(letters) == 0 {
			return n, err
		}
		for _, l := range letters {
			if err := ctx.Err(); err != nil {
				return n, &Error{Op: "redeliver", Err: err}
			}
			if cause := deliver(ctx, l); cause != nil {
				if err := s.FailedAgain(ctx, nil, l.ID, cause); err != nil {
					return n, err
				}
				continue
			}
			if err := s.Delivered(ctx, nil, l.ID); err != nil {
				return n, err
			}
			n++
		}
	}
}

// Get returns letter id.
func (s *Store) Get(ctx context.Context, id uint64) (Letter, error) {
	fail := func(err error) (Letter, error) { return Letter{}, &Error{Op: "get", ID: id, Err: err} }
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	l, found, err := s.d.Get(ctx, id)
	switch {
	case err != nil:
		return fail(driverError(err))
	case !found:
		return fail(ErrNotFound)
	}
	return l, nil
}

// List returns the letters that q selects, by ascending ID. For the next
// page, set q.After to the last ID returned.
func (s *Store) List(ctx context.Context, q Query) ([]Letter, error) {
	fail := func(err error) ([]Letter, error) { return nil, &Error{Op: "list", Err: err} }
	dq, err := resolve(q, Failed, Parked, Requested)
	if err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	letters, err := s.d.List(ctx, dq)
	if err != nil {
		return fail(driverError(err))
	}
	return letters, nil
}

// Groups returns the letters that q selects (by default the failed ones)
// grouped by source and error, the most numerous groups first.
func (s *Store) Groups(ctx context.Context, q Query) ([]Group, error) {
	fail := func(err error) ([]Group, error) { return nil, &Error{Op: "groups", Err: err} }
	q.After = 0
	dq, err := resolve(q, Failed)
	if err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	groups, err := s.d.Groups(ctx, dq)
	if err != nil {
		return fail(driverError(err))
	}
	return groups, nil
}

// Replay requests the replay of the letters ids, all or none: each must be
// Failed and at the head of its key's queue. It returns how many it
// requested. The consumer that owns each letter's source delivers it (see
// [Store.Redeliver]).
func (s *Store) Replay(ctx context.Context, ids ...uint64) (int, error) {
	if len(ids) == 0 {
		return 0, &Error{Op: "replay", Err: invalid(errors.New("no letter"))}
	}
	seen := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			return 0, &Error{Op: "replay", ID: id, Err: invalid(errors.New("the letter is named twice"))}
		}
		seen[id] = true
	}
	now := check.Now(s.now)
	var failedID uint64
	err := s.d.Update(ctx, nil, func(w driver.Writer) error {
		letters := make([]Letter, len(ids))
		for i, id := range ids { // check them all before writing
			failedID = id
			l, err := s.get(w, id)
			if err == nil {
				err = s.replayable(w, &l)
			}
			if err != nil {
				return err
			}
			letters[i] = l
		}
		failedID = 0
		for i := range letters {
			letters[i].State, letters[i].Requested = Requested, now
			if err := w.Update(&letters[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, &Error{Op: "replay", ID: failedID, Err: driverError(err)}
	}
	return len(ids), nil
}

// ReplayGroup requests the replay of every Failed letter of source whose
// error is errText (a [Group]) and that is at the head of its key's queue;
// letters of the group queued behind another of their key follow it when it
// is delivered. It returns how many it requested (0 for a group that has none
// left).
func (s *Store) ReplayGroup(ctx context.Context, source, errText string) (int, error) {
	fail := func(err error) (int, error) { return 0, &Error{Op: "replay group", Err: err} }
	if err := check.Name("source", source, MaxSourceLen); err != nil {
		return fail(invalid(err))
	}
	if err := check.Text("error", errText, MaxErrorLen); err != nil {
		return fail(invalid(err))
	}
	now := check.Now(s.now)
	total := 0
	for after := uint64(0); ; {
		if err := ctx.Err(); err != nil {
			return total, &Error{Op: "replay group", Err: err}
		}
		page, err := s.d.List(ctx, driver.Query{Source: source, States: []State{Failed}, ErrorContains: errText, After: after, Limit: MaxLimit})
		if err != nil {
			return total, &Error{Op: "replay group", Err: driverError(err)}
		}
		if len(page) == 0 {
			return total, nil
		}
		after = page[len(page)-1].ID
		err = s.d.Update(ctx, nil, func(w driver.Writer) error {
			for _, p := range page {
				if p.Error != errText {
					continue
				}
				l, found, err := w.Get(p.ID)
				if err != nil {
					return err
				}
				// Skip what changed since the page was read, and what waits
				// behind another letter of its key.
				if !found || l.State != Failed || l.Error != errText || s.replayable(w, &l) != nil {
					continue
				}
				l.State, l.Requested = Requested, now
				if err := w.Update(&l); err != nil {
					return err
				}
				total++
			}
			return nil
		})
		if err != nil {
			return total, &Error{Op: "replay group", Err: driverError(err)}
		}
	}
}

// Discard gives up the failed or parked letter id, anywhere in its key's
// queue, for reason (kept with it as an audit record). If it was at the head
// of the queue, the next letter is requested for delivery in turn, so the
// messages parked behind it flow. A letter whose replay is under way cannot
// be discarded ([ErrState]).
func (s *Store) Discard(ctx context.Context, id uint64, reason string) error {
	if err := check.Name("reason", reason, MaxReasonLen); err != nil {
		return &Error{Op: "discard", ID: id, Err: invalid(err)}
	}
	now := check.Now(s.now)
	return s.update(ctx, "discard", id, nil, func(w driver.Writer) error {
		l, err := s.get(w, id)
		if err != nil {
			return err
		}
		if l.State != Failed && l.State != Parked {
			return &StateError{ID: id, State: l.State}
		}
		head := true
		if l.Key != "" {
			h, _, err := w.Head(l.Source, l.Key)
			if err != nil {
				return err
			}
			head = h.ID == l.ID
		}
		l.State, l.Handled, l.Reason = Discarded, now, reason
		if err := w.Update(&l); err != nil {
			return err
		}
		if !head {
			return nil
		}
		return advance(w, &l, now)
	})
}

// Cleanup deletes the replayed and discarded letters older than the
// retention, in transactions of at most [Config.CleanupBatch] letters each.
// It returns how many it deleted, and stops early (with the context's
// error) when ctx ends. Open letters are never deleted.
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

// update runs fn in a transaction of the driver and wraps its error.
func (s *Store) update(ctx context.Context, op string, id uint64, tx recado.Tx, fn func(w driver.Writer) error) error {
	if err := ctx.Err(); err != nil {
		return &Error{Op: op, ID: id, Err: err}
	}
	if err := s.d.Update(ctx, tx, fn); err != nil {
		return &Error{Op: op, ID: id, Err: driverError(err)}
	}
	return nil
}

// get reads letter id in w, or returns ErrNotFound.
func (s *Store) get(w driver.Writer, id uint64) (Letter, error) {
	l, found, err := w.Get(id)
	if err == nil && !found {
		err = ErrNotFound
	}
	return l, err
}

// replayable returns nil if l is at the head of its key's queue and waits
// for people: Failed, or Parked (a parked message reaches the head only if
// the letter before it went without requesting it, which the rules never
// do; replaying it then lets the key flow again).
func (s *Store) replayable(w driver.Writer, l *Letter) error {
	if l.State != Failed && l.State != Parked {
		return &StateError{ID: l.ID, State: l.State}
	}
	if l.Key == "" {
		return nil
	}
	h, _, err := w.Head(l.Source, l.Key)
	if err != nil {
		return err
	}
	if h.ID != l.ID {
		return &StateError{ID: l.ID, State: l.State, Head: h.ID}
	}
	return nil
}

// advance requests the letter that is now at the head of the queue l has
// just left (l is final), if there is one.
func advance(w driver.Writer, l *Letter, now time.Time) error {
	if l.Key == "" {
		return nil
	}
	next, found, err := w.Head(l.Source, l.Key)
	if err != nil || !found || next.State == Requested {
		return err
	}
	next.State, next.Requested = Requested, now
	return w.Update(&next)
}

// resolve checks q and turns it into the driver's query, with states def
// when q names none.
func resolve(q Query, def ...State) (driver.Query, error) {
	if q.Source != "" {
		if err := check.Name("source", q.Source, MaxSourceLen); err != nil {
			return driver.Query{}, invalid(err)
		}
	}
	if err := check.Text("error filter", q.ErrorContains, MaxErrorLen); err != nil {
		return driver.Query{}, invalid(err)
	}
	switch {
	case q.Limit < 0 || q.Limit > MaxLimit:
		return driver.Query{}, invalid(fmt.Errorf("limit %d is not in 0..%d", q.Limit, MaxLimit))
	case q.Limit == 0:
		q.Limit = DefaultLimit
	}
	states := def
	if len(q.States) > 0 {
		states = slices.Clone(q.States)
		for _, st := range states {
			if st < Failed || st > Discarded {
				return driver.Query{}, invalid(fmt.Errorf("unknown state %d", st))
			}
		}
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return driver.Query{}, invalid(fmt.Errorf("since %v is not before until %v", q.Since, q.Until))
	}
	return driver.Query{Source: q.Source, States: states, ErrorContains: q.ErrorContains,
		Since: at(q.Since), Until: at(q.Until), After: q.After, Limit: q.Limit}, nil
}

// at returns t as the stores keep times (zero stays zero).
func at(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(check.TimePrecision)
}

func checkSourceKey(source, key string, needKey bool) error {
	if err := check.Name("source", source, MaxSourceLen); err != nil {
		return invalid(err)
	}
	if needKey {
		if err := check.Name("key", key, MaxKeyLen); err != nil {
			return invalid(err)
		}
		return nil
	}
	if err := check.Text("key", key, MaxKeyLen); err != nil {
		return invalid(err)
	}
	return nil
}

// copyMessage checks m and returns the letter's own copy of it.
func copyMessage(m recado.Event) (recado.Event, error) {
	for _, f := range []struct {
		what, s string
		max     int
	}{{"message ID", m.ID, MaxIDLen}, {"message type", m.Type, MaxTypeLen}, {"message stream", m.Stream, MaxStreamLen}} {
		if err := check.Text(f.what, f.s, f.max); err != nil {
			return m, invalid(err)
		}
	}
	if err := m.Metadata.Validate(); err != nil {
		return m, invalid(fmt.Errorf("message metadata: %v", err))
	}
	if !m.Time.IsZero() {
		t, err := checkTime("message time", m.Time)
		if err != nil {
			return m, err
		}
		m.Time = t
	}
	if m.Data != nil {
		m.Data = slices.Clone(m.Data)
	}
	if m.Metadata.Fields != nil {
		m.Metadata.Fields = maps.Clone(m.Metadata.Fields)
	}
	return m, nil
}

var minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)

func checkTime(what string, t time.Time) (time.Time, error) {
	t = t.UTC().Truncate(check.TimePrecision)
	if t.Before(minTime) || t.After(check.MaxTime) {
		return t, invalid(fmt.Errorf("%s %v is outside year 1 to 9999", what, t))
	}
	return t, nil
}

func invalid(err error) error { return fmt.Errorf("%w: %v", ErrInvalid, err) }

func driverError(err error) error {
	if errors.Is(err, driver.ErrForeignTx) {
		return invalid(err)
	}
	return err
}
