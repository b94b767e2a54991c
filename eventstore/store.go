package eventstore

import (
	"context"
	"iter"
	"maps"
	"time"
	"unicode/utf8"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// Limits every backend holds; an input beyond them fails with [ErrInvalid]
// before anything is stored, on every backend alike.
const (
	// MaxStreamLen is the longest stream name, in bytes.
	MaxStreamLen = driver.MaxStreamLen
	// MaxIDLen is the longest event ID, in bytes.
	MaxIDLen = driver.MaxIDLen
	// MaxTypeLen is the longest event type, in bytes.
	MaxTypeLen = driver.MaxTypeLen
	// MaxVersion is the highest stream version, and the highest [Exact]
	// version an append or delete may expect.
	MaxVersion = driver.MaxVersion
	// TimePrecision is the precision event times are stored with: times are
	// truncated to it.
	TimePrecision = driver.TimePrecision
)

// Store is an event store: streams of events and the global log. Each
// backend's DB hands one out (memory.DB.Events, sqlite.DB.Events,
// postgres.DB.Events); it is safe for concurrent use.
//
// The rules below hold on every backend, because the Store applies them once
// over the backend's driver (package eventstore/driver):
//
//   - Stream names are 1 to [MaxStreamLen] bytes of UTF-8 without NUL; event IDs
//     and types likewise up to [MaxIDLen] and [MaxTypeLen]; metadata as
//     [recado.Metadata.Validate] says. Event times are kept in UTC to the
//     microsecond ([TimePrecision]), from year 1 to year 9999; a zero time is
//     set to the time of the append.
//   - Append copies the caller's events before it returns (or before its
//     commit starts): nothing the caller does to them afterwards, even after an
//     [ErrUnknownOutcome], changes what is stored. Events yielded by reads are
//     the caller's to keep and change.
//   - Every error is an [*Error] with the operation and the stream, wrapping
//     the sentinels, a [*ConflictError] or a [*DuplicateIDError].
//
// Reads are iterators: the sequence yields each event with a nil error, or
// stops after yielding one error. A read is not a snapshot across batches: a
// long read may see events committed after it started (never fewer than were
// committed when it started, never out of order).
type Store struct {
	d driver.Driver
}

// New returns the front over d. Backends call it; applications get a Store
// from their backend's DB.
func New(d driver.Driver) *Store { return &Store{d: d} }

// AppendResult says where an append's events are.
type AppendResult struct {
	// FirstVersion and LastVersion are the stream versions of the first and last
	// event appended. LastVersion is the version to expect for the next append.
	FirstVersion, LastVersion uint64
	// FirstPosition and LastPosition are the global positions of the first and
	// last event appended.
	FirstPosition, LastPosition recado.Position
	// Duplicate reports that the events were already stored by an earlier append
	// (a retry) and nothing new was stored.
	Duplicate bool
}

// AppendOption sets an option of an append, a delete or [Store.State]. It is
// a small value: passing options allocates nothing.
type AppendOption struct {
	expected    ExpectedVersion
	hasExpected bool
	tx          recado.Tx
}

// Expect sets the version the stream must be at.
func Expect(v ExpectedVersion) AppendOption { return AppendOption{expected: v, hasExpected: true} }

// ExpectVersion requires the stream's last event to have version v, as
// Expect(Exact(v)).
func ExpectVersion(v uint64) AppendOption { return Expect(Exact(v)) }

// InTx makes the call part of tx, a unit of work of the same DB as the store
// (a *sqlite.Tx from the DB that gave the store, say): the events commit, or
// not, with everything else done in tx, and reads of [Store.State] see what tx
// wrote. A unit of work of another DB, or one that has ended, fails with
// [ErrInvalid]. An append in a unit of work skips group commit: the unit's
// commit is the commit.
func InTx(tx recado.Tx) AppendOption { return AppendOption{tx: tx} }

// appendOptions folds opts.
func appendOptions(opts []AppendOption) (expected ExpectedVersion, hasExpected bool, tx recado.Tx) {
	for i := range opts {
		if opts[i].hasExpected {
			expected, hasExpected = opts[i].expected, true
		}
		if opts[i].tx != nil {
			tx = opts[i].tx
		}
	}
	return expected, hasExpected, tx
}

// Append adds events to the end of stream, atomically, and returns where they
// went. By default the append goes ahead whatever the stream's version
// ([Any]); [Expect] and [ExpectVersion] set the version it must be at.
//
// Each event needs an ID and a Type. If the first event's ID is already
// stored, the append is a retry: when every event matches the stored ones
// (same IDs in the same stream and order, same type and data) nothing is stored
// and the original result is returned with Duplicate set, whatever the
// expected version; otherwise the error holds a [*DuplicateIDError]. This check
// comes before the version check. A retry of part of an earlier batch
// (consecutive events of it, in order) is recognised the same way, also after
// the stream was deleted or tombstoned: it reports what happened, it does not
// write.
//
// If ctx ends while the append is committing, Append returns an error wrapping
// [ErrUnknownOutcome]: retry it with the same events.
//
// The positions in the result are where the events are; they are safe to
// resume a subscription from only on backends whose appends commit in
// position order. To wait for a read model, wait for LastPosition to be
// reached, not passed.
func (s *Store) Append(ctx context.Context, stream string, events []recado.Event, opts ...AppendOption) (AppendResult, error) {
	expected, _, tx := appendOptions(opts)
	fail := func(err error) (AppendResult, error) {
		return AppendResult{}, &Error{Op: "append", Stream: stream, Err: err}
	}
	if err := checkStream(stream); err != nil {
		return fail(err)
	}
	if err := checkExpected(expected); err != nil {
		return fail(err)
	}
	stored, err := copyEvents(events)
	if err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	r := driver.Request{Stream: stream, Events: stored, Expected: expected.driver(), Tx: tx}
	if err := s.d.Append(ctx, &r); err != nil {
		return fail(driverError(err))
	}
	if err := outcome(&r, expected); err != nil {
		return fail(err)
	}
	return AppendResult{
		FirstVersion: r.FirstVersion, LastVersion: r.LastVersion,
		FirstPosition: r.FirstPosition, LastPosition: r.LastPosition,
		Duplicate: r.Outcome == driver.Duplicate,
	}, nil
}

// outcome turns a decided request into the error users see, or nil.
func outcome(r *driver.Request, expected ExpectedVersion) error {
	switch r.Outcome {
	case driver.Written, driver.Duplicate:
		return nil
	case driver.Conflict:
		return &ConflictError{Stream: r.Stream, Expected: expected, Actual: r.State.Version, Exists: r.State.Exists()}
	case driver.DuplicateID:
		return &DuplicateIDError{ID: r.DupID, Stream: r.DupStream, Reason: r.DupReason}
	case driver.Deleted:
		return ErrStreamDeleted
	case driver.NotFound:
		return ErrStreamNotFound
	}
	return errorf("the backend left the request undecided (outcome %d)", r.Outcome)
}

// driverError maps a driver's error to what users see: a unit of work of
// another DB is an invalid argument.
func driverError(err error) error {
	if isForeignTx(err) {
		return invalid("%v", err)
	}
	return err
}

// checkStream checks a stream name against the limits.
func checkStream(stream string) error {
	switch {
	case stream == "":
		return invalid("empty stream name")
	case len(stream) > MaxStreamLen:
		return invalid("stream name of %d bytes, longer than %d", len(stream), MaxStreamLen)
	case !utf8.ValidString(stream):
		return invalid("stream name is not valid UTF-8")
	case hasNUL(stream):
		return invalid("stream name contains a NUL byte")
	}
	return nil
}

func checkExpected(e ExpectedVersion) error {
	if v, ok := e.IsExact(); ok && v > MaxVersion {
		return invalid("expected version %d is beyond the highest version %d", v, uint64(MaxVersion))
	}
	return nil
}

// copyEvents validates events and returns the copies the driver gets: Data
// and Metadata are the store's own, times are UTC, truncated, within range.
func copyEvents(events []recado.Event) ([]recado.Event, error) {
	if len(events) == 0 {
		return nil, invalid("no events")
	}
	var now time.Time
	var seen map[string]struct{}
	if len(events) > 1 {
		seen = make(map[string]struct{}, len(events))
	}
	size := 0
	for i := range events {
		size += len(events[i].Data)
	}
	data := make([]byte, 0, size) // one allocation for every event's data
	out := make([]recado.Event, len(events))
	for i := range events {
		e := &events[i]
		if err := checkName("ID", e.ID, MaxIDLen); err != nil {
			return nil, invalid("event %d: %v", i, err)
		}
		if err := checkName("type", e.Type, MaxTypeLen); err != nil {
			return nil, invalid("event %d (%s): %v", i, e.ID, err)
		}
		if err := e.Metadata.Validate(); err != nil {
			return nil, invalid("event %d (%s): %v", i, e.ID, err)
		}
		if seen != nil {
			if _, dup := seen[e.ID]; dup {
				return nil, invalid("event ID %s appears twice", e.ID)
			}
			seen[e.ID] = struct{}{}
		}
		t := e.Time
		if t.IsZero() {
			if now.IsZero() {
				now = time.Now().UTC().Truncate(TimePrecision)
			}
			t = now
		} else {
			t = t.UTC().Truncate(TimePrecision)
			if t.Before(driver.MinTime) || t.After(driver.MaxTime) {
				return nil, invalid("event %d (%s): time %v is outside year 1 to 9999", i, e.ID, e.Time)
			}
		}
		o := &out[i]
		o.ID, o.Type, o.Time = e.ID, e.Type, t
		if e.Data != nil {
			start := len(data)
			data = append(data, e.Data...)
			o.Data = data[start:len(data):len(data)]
		}
		o.Metadata = e.Metadata
		if e.Metadata.Fields != nil {
			o.Metadata.Fields = maps.Clone(e.Metadata.Fields)
		}
	}
	return out, nil
}

// checkName checks an event's ID or type.
func checkName(what, s string, max int) error {
	switch {
	case s == "":
		if what == "ID" {
			return errorf("no ID (use recado.NewID)")
		}
		return errorf("no %s", what)
	case len(s) > max:
		return errorf("%s of %d bytes, longer than %d", what, len(s), max)
	case !utf8.ValidString(s):
		return errorf("%s is not valid UTF-8", what)
	case hasNUL(s):
		return errorf("%s contains a NUL byte", what)
	}
	return nil
}

func hasNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// ReadOption sets an option of a read. It is a small value: passing options
// allocates nothing.
type ReadOption struct {
	from      uint64
	backwards bool
	limit     int
	set       uint8 // which of the fields this option sets
}

const (
	setFrom = 1 << iota
	setBackwards
	setLimit
)

// FromVersion starts a stream read at version v (inclusive). Forwards, 0 is the
// start; backwards, 0 is the end.
func FromVersion(v uint64) ReadOption { return ReadOption{from: v, set: setFrom} }

// Backwards reads newest first.
func Backwards() ReadOption { return ReadOption{backwards: true, set: setBackwards} }

// Limit reads at most n events; 0 means no limit.
func Limit(n int) ReadOption { return ReadOption{limit: n, set: setLimit} }

func readOptions(opts []ReadOption) (driver.Read, error) {
	var r driver.Read
	for _, o := range opts {
		if o.set&setFrom != 0 {
			r.From = o.from
		}
		if o.set&setBackwards != 0 {
			r.Backwards = o.backwards
		}
		if o.set&setLimit != 0 {
			r.Limit = o.limit
		}
	}
	if r.Limit < 0 {
		return r, invalid("negative limit %d", r.Limit)
	}
	return r, nil
}

// ReadStream reads the events of one stream, by default all of them forwards.
// [FromVersion], [Backwards] and [Limit] narrow it; backwards from a version
// beyond the end starts at the last event. A stream that does not exist (or
// was soft-deleted) yields [ErrStreamNotFound]; a tombstoned one,
// [ErrStreamDeleted].
func (s *Store) ReadStream(ctx context.Context, stream string, opts ...ReadOption) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		fail := func(err error) { yield(recado.Event{}, &Error{Op: "read stream", Stream: stream, Err: err}) }
		r, err := readOptions(opts)
		if err == nil {
			err = checkStream(stream)
		}
		if err != nil {
			fail(err)
			return
		}
		for e, err := range s.d.ReadStream(ctx, stream, r) {
			if err != nil {
				fail(err)
				return
			}
			if !yield(e, nil) {
				return
			}
		}
	}
}

// ReadAll reads the global log: forwards, the events after position after
// (the zero position reads from the start); with [Backwards], the events
// before after, newest first (the zero position reads from the end). [Limit]
// bounds it; [FromVersion] does not apply. Every committed event is read
// exactly once in a forward read, in an order that keeps each stream's order:
// a reader that remembers the last position it saw and reads after it again
// never skips an event, whatever writers are doing. To keep both promises a
// backend may make a read wait while an older transaction that could still
// commit before the newest events is open (PostgreSQL does); ctx bounds the
// wait.
func (s *Store) ReadAll(ctx context.Context, after recado.Position, opts ...ReadOption) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		fail := func(err error) { yield(recado.Event{}, &Error{Op: "read all", Err: err}) }
		r, err := readOptions(opts)
		if err == nil && r.From != 0 {
			err = invalid("FromVersion does not apply to the global log")
		}
		if err != nil {
			fail(err)
			return
		}
		for e, err := range s.d.ReadAll(ctx, after, r) {
			if err != nil {
				fail(err)
				return
			}
			if !yield(e, nil) {
				return
			}
		}
	}
}

// StreamState is what [Store.State] tells of a stream.
type StreamState struct {
	// Version is the stream's last version: the version to expect for the
	// next append. A soft-deleted stream keeps it (the next append continues
	// from it); a stream that never had events has 0.
	Version uint64
	// Exists reports whether the stream has events that reads return.
	Exists bool
	// Deleted reports that the stream was soft-deleted and has had no events
	// since.
	Deleted bool
	// Tombstoned reports that the stream was deleted for good.
	Tombstoned bool
}

// State returns a stream's state in one call, on every backend: its version,
// whether it exists, was soft-deleted or tombstoned. A stream that never had
// events is the zero StreamState, not an error. [InTx] reads it inside a unit
// of work (seeing what that unit wrote); [Expect] does not apply.
func (s *Store) State(ctx context.Context, stream string, opts ...AppendOption) (StreamState, error) {
	fail := func(err error) (StreamState, error) {
		return StreamState{}, &Error{Op: "state", Stream: stream, Err: err}
	}
	_, hasExpected, tx := appendOptions(opts)
	if hasExpected {
		return fail(invalid("an expected version does not apply to State"))
	}
	if err := checkStream(stream); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	st, err := s.d.State(ctx, stream, tx)
	if err != nil {
		return fail(driverError(err))
	}
	return StreamState{Version: st.Version, Exists: st.Exists(), Deleted: st.SoftDeleted(), Tombstoned: st.Tombstoned}, nil
}

// Delete soft-deletes stream: reads say [ErrStreamNotFound], and a later append
// recreates the stream from the next version (reads then return only the new
// events). The events stay in the global log. Deleting a stream that does not
// exist is [ErrStreamNotFound], whatever the expected version (not-found is
// checked first); a tombstoned one, [ErrStreamDeleted]. [Expect] guards it
// like an append; [InTx] makes it part of a unit of work.
func (s *Store) Delete(ctx context.Context, stream string, opts ...AppendOption) error {
	return s.delete(ctx, "delete", stream, false, opts)
}

// Tombstone deletes stream for good: reads and appends fail with
// [ErrStreamDeleted], and the name can never be used again. The events stay in
// the global log. A name never written can be tombstoned (reserved);
// tombstoning a tombstoned stream is [ErrStreamDeleted].
func (s *Store) Tombstone(ctx context.Context, stream string, opts ...AppendOption) error {
	return s.delete(ctx, "tombstone", stream, true, opts)
}

func (s *Store) delete(ctx context.Context, op, stream string, tombstone bool, opts []AppendOption) error {
	expected, _, tx := appendOptions(opts)
	fail := func(err error) error { return &Error{Op: op, Stream: stream, Err: err} }
	if err := checkStream(stream); err != nil {
		return fail(err)
	}
	if err := checkExpected(expected); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	r := driver.Request{Stream: stream, Expected: expected.driver(), Tx: tx, Tombstone: tombstone}
	if err := s.d.Delete(ctx, &r); err != nil {
		return fail(driverError(err))
	}
	if err := outcome(&r, expected); err != nil {
		return fail(err)
	}
	return nil
}
