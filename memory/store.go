// Package memory keeps recado's stores in memory: for tests, examples, and as the
// reference implementation every other backend is measured against.
//
// [Store] is an [eventstore.Store] whose global log is a slice guarded by one
// mutex: an append validates, checks idempotency and the expected version, and
// adds its events under the lock, so commits are serial and the log never has
// gaps. Reads copy a chunk of events under a read lock and yield them without
// holding it, so a slow reader never blocks writers and a long read never copies
// the whole log. Positions are [recado.NewPosition](n, 0) with n from 1.
//
// The store also implements [eventstore.Notifier] (subscriptions wake as soon as
// events commit), [eventstore.Deleter] and [io.Closer]. It has no unit of work:
// an append given [eventstore.InTx] fails with [eventstore.ErrInvalid]. Nothing
// survives the process.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"maps"
	"sync"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// readChunk is how many events a read copies under one hold of the lock.
const readChunk = 256

// Store is an event store in memory. The zero value is not ready: use [New].
type Store struct {
	eventstore.Signal // wakes subscriptions after each commit and on Close

	mu      sync.RWMutex
	log     []recado.Event     // the global log; log[i] has position i+1
	streams map[string]*stream // by name
	ids     map[string]int     // event ID → index in log
	closed  bool
}

// stream is what the store knows of one stream.
type stream struct {
	// events are the indexes in the log of the stream's events: events[v-1] is
	// version v, including versions hidden by a soft delete.
	events []int
	// start is the last version hidden by a soft delete: reads return only the
	// versions after it, and the stream exists only if it has some.
	start uint64
	// tombstoned streams can never be read or written again.
	tombstoned bool
}

func (s *stream) last() uint64       { return uint64(len(s.events)) }
func (s *stream) exists() bool       { return s.last() > s.start }
func (s *stream) index(v uint64) int { return s.events[v-1] }

// New returns an empty store.
func New() *Store {
	return &Store{streams: make(map[string]*stream), ids: make(map[string]int)}
}

var (
	_ eventstore.Store    = (*Store)(nil)
	_ eventstore.Notifier = (*Store)(nil)
	_ eventstore.Deleter  = (*Store)(nil)
)

// Append implements [eventstore.Store.Append].
func (s *Store) Append(ctx context.Context, name string, events []recado.Event, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	o := eventstore.NewAppendOptions(opts...)
	if err := eventstore.ValidateAppend(name, events, o); err != nil {
		return eventstore.AppendResult{}, err
	}
	if o.Tx != nil {
		return eventstore.AppendResult{}, fmt.Errorf("%w: append to %q: the memory store has no unit of work (got %T)",
			eventstore.ErrInvalid, name, o.Tx)
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	// Copy the caller's events before taking the lock: the store must not share
	// the caller's byte slices or maps.
	now := time.Now().Round(0) // no monotonic reading: stored times compare with ==
	stored := make([]recado.Event, len(events))
	for i, e := range events {
		stored[i] = copyEvent(e)
		if stored[i].Time.IsZero() {
			stored[i].Time = now
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return eventstore.AppendResult{}, fmt.Errorf("append to %q: %w", name, eventstore.ErrClosed)
	}
	if res, dup, err := s.retried(name, events); dup || err != nil {
		return res, err
	}
	st := s.streams[name]
	if st == nil {
		st = &stream{}
	}
	if st.tombstoned {
		return eventstore.AppendResult{}, fmt.Errorf("append to %q: %w", name, eventstore.ErrStreamDeleted)
	}
	if err := o.Expected.Check(name, st.last(), st.exists()); err != nil {
		return eventstore.AppendResult{}, err
	}
	s.streams[name] = st
	res := eventstore.AppendResult{FirstVersion: st.last() + 1, FirstPosition: recado.NewPosition(uint64(len(s.log))+1, 0)}
	for i := range stored {
		e := &stored[i]
		e.Stream = name
		e.Version = st.last() + 1
		e.Position = recado.NewPosition(uint64(len(s.log))+1, 0)
		s.ids[e.ID] = len(s.log)
		st.events = append(st.events, len(s.log))
		s.log = append(s.log, *e)
	}
	res.LastVersion = st.last()
	res.LastPosition = recado.NewPosition(uint64(len(s.log)), 0)
	s.Notify()
	return res, nil
}

// retried reports whether events were stored before, by an append that is
// being retried: if the first ID is stored, every event must match a stored
// one, in the same stream and order, with the same type and data. An event ID
// stored for anything else is a [*eventstore.DuplicateIDError]. s.mu is held.
func (s *Store) retried(name string, events []recado.Event) (eventstore.AppendResult, bool, error) {
	first, ok := s.ids[events[0].ID]
	if !ok {
		// Not a retry; but no later event may reuse a stored ID either.
		for _, e := range events[1:] {
			if i, ok := s.ids[e.ID]; ok {
				return eventstore.AppendResult{}, false, &eventstore.DuplicateIDError{
					ID: e.ID, Stream: s.log[i].Stream, Reason: "stored by an earlier append that did not start with this batch's first event"}
			}
		}
		return eventstore.AppendResult{}, false, nil
	}
	for k, e := range events {
		i, ok := s.ids[e.ID]
		if !ok {
			return eventstore.AppendResult{}, false, &eventstore.DuplicateIDError{ID: events[0].ID, Stream: s.log[first].Stream,
				Reason: fmt.Sprintf("the retried batch has event %s (index %d) that was not stored with it", e.ID, k)}
		}
		was := &s.log[i]
		var reason string
		switch {
		case was.Stream != name:
			reason = fmt.Sprintf("stored in another stream, not %q", name)
		case was.Version != s.log[first].Version+uint64(k):
			reason = fmt.Sprintf("stored as version %d, not at index %d of this batch", was.Version, k)
		case was.Type != e.Type:
			reason = fmt.Sprintf("stored with type %q, not %q", was.Type, e.Type)
		case !bytes.Equal(was.Data, e.Data):
			reason = "stored with other data"
		}
		if reason != "" {
			return eventstore.AppendResult{}, false, &eventstore.DuplicateIDError{ID: e.ID, Stream: was.Stream, Reason: reason}
		}
	}
	last := &s.log[s.ids[events[len(events)-1].ID]]
	return eventstore.AppendResult{
		FirstVersion: s.log[first].Version, LastVersion: last.Version,
		FirstPosition: s.log[first].Position, LastPosition: last.Position,
		Duplicate: true,
	}, true, nil
}

// ReadStream implements [eventstore.Store.ReadStream].
func (s *Store) ReadStream(ctx context.Context, name string, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := eventstore.ValidateStream(name); err != nil {
			yield(recado.Event{}, err)
			return
		}
		if err := o.Validate(); err != nil {
			yield(recado.Event{}, fmt.Errorf("read stream %q: %w", name, err))
			return
		}
		// next is the next version to read; it moves towards the end the read goes.
		var next uint64
		readChunks(ctx, o.Limit, yield, func(started bool, left int, buf []recado.Event) ([]recado.Event, error) {
			return s.streamChunk(name, &next, started, o, left, buf)
		})
	}
}

// readChunks runs a read: it takes chunks of events from chunk (which copies
// them under the lock), detaches them from the store and yields them, until
// a chunk comes back empty, limit events (0: no limit) were yielded, ctx ends
// or the caller stops.
func readChunks(ctx context.Context, limit int, yield func(recado.Event, error) bool,
	chunk func(started bool, left int, buf []recado.Event) ([]recado.Event, error)) {
	left := limit
	buf := make([]recado.Event, 0, min(readChunk, max(limit, 16)))
	for started := false; ; started = true {
		if err := ctx.Err(); err != nil {
			yield(recado.Event{}, err)
			return
		}
		var err error
		if buf, err = chunk(started, left, buf[:0]); err != nil {
			yield(recado.Event{}, err)
			return
		}
		detach(buf)
		if len(buf) == 0 {
			return
		}
		for _, e := range buf {
			if !yield(e, nil) {
				return
			}
		}
		if limit > 0 {
			if left -= len(buf); left == 0 {
				return
			}
		}
	}
}

// streamChunk appends to buf the next events of a stream read, from version
// *next, and moves *next past them. The events share memory with the store
// until [detach]ed. The first call (started false) checks the
// stream and sets *next from the options.
func (s *Store) streamChunk(name string, next *uint64, started bool, o eventstore.ReadOptions, left int, buf []recado.Event) ([]recado.Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("read stream %q: %w", name, eventstore.ErrClosed)
	}
	st := s.streams[name]
	switch {
	case st != nil && st.tombstoned:
		return nil, fmt.Errorf("read stream %q: %w", name, eventstore.ErrStreamDeleted)
	case !started && (st == nil || !st.exists()):
		return nil, fmt.Errorf("read stream %q: %w", name, eventstore.ErrStreamNotFound)
	case st == nil:
		return buf, nil
	}
	if !started {
		*next = o.From
		if o.Backwards && (*next == 0 || *next > st.last()) {
			*next = st.last()
		}
		if !o.Backwards {
			*next = max(*next, st.start+1) // versions up to start were deleted
		}
	}
	n := readChunk
	if o.Limit > 0 {
		n = min(n, left)
	}
	for len(buf) < n && *next > st.start && *next <= st.last() {
		buf = append(buf, s.log[st.index(*next)])
		if o.Backwards {
			*next--
		} else {
			*next++
		}
	}
	return buf, nil
}

// ReadAll implements [eventstore.Store.ReadAll].
func (s *Store) ReadAll(ctx context.Context, after recado.Position, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := o.Validate(); err != nil {
			yield(recado.Event{}, fmt.Errorf("read all: %w", err))
			return
		}
		var next int // the log index of the next event to read, set by the first chunk
		readChunks(ctx, o.Limit, yield, func(started bool, left int, buf []recado.Event) ([]recado.Event, error) {
			return s.logChunk(&next, started, after, o, left, buf)
		})
	}
}

// logChunk appends to buf the next events of a read of the log from index
// *next, and moves *next past them (sharing memory with the store until
// [detach]ed). The first call (started false) finds where the
// read starts: log[i] has position i+1, so forwards the first event after
// (n, m) is log[n]; backwards the last event before (n, 0) is log[n-2], before
// (n, m>0) it is log[n-1], and before the zero position it is the last event.
func (s *Store) logChunk(next *int, started bool, after recado.Position, o eventstore.ReadOptions, left int, buf []recado.Event) ([]recado.Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("read all: %w", eventstore.ErrClosed)
	}
	if !started {
		major, minor := after.Parts()
		switch {
		case !o.Backwards:
			*next = int(min(major, uint64(len(s.log))))
		case after.IsZero():
			*next = len(s.log) - 1
		case minor > 0:
			*next = int(min(major, uint64(len(s.log)))) - 1
		default:
			*next = int(min(major, uint64(len(s.log))+1)) - 2
		}
	}
	n := readChunk
	if o.Limit > 0 {
		n = min(n, left)
	}
	if o.Backwards {
		for ; len(buf) < n && *next >= 0; *next-- {
			buf = append(buf, s.log[*next])
		}
		return buf, nil
	}
	for ; len(buf) < n && *next < len(s.log); *next++ {
		buf = append(buf, s.log[*next])
	}
	return buf, nil
}

// Delete implements [eventstore.Deleter.Delete]: a soft delete.
func (s *Store) Delete(ctx context.Context, name string, opts ...eventstore.AppendOption) error {
	return s.remove(ctx, "delete", name, false, opts)
}

// Tombstone implements [eventstore.Deleter.Tombstone].
func (s *Store) Tombstone(ctx context.Context, name string, opts ...eventstore.AppendOption) error {
	return s.remove(ctx, "tombstone", name, true, opts)
}

func (s *Store) remove(ctx context.Context, op, name string, tombstone bool, opts []eventstore.AppendOption) error {
	o := eventstore.NewAppendOptions(opts...)
	if err := eventstore.ValidateStream(name); err != nil {
		return err
	}
	if o.Tx != nil {
		return fmt.Errorf("%w: %s %q: the memory store has no unit of work (got %T)", eventstore.ErrInvalid, op, name, o.Tx)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("%s %q: %w", op, name, eventstore.ErrClosed)
	}
	st := s.streams[name]
	if st == nil {
		st = &stream{}
	}
	if st.tombstoned {
		return fmt.Errorf("%s %q: %w", op, name, eventstore.ErrStreamDeleted)
	}
	if err := o.Expected.Check(name, st.last(), st.exists()); err != nil {
		return err
	}
	if tombstone {
		st.tombstoned = true
		s.streams[name] = st
		return nil
	}
	if !st.exists() {
		return fmt.Errorf("%s %q: %w", op, name, eventstore.ErrStreamNotFound)
	}
	st.start = st.last()
	return nil
}

// Close closes the store: every later call fails with [eventstore.ErrClosed],
// and subscriptions end with it. Close is safe to call more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.Notify() // wake subscriptions, whose next read reports ErrClosed
	return nil
}

// copyEvent returns e with its own copies of Data and Metadata.Fields, so that
// neither a caller nor a reader shares memory with the store.
func copyEvent(e recado.Event) recado.Event {
	if e.Data != nil {
		e.Data = bytes.Clone(e.Data)
	}
	if e.Metadata.Fields != nil {
		e.Metadata.Fields = maps.Clone(e.Metadata.Fields)
	}
	return e
}

// detach gives a chunk of events read from the store their own copies of Data
// and Metadata.Fields, so that a reader that changes an event cannot change the
// store. The data of the whole chunk is copied into one allocation. Stored
// events are never modified, so this needs no lock.
func detach(events []recado.Event) {
	size := 0
	for i := range events {
		size += len(events[i].Data)
	}
	arena := make([]byte, 0, size)
	for i := range events {
		e := &events[i]
		if e.Data != nil {
			start := len(arena)
			arena = append(arena, e.Data...)
			e.Data = arena[start:len(arena):len(arena)] // appending to it cannot reach the next event's data
		}
		if e.Metadata.Fields != nil {
			e.Metadata.Fields = maps.Clone(e.Metadata.Fields)
		}
	}
}
