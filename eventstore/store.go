package eventstore

import (
	"context"
	"iter"
	"unicode/utf8"

	"github.com/recado-dev/recado"
)

// Store keeps streams of events and the global log.
//
// Implementations are safe for concurrent use. Reads are iterators: the sequence
// yields each event with a nil error, or stops after yielding one error. A read
// is not a snapshot across batches: a long read may see events committed after it
// started (never fewer than were committed when it started, never out of order).
type Store interface {
	// Append adds events to the end of stream, atomically, and returns where they
	// went. By default the append goes ahead whatever the stream's version
	// ([Any]); [Expect] and [ExpectVersion] set the version it must be at.
	//
	// Each event needs an ID and a Type. If the first event's ID is already
	// stored, the append is a retry: when every event matches the stored ones (same
	// IDs in the same stream and order, same type and data) nothing is stored and
	// the original result is returned with Duplicate set, whatever the expected
	// version; otherwise the error is a [*DuplicateIDError]. This check comes
	// before the version check.
	//
	// A retry of part of an earlier batch (consecutive events of it, in order) is
	// recognised the same way. A retry is recognised even after the stream was
	// deleted or tombstoned: it reports what happened, it does not write.
	//
	// If ctx ends while the append is committing, Append returns an error wrapping
	// [ErrUnknownOutcome]: retry it with the same events.
	Append(ctx context.Context, stream string, events []recado.Event, opts ...AppendOption) (AppendResult, error)

	// ReadStream reads the events of one stream, by default all of them forwards.
	// [FromVersion], [Backwards] and [Limit] narrow it; backwards from a version
	// beyond the end starts at the last event. A stream that does not
	// exist (or was soft-deleted) yields [ErrStreamNotFound]; a tombstoned one,
	// [ErrStreamDeleted].
	ReadStream(ctx context.Context, stream string, opts ...ReadOption) iter.Seq2[recado.Event, error]

	// ReadAll reads the global log: forwards, the events after position after (the
	// zero position reads from the start); with [Backwards], the events before
	// after, newest first (the zero position reads from the end). [Limit] bounds
	// it; [FromVersion] does not apply. Every committed event is read exactly once
	// in a forward read, in an order that keeps each stream's order: a reader that
	// remembers the last position it saw and reads after it again never skips an
	// event, whatever writers are doing. To keep both promises a backend may
	// make a read wait while an older transaction that could still commit
	// before the newest events is open (PostgreSQL does); ctx bounds the wait.
	ReadAll(ctx context.Context, after recado.Position, opts ...ReadOption) iter.Seq2[recado.Event, error]
}

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

// AppendOptions are the settings of one append, resolved from [AppendOption]s.
type AppendOptions struct {
	Expected ExpectedVersion
	// Tx is the caller's unit of work, set by [InTx]: the append joins that
	// transaction (and skips group commit: the caller's commit is the commit).
	Tx any
}

// AppendOption sets an option of one append.
type AppendOption func(*AppendOptions)

// Expect sets the version the stream must be at.
func Expect(v ExpectedVersion) AppendOption {
	return func(o *AppendOptions) { o.Expected = v }
}

// ExpectVersion requires the stream's last event to have version v, as
// Expect(Exact(v)).
func ExpectVersion(v uint64) AppendOption { return Expect(Exact(v)) }

// InTx makes the append part of tx, a unit of work of the store's own backend
// (for example a *sqlite.Tx): the events commit, or not, with everything else
// done in tx. A store given a unit of work of another backend returns an error
// wrapping [ErrInvalid].
func InTx(tx any) AppendOption { return func(o *AppendOptions) { o.Tx = tx } }

// NewAppendOptions resolves opts, for backends.
func NewAppendOptions(opts ...AppendOption) AppendOptions {
	var o AppendOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// ReadOptions are the settings of one read, resolved from [ReadOption]s.
type ReadOptions struct {
	// From is the first stream version to read (inclusive). Zero means the start
	// forwards and the end backwards.
	From uint64
	// Backwards reads newest first.
	Backwards bool
	// Limit is the most events to read; zero means no limit.
	Limit int
}

// ReadOption sets an option of one read.
type ReadOption func(*ReadOptions)

// FromVersion starts a stream read at version v (inclusive).
func FromVersion(v uint64) ReadOption { return func(o *ReadOptions) { o.From = v } }

// Backwards reads newest first.
func Backwards() ReadOption { return func(o *ReadOptions) { o.Backwards = true } }

// Limit reads at most n events.
func Limit(n int) ReadOption { return func(o *ReadOptions) { o.Limit = n } }

// NewReadOptions resolves opts, for backends.
func NewReadOptions(opts ...ReadOption) ReadOptions {
	var o ReadOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Validate checks read options, for backends.
func (o ReadOptions) Validate() error {
	if o.Limit < 0 {
		return invalid("negative limit %d", o.Limit)
	}
	return nil
}

// ValidateStream checks a stream name: not empty, valid UTF-8, no NUL byte.
func ValidateStream(stream string) error {
	switch {
	case stream == "":
		return invalid("empty stream name")
	case !utf8.ValidString(stream):
		return invalid("stream name %q is not valid UTF-8", stream)
	}
	for i := 0; i < len(stream); i++ {
		if stream[i] == 0 {
			return invalid("stream name %q contains a NUL byte", stream)
		}
	}
	return nil
}

// ValidateAppend checks an append's arguments before a backend touches storage:
// the stream name, at least one event, every event with a valid ID and type and
// valid metadata, no ID twice, and a valid expected version. Backends call it
// first, so every backend rejects the same input with the same errors.
func ValidateAppend(stream string, events []recado.Event, o AppendOptions) error {
	if err := ValidateStream(stream); err != nil {
		return err
	}
	if len(events) == 0 {
		return invalid("append to %q: no events", stream)
	}
	if !o.Expected.valid() {
		return invalid("append to %q: expected version %s", stream, o.Expected)
	}
	var seen map[string]struct{}
	if len(events) > 1 {
		seen = make(map[string]struct{}, len(events))
	}
	for i := range events {
		e := &events[i]
		switch {
		case e.ID == "":
			return invalid("append to %q: event %d has no ID (use recado.NewID)", stream, i)
		case !utf8.ValidString(e.ID):
			return invalid("append to %q: event %d: ID is not valid UTF-8", stream, i)
		case e.Type == "":
			return invalid("append to %q: event %d (%s) has no type", stream, i, e.ID)
		case !utf8.ValidString(e.Type):
			return invalid("append to %q: event %d (%s): type is not valid UTF-8", stream, i, e.ID)
		}
		if err := e.Metadata.Validate(); err != nil {
			return invalid("append to %q: event %d (%s): %v", stream, i, e.ID, err)
		}
		if seen != nil {
			if _, dup := seen[e.ID]; dup {
				return invalid("append to %q: event ID %s appears twice", stream, e.ID)
			}
			seen[e.ID] = struct{}{}
		}
	}
	return nil
}

// Notifier is implemented by stores that can tell readers that events may have
// been committed, so that subscriptions wake at once instead of polling.
type Notifier interface {
	// Committed returns a channel that is closed the next time events are
	// committed after the call. Take the channel before reading, then wait on
	// it: a commit between the read and the wait is not missed.
	Committed() <-chan struct{}
}

// Subscriber is implemented by stores with subscriptions of their own (a
// server-side subscription, say). [Subscribe] uses it when present.
type Subscriber interface {
	Subscribe(ctx context.Context, after recado.Position, opts ...SubscribeOption) iter.Seq2[Message, error]
}

// Deleter is implemented by stores that can delete streams.
type Deleter interface {
	// Delete soft-deletes stream: reads say [ErrStreamNotFound], and a later
	// append recreates the stream from the next version (reads then return only
	// the new events). The events stay in the global log. Deleting a stream that
	// does not exist is [ErrStreamNotFound], whatever the expected version
	// (not-found is checked first). [Expect] guards it like an append.
	Delete(ctx context.Context, stream string, opts ...AppendOption) error
	// Tombstone deletes stream for good: reads and appends fail with
	// [ErrStreamDeleted], and the name can never be used again. The events stay
	// in the global log. Tombstoning a tombstoned stream is [ErrStreamDeleted].
	Tombstone(ctx context.Context, stream string, opts ...AppendOption) error
}
