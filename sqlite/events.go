package sqlite

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// EventStore is the event store kept in a [DB]'s file. It implements
// [eventstore.Store], [eventstore.Notifier], [eventstore.Subscriber] and
// [eventstore.Deleter].
type EventStore struct {
	db *DB
}

var (
	_ eventstore.Store      = (*EventStore)(nil)
	_ eventstore.Notifier   = (*EventStore)(nil)
	_ eventstore.Subscriber = (*EventStore)(nil)
	_ eventstore.Deleter    = (*EventStore)(nil)
)

// Append implements [eventstore.Store]. Without [eventstore.InTx] the append
// joins the next group commit; with it, it joins the caller's [Tx].
func (s *EventStore) Append(ctx context.Context, stream string, events []recado.Event, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	o := eventstore.NewAppendOptions(opts...)
	if s.db.isClosing() {
		return eventstore.AppendResult{}, s.db.closedErr()
	}
	if err := eventstore.ValidateAppend(stream, events, o); err != nil {
		return eventstore.AppendResult{}, err
	}
	for i := range events {
		if t := events[i].Time; !t.IsZero() && (t.UTC().Year() < minYear || t.UTC().Year() > maxYear) {
			return eventstore.AppendResult{}, fmt.Errorf("%w: append to %q: event %d (%s): time %v is outside the years %d to %d (UTC)",
				eventstore.ErrInvalid, stream, i, events[i].ID, t, minYear, maxYear)
		}
	}
	if o.Tx != nil {
		return s.db.appendInTx(ctx, o.Tx, stream, events, o.Expected)
	}
	return s.db.groupAppend(ctx, stream, events, o.Expected)
}

// Committed implements [eventstore.Notifier]: the channel is closed after the
// next commit of events in this process.
func (s *EventStore) Committed() <-chan struct{} { return s.db.signal.Committed() }

// Subscribe implements [eventstore.Subscriber] with [eventstore.Poll], idle
// subscriptions reading the log again every Options.PollInterval (unless the
// call sets its own) so that events written by other processes arrive too.
func (s *EventStore) Subscribe(ctx context.Context, after recado.Position, opts ...eventstore.SubscribeOption) iter.Seq2[eventstore.Message, error] {
	opts = append([]eventstore.SubscribeOption{eventstore.WithPollInterval(s.db.opts.PollInterval)}, opts...)
	return eventstore.Poll(ctx, s, after, opts...)
}

// Delete implements [eventstore.Deleter] (soft delete).
func (s *EventStore) Delete(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return s.deleteStream(ctx, stream, false, opts)
}

// Tombstone implements [eventstore.Deleter] (permanent delete).
func (s *EventStore) Tombstone(ctx context.Context, stream string, opts ...eventstore.AppendOption) error {
	return s.deleteStream(ctx, stream, true, opts)
}

func (s *EventStore) deleteStream(ctx context.Context, stream string, tombstone bool, opts []eventstore.AppendOption) error {
	o := eventstore.NewAppendOptions(opts...)
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	if o.Tx != nil {
		tx, ok := o.Tx.(*Tx)
		switch {
		case !ok || tx == nil || tx.db != s.db:
			return fmt.Errorf("%w: delete %q: unit of work %T is not a *sqlite.Tx of this DB", eventstore.ErrInvalid, stream, o.Tx)
		case tx.done:
			return fmt.Errorf("%w: delete %q: %w", eventstore.ErrInvalid, stream, ErrTxDone)
		}
		return tx.run(func() error { return s.db.deleteIn(ctx, stream, tombstone, o.Expected) })
	}
	return s.db.tx(ctx, func(tx *Tx) error {
		return tx.run(func() error { return s.db.deleteIn(ctx, stream, tombstone, o.Expected) })
	})
}

// deleteIn deletes stream inside the open write transaction.
func (db *DB) deleteIn(ctx context.Context, stream string, tombstone bool, expected eventstore.ExpectedVersion) error {
	var st streamState
	err := db.onWriter(func(w *writeStmts) (err error) {
		st, err = loadStream(w.stream, stream)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: delete %q: %w", stream, err)
	}
	switch {
	case st.tombstoned:
		return fmt.Errorf("sqlite: delete %q: %w", stream, eventstore.ErrStreamDeleted)
	case !tombstone && !st.exists():
		return fmt.Errorf("sqlite: delete %q: %w", stream, eventstore.ErrStreamNotFound)
	}
	if err := expected.Check(stream, st.version, st.exists()); err != nil {
		return err
	}
	q := "UPDATE recado_streams SET deleted_through = version WHERE name = ?"
	if tombstone {
		q = `INSERT INTO recado_streams (name, version, tombstoned) VALUES (?, 0, 1)
ON CONFLICT (name) DO UPDATE SET tombstoned = 1`
	}
	if _, err := db.conn.ExecContext(ctx, q, stream); err != nil {
		return fmt.Errorf("sqlite: delete %q: %w", stream, err)
	}
	return nil
}

// pageSize is how many events one query of a read fetches. A read runs one
// query per page, on a connection it holds for that page only, and holds no
// connection (and no read transaction) while the caller handles events.
const pageSize = 512

// ReadAll implements [eventstore.Store].
func (s *EventStore) ReadAll(ctx context.Context, after recado.Position, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := s.readCheck(ctx, o); err != nil {
			yield(recado.Event{}, err)
			return
		}
		major, minor := after.Parts()
		var cursor int64 // exclusive bound
		if o.Backwards {
			cursor = math.MaxInt64
			if !after.IsZero() {
				cursor = clampPos(major)
				if minor > 0 && cursor < math.MaxInt64 {
					cursor++ // (major, minor) comes after the event at major
				}
			}
		} else {
			cursor = clampPos(major)
		}
		s.read(ctx, o.Limit, yield, func(rc *readConn, n int) (*sqlite3.Stmt, error) {
			q := rc.allFwd
			if o.Backwards {
				q = rc.allBack
			}
			return q, errors.Join(q.BindInt64(1, cursor), q.BindInt64(2, int64(n)))
		}, func(e *recado.Event) {
			p, _ := e.Position.Parts()
			cursor = int64(p)
		})
	}
}

func clampPos(p uint64) int64 {
	if p > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(p)
}

// ReadStream implements [eventstore.Store].
func (s *EventStore) ReadStream(ctx context.Context, stream string, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	o := eventstore.NewReadOptions(opts...)
	return func(yield func(recado.Event, error) bool) {
		if err := s.readCheck(ctx, o); err != nil {
			yield(recado.Event{}, err)
			return
		}
		if err := eventstore.ValidateStream(stream); err != nil {
			yield(recado.Event{}, err)
			return
		}
		st, err := s.streamState(stream)
		switch {
		case err != nil:
			yield(recado.Event{}, s.readErr(ctx, err))
			return
		case st.tombstoned:
			yield(recado.Event{}, fmt.Errorf("sqlite: read %q: %w", stream, eventstore.ErrStreamDeleted))
			return
		case !st.exists():
			yield(recado.Event{}, fmt.Errorf("sqlite: read %q: %w", stream, eventstore.ErrStreamNotFound))
			return
		}
		floor := int64(st.deletedThrough) // versions up to floor are deleted
		if o.Backwards {
			next := int64(st.version) // inclusive
			if o.From != 0 && o.From < st.version {
				next = int64(o.From)
			}
			s.read(ctx, o.Limit, yield, func(rc *readConn, n int) (*sqlite3.Stmt, error) {
				q := rc.streamBack
				return q, errors.Join(q.BindText(1, stream), q.BindInt64(2, next), q.BindInt64(3, floor), q.BindInt64(4, int64(n)))
			}, func(e *recado.Event) { next = int64(e.Version) - 1 })
			return
		}
		next := max(floor+1, int64(min(o.From, math.MaxInt64)))
		s.read(ctx, o.Limit, yield, func(rc *readConn, n int) (*sqlite3.Stmt, error) {
			q := rc.streamFwd
			return q, errors.Join(q.BindText(1, stream), q.BindInt64(2, next), q.BindInt64(3, int64(n)))
		}, func(e *recado.Event) { next = int64(e.Version) + 1 })
	}
}

// streamState reads a stream's row on a read connection.
func (s *EventStore) streamState(stream string) (streamState, error) {
	rc, err := s.db.reads.get(s.db.closing, s.db.closedErr)
	if err != nil {
		return streamState{}, err
	}
	st, err := loadStream(rc.stat, stream)
	s.db.reads.put(rc, false)
	return st, err
}

func (s *EventStore) readCheck(ctx context.Context, o eventstore.ReadOptions) error {
	if s.db.isClosing() {
		return s.db.closedErr()
	}
	if err := o.Validate(); err != nil {
		return err
	}
	return ctx.Err()
}

func (s *EventStore) readErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s.db.isClosing() || errors.Is(err, eventstore.ErrClosed) {
		return s.db.closedErr()
	}
	return fmt.Errorf("sqlite: read %s: %w", s.db.path, err)
}

// read runs query page by page until limit events (0: all) were yielded or a
// page comes back short, calling advance with each page's last event. ctx is
// checked between pages, not during one: a page is short, and watching a
// context on every row costs a large share of the read rate.
//
// The first page is read on the caller's goroutine. If there is more, a
// second goroutine reads the following pages, one ahead, while the caller
// decodes the metadata of the current one and handles its events: on two
// cores the SQLite side of a long read and the Go side overlap. Each page
// holds its connection only while its rows are stepped through, and the
// reading goroutine has stopped by the time read returns.
func (s *EventStore) read(ctx context.Context, limit int, yield func(recado.Event, error) bool,
	query func(rc *readConn, n int) (*sqlite3.Stmt, error), advance func(*recado.Event)) {
	f := &fetcher{s: s, query: query, advance: advance, limit: limit, left: limit}
	if err := ctx.Err(); err != nil {
		yield(recado.Event{}, err)
		return
	}
	page := s.db.getPage()
	defer s.db.putPage(page)
	more := f.fetch(page)
	if !deliver(ctx, page, yield) || !more {
		return
	}
	pages := make(chan *rawPage, 1)
	free := make(chan *rawPage, 2) // both pages fit: handing one back never blocks
	stop := make(chan struct{})
	second := s.db.getPage()
	defer s.db.putPage(second) // after the reader has stopped (deferred below)
	free <- second
	var cancelled error // set by the reader before it closes pages
	go func() {         // reads the next pages while the caller handles this one
		defer close(pages)
		for {
			var p *rawPage
			select {
			case p = <-free:
			case <-stop:
				return
			}
			if cancelled = ctx.Err(); cancelled != nil {
				return // the caller yields it after the pages it has
			}
			more := f.fetch(p)
			select {
			case pages <- p:
			case <-stop:
				return
			}
			if !more {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		for range pages { // wait for the reader to stop
		}
	}()
	free <- page
	for p := range pages {
		if !deliver(ctx, p, yield) {
			return
		}
		free <- p
	}
	if cancelled != nil {
		yield(recado.Event{}, cancelled)
	}
}

// deliver decodes the page's metadata and yields its events, or its error. It
// reports whether the caller wants more and the page had no error.
func deliver(ctx context.Context, p *rawPage, yield func(recado.Event, error) bool) bool {
	if err := ctx.Err(); err != nil {
		yield(recado.Event{}, err)
		return false
	}
	if p.err != nil {
		yield(recado.Event{}, p.readErr(ctx))
		return false
	}
	start := 0
	for i := range p.events {
		e := &p.events[i]
		ends := p.ends[i]
		e.ID = string(p.buf[start:ends.id])
		if ends.data > ends.id {
			e.Data = append([]byte(nil), p.buf[ends.id:ends.data]...)
		}
		var err error
		if e.Metadata, err = recado.ParseMetadata(p.buf[ends.data:ends.meta]); err != nil {
			pos, _ := e.Position.Parts()
			yield(recado.Event{}, fmt.Errorf("sqlite: read event %s at position %d (version %d of %q): metadata: %w",
				e.ID, pos, e.Version, e.Stream, err))
			return false
		}
		start = ends.meta
		if !yield(*e, nil) {
			return false
		}
	}
	return true
}

// rawPage is one page of a read as the reading side leaves it: its events
// without ID, Data and Metadata, whose bytes are copied from SQLite into one
// reused buffer, for the caller's goroutine to turn into fresh values
// (deliver). The reading side thus allocates nothing per row, and the work of
// a long read is split about evenly between the two goroutines.
type rawPage struct {
	events []recado.Event
	buf    []byte    // each row's ID, Data and metadata, one row after the other
	ends   []rowEnds // where each row's parts end in buf
	err    error
	s      *EventStore
}

// rowEnds are the offsets in rawPage.buf where a row's ID, Data and metadata
// end; each starts where the one before ends (the ID where the previous row's
// metadata ends).
type rowEnds struct{ id, data, meta int }

// getPage returns a page buffer from the DB's pool: reads reuse them rather
// than allocate two pages of events per read.
func (db *DB) getPage() *rawPage {
	if p, ok := db.pages.Get().(*rawPage); ok {
		return p
	}
	return &rawPage{events: make([]recado.Event, 0, pageSize), ends: make([]rowEnds, 0, pageSize)}
}

// putPage gives a page buffer back, holding nothing of the events it held.
func (db *DB) putPage(p *rawPage) {
	clear(p.events)
	p.events, p.buf, p.ends, p.err, p.s = p.events[:0], p.buf[:0], p.ends[:0], nil, nil
	if cap(p.buf) > 4<<20 {
		p.buf = nil // an odd page of huge events is not kept
	}
	db.pages.Put(p)
}

func (p *rawPage) readErr(ctx context.Context) error { return p.s.readErr(ctx, p.err) }

// fetcher reads the pages of one read, keeping its position (advance) and
// what is left of its limit. One goroutine at a time uses it.
type fetcher struct {
	s           *EventStore
	query       func(rc *readConn, n int) (*sqlite3.Stmt, error)
	advance     func(*recado.Event)
	limit, left int
	strs        pageStrings
}

// fetch fills p with the next page and reports whether another may follow.
func (f *fetcher) fetch(p *rawPage) bool {
	clear(p.events)
	p.events, p.buf, p.ends, p.err, p.s = p.events[:0], p.buf[:0], p.ends[:0], nil, f.s
	n := pageSize
	if f.limit > 0 {
		n = min(n, f.left)
	}
	if p.err = f.s.readPage(f.query, n, p, &f.strs); p.err != nil {
		return false
	}
	if len(p.events) < n {
		return false
	}
	f.advance(&p.events[len(p.events)-1])
	f.left -= len(p.events)
	return f.limit == 0 || f.left > 0
}

// readPage runs one page's query on a pooled connection and reads its rows
// into p. Stream and type names, which repeat from row to row, are shared
// (strs); the rest of a row is copied into p.buf. The statement is reset
// before the connection goes back, which ends its read transaction.
func (s *EventStore) readPage(query func(rc *readConn, n int) (*sqlite3.Stmt, error), n int,
	p *rawPage, strs *pageStrings) error {
	if s.db.isClosing() {
		return s.db.closedErr()
	}
	rc, err := s.db.reads.get(s.db.closing, s.db.closedErr)
	if err != nil {
		return err
	}
	q, err := query(rc, n)
	if err == nil {
		err = readRows(q, p, strs)
	}
	resetErr := q.Reset()
	s.db.reads.put(rc, resetErr != nil && err == nil)
	return err
}

// readRows steps q to its end, appending one event per row to p.
func readRows(q *sqlite3.Stmt, p *rawPage, strs *pageStrings) error {
	for q.Step() {
		p.events = append(p.events, recado.Event{
			Position: recado.NewPosition(uint64(q.ColumnInt64(0)), 0),
			Stream:   strs.streams.get(q.ColumnRawText(2)),
			Version:  uint64(q.ColumnInt64(3)),
			Type:     strs.types.get(q.ColumnRawText(4)),
			Time:     unixMicro(q.ColumnInt64(7)),
		})
		var ends rowEnds
		p.buf = append(p.buf, q.ColumnRawText(1)...)
		ends.id = len(p.buf)
		p.buf = append(p.buf, q.ColumnRawBlob(5)...)
		ends.data = len(p.buf)
		p.buf = append(p.buf, q.ColumnRawBlob(6)...)
		ends.meta = len(p.buf)
		p.ends = append(p.ends, ends)
	}
	return q.Err()
}

// pageStrings shares the stream and type names of one read's events.
type pageStrings struct{ streams, types interner }

// interner returns one string per distinct value: the last one seen, or one
// of the first few hundred others, costs no allocation.
type interner struct {
	last string
	seen map[string]string
}

const internMax = 512

func (in *interner) get(b []byte) string {
	if string(b) == in.last {
		return in.last
	}
	if s, ok := in.seen[string(b)]; ok {
		in.last = s
		return s
	}
	s := string(b)
	if in.seen == nil {
		in.seen = make(map[string]string, 8)
	}
	if len(in.seen) < internMax {
		in.seen[s] = s
	}
	in.last = s
	return s
}

// Event times are stored in UTC as Unix microseconds, for the years minYear to
// maxYear.
const minYear, maxYear = 1, 9999

func unixMicro(us int64) time.Time { return time.UnixMicro(us).UTC() }
