package memory

import (
	"context"
	"iter"
	"maps"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// readChunk is how many events a read copies under one hold of the lock.
const readChunk = 256

// events is the event store's driver: a global log in a slice, and an index of
// streams and event IDs. db.mu guards it.
//
// A unit of work appends to the log and changes streams in place; readers
// outside it see only what has committed: the first committed events of the
// log, and each stream's committed state. Rolling back truncates the log to
// where the unit found it, so positions never have gaps.
type events struct {
	db        *DB
	log       []recado.Event     // log[i] has position i+1; never modified, only truncated past committed
	committed int                // log[:committed] has committed
	streams   map[string]*stream // by name
	ids       map[string]int     // event ID → index in log, committed or not
}

// stream is what the store knows of one stream.
type stream struct {
	// versions are the indexes in the log of the stream's events: versions[v-1]
	// is version v, including versions hidden by a soft delete.
	versions []int
	// now is the stream's state with the writes of the unit of work in
	// progress, committed its state without them: readers outside the unit see
	// versions up to committed.Version only.
	now, committed driver.State
}

func newEvents(db *DB) *events {
	return &events{db: db, streams: make(map[string]*stream), ids: make(map[string]int)}
}

var _ driver.Driver = (*events)(nil)

// Append implements [driver.Driver.Append].
func (e *events) Append(ctx context.Context, r *driver.Request) error {
	return e.db.write(ctx, r.Tx, func(tx *Tx) error {
		e.append(tx, r)
		return nil
	})
}

// append decides r on the state the unit of work tx sees and, if the events
// are to be written, stores them in tx.
func (e *events) append(tx *Tx, r *driver.Request) {
	var stored []driver.Stored
	for i := range r.Events {
		if k, ok := e.ids[r.Events[i].ID]; ok {
			was := &e.log[k]
			stored = append(stored, driver.Stored{ID: was.ID, Stream: was.Stream, Version: was.Version,
				Position: was.Position, Type: was.Type, Data: was.Data})
		}
	}
	st, created := e.stream(r.Stream)
	if !r.Decide(st.now, stored) {
		e.dropUnused(r.Stream, st, created)
		return
	}
	mark, before := len(e.log), st.now
	for i := range r.Events {
		ev := &r.Events[i]
		ev.Stream = r.Stream
		ev.Version = r.FirstVersion + uint64(i)
		ev.Position = recado.NewPosition(uint64(len(e.log))+1, 0)
		e.ids[ev.ID] = len(e.log)
		st.versions = append(st.versions, len(e.log))
		e.log = append(e.log, *ev)
	}
	st.now.Version = r.LastVersion
	r.FirstPosition, r.LastPosition = r.Events[0].Position, r.Events[len(r.Events)-1].Position
	tx.onRollback(func() {
		for _, ev := range e.log[mark:] { // later appends of the unit are undone already
			delete(e.ids, ev.ID)
		}
		clear(e.log[mark:])
		e.log = e.log[:mark]
		st.versions = st.versions[:before.Version]
		st.now = before
		e.dropUnused(r.Stream, st, created)
	})
	tx.onPublish(func() {
		e.committed = len(e.log)
		st.committed = st.now
	})
}

// stream returns the stream called name, created (and reported so) if the
// store has none.
func (e *events) stream(name string) (st *stream, created bool) {
	if st = e.streams[name]; st != nil {
		return st, false
	}
	st = &stream{}
	e.streams[name] = st
	return st, true
}

// dropUnused removes a stream that was created for nothing.
func (e *events) dropUnused(name string, st *stream, created bool) {
	if created && st.now == (driver.State{}) {
		delete(e.streams, name)
	}
}

// Delete implements [driver.Driver.Delete].
func (e *events) Delete(ctx context.Context, r *driver.Request) error {
	return e.db.write(ctx, r.Tx, func(tx *Tx) error {
		st, created := e.stream(r.Stream)
		if !r.DecideDelete(st.now) {
			e.dropUnused(r.Stream, st, created)
			return nil
		}
		before := st.now
		if r.Tombstone {
			st.now.Tombstoned = true
		} else {
			st.now.Start = st.now.Version
		}
		tx.onRollback(func() {
			st.now = before
			e.dropUnused(r.Stream, st, created)
		})
		tx.onPublish(func() { st.committed = st.now })
		return nil
	})
}

// State implements [driver.Driver.State]: the committed state, or inside the
// unit of work tx, the state with its writes.
func (e *events) State(ctx context.Context, name string, rtx recado.Tx) (driver.State, error) {
	if err := ctx.Err(); err != nil {
		return driver.State{}, err
	}
	var tx *Tx
	if rtx != nil {
		var err error
		if tx, err = e.db.own(rtx); err != nil {
			return driver.State{}, err
		}
	}
	e.db.mu.RLock()
	defer e.db.mu.RUnlock()
	if tx != nil {
		if err := e.db.live(tx); err != nil {
			return driver.State{}, err
		}
	} else if e.db.closed {
		return driver.State{}, driver.ErrClosed
	}
	st := e.streams[name]
	switch {
	case st == nil:
		return driver.State{}, nil
	case tx != nil:
		return st.now, nil
	}
	return st.committed, nil
}

// ReadStream implements [driver.Driver.ReadStream]. It reads what has
// committed.
func (e *events) ReadStream(ctx context.Context, name string, r driver.Read) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		var next uint64 // the next version to read; it moves towards the end the read goes
		readChunks(ctx, r.Limit, yield, func(started bool, left int, buf []recado.Event) ([]recado.Event, error) {
			return e.streamChunk(name, &next, started, r, left, buf)
		})
	}
}

// readChunks runs a read: it takes chunks of events from chunk (which copies
// them under the lock), detaches them from the store and yields them, until a
// chunk comes back empty, limit events (0: no limit) were yielded, ctx ends or
// the caller stops.
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
		for _, ev := range buf {
			if !yield(ev, nil) {
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

// streamChunk appends to buf the next committed events of a stream read, from
// version *next, and moves *next past them. The events share memory with the
// store until [detach]ed. The first call (started false) checks the stream
// and sets *next from r.
func (e *events) streamChunk(name string, next *uint64, started bool, r driver.Read, left int, buf []recado.Event) ([]recado.Event, error) {
	e.db.mu.RLock()
	defer e.db.mu.RUnlock()
	if e.db.closed {
		return nil, driver.ErrClosed
	}
	var st driver.State
	s := e.streams[name]
	if s != nil {
		st = s.committed
	}
	switch {
	case st.Tombstoned:
		return nil, driver.ErrStreamDeleted
	case !started && !st.Exists():
		return nil, driver.ErrStreamNotFound
	}
	if !started {
		*next = r.From
		if r.Backwards && (*next == 0 || *next > st.Version) {
			*next = st.Version
		}
		if !r.Backwards {
			*next = max(*next, st.Start+1) // versions up to Start were deleted
		}
	}
	n := readChunk
	if r.Limit > 0 {
		n = min(n, left)
	}
	for len(buf) < n && *next > st.Start && *next <= st.Version {
		buf = append(buf, e.log[s.versions[*next-1]])
		if r.Backwards {
			*next--
		} else {
			*next++
		}
	}
	return buf, nil
}

// ReadAll implements [driver.Driver.ReadAll]. It reads what has committed.
func (e *events) ReadAll(ctx context.Context, after recado.Position, r driver.Read) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		var next int // the log index of the next event to read, set by the first chunk
		readChunks(ctx, r.Limit, yield, func(started bool, left int, buf []recado.Event) ([]recado.Event, error) {
			return e.logChunk(&next, started, after, r, left, buf)
		})
	}
}

// logChunk appends to buf the next committed events of a read of the log from
// index *next, and moves *next past them (sharing memory with the store until
// [detach]ed). The first call (started false) finds where the read starts:
// log[i] has position i+1, so forwards the first event after (n, m) is log[n];
// backwards the last event before (n, 0) is log[n-2], before (n, m>0) it is
// log[n-1], and before the zero position it is the last committed event.
func (e *events) logChunk(next *int, started bool, after recado.Position, r driver.Read, left int, buf []recado.Event) ([]recado.Event, error) {
	e.db.mu.RLock()
	defer e.db.mu.RUnlock()
	if e.db.closed {
		return nil, driver.ErrClosed
	}
	end := e.committed
	if !started {
		major, minor := after.Parts()
		switch {
		case !r.Backwards:
			*next = int(min(major, uint64(end)))
		case after.IsZero():
			*next = end - 1
		case minor > 0:
			*next = int(min(major, uint64(end))) - 1
		default:
			*next = int(min(major, uint64(end)+1)) - 2
		}
	}
	n := readChunk
	if r.Limit > 0 {
		n = min(n, left)
	}
	if r.Backwards {
		for ; len(buf) < n && *next >= 0; *next-- {
			buf = append(buf, e.log[*next])
		}
		return buf, nil
	}
	for ; len(buf) < n && *next < end; *next++ {
		buf = append(buf, e.log[*next])
	}
	return buf, nil
}

// Committed implements [driver.Driver.Committed]: the channel is closed after
// the next commit of the DB that changed something (of any of its stores), and
// when the DB closes.
func (e *events) Committed() <-chan struct{} { return e.db.sig.Committed() }

// Close implements [driver.Driver.Close]: it closes the DB.
func (e *events) Close() error { return e.db.Close() }

// detach gives a chunk of events read from the store their own copies of Data
// and Metadata.Fields, so that a reader that changes an event cannot change the
// store. The data of the whole chunk is copied into one allocation. Stored
// events are never modified, so this needs no lock.
func detach(chunk []recado.Event) {
	size := 0
	for i := range chunk {
		size += len(chunk[i].Data)
	}
	arena := make([]byte, 0, size)
	for i := range chunk {
		ev := &chunk[i]
		if ev.Data != nil {
			start := len(arena)
			arena = append(arena, ev.Data...)
			ev.Data = arena[start:len(arena):len(arena)] // appending to it cannot reach the next event's data
		}
		if ev.Metadata.Fields != nil {
			ev.Metadata.Fields = maps.Clone(ev.Metadata.Fields)
		}
	}
}
