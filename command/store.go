package command

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command/driver"
	"github.com/recado-dev/recado/resilience/problem"
)

// State is where a command is in its life:
//
//	accepted ──► running ──► succeeded
//	   ▲            │  ├───► failed
//	   │            │  └───► dead-lettered ──┐
//	   └────────────┴─────────────────────────┘
//	     retry after a back-off   replay of its dead letter
type State = driver.Status

// The states of a command.
const (
	// Accepted: stored; a worker runs it when it is due.
	Accepted = driver.Accepted
	// Running: a worker runs its handler.
	Running = driver.Running
	// Succeeded: its events and this state committed together. Final.
	Succeeded = driver.Succeeded
	// Failed: its handler refused it; Status.Problem says why. Final.
	Failed = driver.Failed
	// DeadLettered: it kept failing; its dead letter waits for people to
	// replay it. Final until replayed.
	DeadLettered = driver.DeadLettered
)

// Status is what the store knows of a command.
type Status struct {
	ID    string
	Queue string
	// Type is the command's type name, Data its encoded value, Metadata
	// what the caller sent along.
	Type     string
	Data     []byte
	Metadata recado.Metadata
	// Key orders the command among others of the same key (its
	// aggregate's stream).
	Key   string
	State State
	// Attempts is how many times a worker has started the command.
	Attempts int
	// Accepted is when it was accepted; Updated when its state last
	// changed; NotBefore, for a command waiting to be retried, when it may
	// run again.
	Accepted, Updated, NotBefore time.Time
	// Stream, Version and Position say where a succeeded command's events
	// are: Position is the last event's, the one to wait for to read your
	// own write. Empty when it wrote none.
	Stream   string
	Version  uint64
	Position recado.Position
	// Location names the command's result, as its handler said.
	Location string
	// Problem says why a command failed or was dead-lettered.
	Problem *problem.Details
	// DeadLetter is the ID of a dead-lettered command's letter.
	DeadLetter uint64
	// Scope and IdempotencyKey are the caller's, if it gave a key.
	Scope, IdempotencyKey string
}

// statusOf returns the Status of rec.
func statusOf(rec *driver.Record) Status {
	st := Status{ID: rec.ID, Queue: rec.Queue, Type: rec.Type, Data: rec.Data, Metadata: rec.Metadata, Key: rec.Key,
		State: rec.Status, Attempts: rec.Attempts, Accepted: rec.Accepted, Updated: rec.Updated, NotBefore: rec.NotBefore,
		Stream: rec.Stream, Version: rec.Version, Position: rec.Position, Location: rec.Location,
		DeadLetter: rec.Letter, Scope: rec.Scope, IdempotencyKey: rec.IdempotencyKey}
	if len(rec.Problem) > 0 {
		var d problem.Details
		if err := json.Unmarshal(rec.Problem, &d); err != nil {
			d = problem.Details{Title: "Unreadable problem", Detail: clean(string(rec.Problem), maxProblemText)}
		}
		st.Problem = &d
	}
	return st
}

// Defaults of [StoreConfig].
const (
	DefaultRetention    = 7 * 24 * time.Hour
	DefaultCleanupBatch = 500
	DefaultMaxData      = 1 << 20
)

// StoreConfig sets a Store's clock, limits and retention. The zero value is
// ready to use; zero or negative fields take their defaults.
type StoreConfig struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Retention is how long a command's record is kept after it reached a
	// final state. Default 7 days. An idempotency key is remembered as long
	// as its record: after that, the same key is a new command.
	Retention time.Duration
	// CleanupBatch is how many records one transaction of Cleanup deletes
	// at most. Default 500.
	CleanupBatch int
	// MaxData is the largest encoded command kept, in bytes. Default 1 MiB.
	MaxData int
}

// Store keeps the records of commands accepted now and run later: their
// data, state and outcome. Each backend's DB hands one out
// (memory.DB.Commands, ...); the rules hold on every backend because the
// Store applies them once over the backend's driver (package
// command/driver). It is safe for concurrent use.
//
// Applications reach it through a [Queue] (which accepts commands) and a
// [Worker] (which runs them); [Store.Get], [Store.Wait] and [Store.Cleanup]
// are for operators and tools as well.
type Store struct {
	d   driver.Commands
	now func() time.Time
	cfg StoreConfig
	// accepted is notified when a command becomes accepted through this
	// Store (new, retried or replayed): it wakes this process's workers.
	accepted signal
	// watch wakes the waiters of a command when it changes through this
	// Store.
	watch watchers
}

// NewStore returns the front over d. Backends call it; applications get a
// Store from their backend's DB.
func NewStore(d driver.Commands, cfg StoreConfig) *Store {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.CleanupBatch <= 0 {
		cfg.CleanupBatch = DefaultCleanupBatch
	}
	if cfg.MaxData <= 0 {
		cfg.MaxData = DefaultMaxData
	}
	return &Store{d: d, now: clock(cfg.Now), cfg: cfg}
}

// fingerprint is the digest two accepts with one idempotency key must share.
func fingerprint(typ string, data []byte) []byte {
	h := sha256.New()
	h.Write([]byte(typ))
	h.Write([]byte{0})
	h.Write(data)
	return h.Sum(nil)
}

// insert checks rec, fills in what the store decides and stores it, or finds
// the record stored with its idempotency key. rec has its Queue, Type, Data,
// Metadata, Key, Scope and IdempotencyKey set.
func (s *Store) insert(ctx context.Context, tx recado.Tx, rec *driver.Record) (st Status, existing bool, err error) {
	if err := s.checkNew(rec); err != nil {
		return Status{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return Status{}, false, err
	}
	now := stamp(s.now)
	rec.ID = recado.NewID()
	rec.Fingerprint = fingerprint(rec.Type, rec.Data)
	rec.KeyHash = keyHash(rec.Key, rec.ID)
	rec.Status, rec.Attempts = Accepted, 0
	rec.Accepted, rec.Updated = now, now
	old, found, err := s.d.Insert(ctx, tx, rec)
	if err != nil {
		return Status{}, false, driverError(err)
	}
	if found {
		if !bytes.Equal(old.Fingerprint, rec.Fingerprint) {
			return Status{}, false, fmt.Errorf("%w: key %q of scope %q was used for command %s (%s)",
				ErrMismatch, rec.IdempotencyKey, rec.Scope, old.ID, old.Type)
		}
		return statusOf(&old), true, nil
	}
	s.notify(tx, rec.ID, true)
	return statusOf(rec), false, nil
}

// checkNew checks a new record's input.
func (s *Store) checkNew(rec *driver.Record) error {
	checks := []error{
		checkName("queue name", rec.Queue, MaxQueueLen),
		checkName("command type", rec.Type, MaxTypeLen),
		checkText("key", rec.Key, MaxKeyLen),
		checkText("scope", rec.Scope, MaxScopeLen),
		checkText("idempotency key", rec.IdempotencyKey, MaxIdempotencyKeyLen),
	}
	for _, err := range checks {
		if err != nil {
			return invalid("%v", err)
		}
	}
	if rec.Scope != "" && rec.IdempotencyKey == "" {
		return invalid("a scope without an idempotency key")
	}
	if err := rec.Metadata.Validate(); err != nil {
		return invalid("metadata: %v", err)
	}
	if len(rec.Data) > s.cfg.MaxData {
		return fmt.Errorf("%w: %d bytes of data, more than %d", ErrTooLarge, len(rec.Data), s.cfg.MaxData)
	}
	return nil
}

// notify wakes this process's waiters of command id, and its workers if
// the command is accepted, now or when tx commits.
func (s *Store) notify(tx recado.Tx, id string, accepted bool) {
	f := func() {
		s.watch.notify(id)
		if accepted {
			s.accepted.notify()
		}
	}
	if tx != nil {
		tx.OnCommit(f)
		return
	}
	f()
}

// Get returns the status of command id.
func (s *Store) Get(ctx context.Context, id string) (Status, error) {
	rec, err := s.get(ctx, id)
	if err != nil {
		return Status{}, &Error{Op: "status", ID: id, Err: err}
	}
	return statusOf(&rec), nil
}

func (s *Store) get(ctx context.Context, id string) (driver.Record, error) {
	if err := checkName("command ID", id, MaxTypeLen); err != nil {
		return driver.Record{}, invalid("%v", err)
	}
	if err := ctx.Err(); err != nil {
		return driver.Record{}, err
	}
	rec, found, err := s.d.Get(ctx, id)
	switch {
	case err != nil:
		return driver.Record{}, driverError(err)
	case !found:
		return driver.Record{}, ErrNotFound
	}
	return rec, nil
}

// Wait waits until command id reaches a final state (succeeded, failed or
// dead-lettered), for at most timeout, and returns its status then: final,
// or the state it is in when the time is up. It wakes at once for changes
// of the command made through this Store (by a Worker of this process), and
// looks again every few hundred milliseconds for changes made by other
// processes. A timeout of 0 looks once.
func (s *Store) Wait(ctx context.Context, id string, timeout time.Duration) (Status, error) {
	deadline := time.Now().Add(timeout)
	poll := 10 * time.Millisecond
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	defer s.watch.done(id)
	for again := false; ; again = true {
		changed := s.watch.wait(id, again)
		rec, err := s.get(ctx, id)
		if err != nil {
			return Status{}, &Error{Op: "wait", ID: id, Err: err}
		}
		left := time.Until(deadline)
		if rec.Status.Final() || left <= 0 {
			return statusOf(&rec), nil
		}
		d := min(poll, left)
		poll = min(2*poll, 500*time.Millisecond)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			return statusOf(&rec), &Error{Op: "wait", ID: id, Err: ctx.Err()}
		}
	}
}

// Cleanup deletes the records of commands that reached a final state longer
// than the retention ago, in transactions of at most
// [StoreConfig.CleanupBatch] records each, so that it never holds a lock for
// long. It returns how many it deleted, and stops early (with the context's
// error) when ctx ends. Pending commands are never deleted. A [Worker] calls
// it now and then.
func (s *Store) Cleanup(ctx context.Context) (int, error) {
	before := stamp(s.now).Add(-s.cfg.Retention)
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

// errSkip is what a change function returns to leave a record as it is.
var errSkip = errors.New("command: record left as it is")

// change reads record id in the unit of work tx (or a transaction of its
// own), lets fn change it and stores the result, with Updated set. If fn
// returns errSkip, nothing is written and change returns the record as it
// was with errSkip.
func (s *Store) change(ctx context.Context, tx recado.Tx, id string, fn func(rec *driver.Record) error) (driver.Record, error) {
	var out driver.Record
	err := s.d.Update(ctx, tx, func(w driver.Writer) error {
		rec, found, err := w.Get(id)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		if err := fn(&rec); err != nil {
			out = rec
			return err
		}
		rec.Updated = stamp(s.now)
		out = rec
		return w.Put(&rec)
	})
	if err != nil {
		return out, driverError(err)
	}
	s.notify(tx, id, out.Status == Accepted)
	return out, nil
}

// restore stores rec again, as a new record, if no record has its ID: a
// record cleaned up while its dead letter waited for a replay.
func (s *Store) restore(ctx context.Context, rec driver.Record) error {
	rec.Seq, rec.Scope, rec.IdempotencyKey = 0, "", ""
	rec.Updated = stamp(s.now)
	err := s.d.Update(ctx, nil, func(w driver.Writer) error {
		if _, found, err := w.Get(rec.ID); err != nil || found {
			return err
		}
		return w.Put(&rec)
	})
	if err != nil {
		return driverError(err)
	}
	s.notify(nil, rec.ID, true)
	return nil
}

// pending returns the pending records q selects.
func (s *Store) pending(ctx context.Context, q driver.Query) ([]driver.Record, error) {
	recs, err := s.d.Pending(ctx, q)
	return recs, driverError(err)
}
