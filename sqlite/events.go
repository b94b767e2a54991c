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
	"github.com/recado-dev/recado/eventstore/driver"
)

// eventDriver is the event store kept in a [DB]'s file, as the
// [driver.Driver] under the front that [DB.Events] returns. The front
// validates, copies and reports errors; the driver decides each request with
// [driver.Request.Decide] or DecideDelete inside the writer's transaction,
// stores it in a group commit or in the caller's [Tx], and reads.
type eventDriver struct{ db *DB }

var _ driver.Driver = (*eventDriver)(nil)

// Append implements [driver.Driver]: in the next group commit, or in r.Tx.
func (d *eventDriver) Append(ctx context.Context, r *driver.Request) error {
	if d.db.isClosing() {
		return driver.ErrClosed
	}
	if r.Tx != nil {
		return d.db.appendInTx(ctx, r)
	}
	return d.db.groupAppend(ctx, r)
}

// Delete implements [driver.Driver]: in a transaction of its own (not a group
// commit: deletes are rare), or in r.Tx.
func (d *eventDriver) Delete(ctx context.Context, r *driver.Request) error {
	if d.db.isClosing() {
		return driver.ErrClosed
	}
	del := func(tx *Tx) error {
		return tx.run(func() error {
			return d.db.onWriter(func(w *writeStmts) error { return w.delete(r) })
		})
	}
	var err error
	if r.Tx != nil {
		var tx *Tx
		if tx, err = d.db.ownTx(r.Tx); err == nil {
			if err = ctx.Err(); err == nil {
				err = del(tx)
			}
		}
	} else {
		_, err = d.db.runTx(ctx, del)
	}
	if err != nil {
		r.Reset()
	}
	return err
}

// State implements [driver.Driver]: on a read connection, or in tx.
func (d *eventDriver) State(ctx context.Context, stream string, tx recado.Tx) (driver.State, error) {
	if d.db.isClosing() {
		return driver.State{}, driver.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return driver.State{}, err
	}
	if tx != nil {
		t, err := d.db.ownTx(tx)
		if err != nil {
			return driver.State{}, err
		}
		var st driver.State
		err = t.run(func() error {
			return d.db.onWriter(func(w *writeStmts) (err error) {
				st, err = loadStream(w.stream, stream)
				return err
			})
		})
		return st, err
	}
	rc, err := d.db.reads.get(d.db.closing)
	if err != nil {
		return driver.State{}, err
	}
	st, err := loadStream(rc.stat, stream)
	d.db.reads.put(rc, false)
	return st, err
}

// Committed implements [driver.Driver]: the channel is closed after the next
// commit of events in this process, or after Options.PollInterval, since
// another process may have committed meanwhile.
func (d *eventDriver) Committed() <-chan struct{} { return d.db.signal.Committed() }

// Close implements [driver.Driver]: it closes the DB.
func (d *eventDriver) Close() error { return d.db.Close() }

// pageSize is how many events one query of a read fetches. A read runs one
// query per page, on a connection it holds for that page only, and holds no
// connection (and no read transaction) while the caller handles events.
const pageSize = 512

// ReadAll implements [driver.Driver].
func (d *eventDriver) ReadAll(ctx context.Context, after recado.Position, r driver.Read) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		major, minor := after.Parts()
		var cursor int64 // exclusive bound
		if r.Backwards {
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
		d.db.read(ctx, r.Limit, yield, func(rc *readConn, n int) (*sqlite3.Stmt, error) {
			q := rc.allFwd
			if r.Backwards {
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

// ReadStream implements [driver.Driver]. Each page reads the stream's row and
// its events in one read transaction: a stream tombstoned or deleted since the
// first page (and perhaps written again) ends the read with the error the
// first page would have given, never with part of the stream as if it were
// all of it.
func (d *eventDriver) ReadStream(ctx context.Context, stream string, r driver.Read) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		var (
			first bool  = true
			start int64 // the last version hidden by a soft delete, as the first page saw it
			next  int64 // the first version of the next page (the last, backwards)
		)
		page := func(rc *readConn, n int) (*sqlite3.Stmt, error) {
			if err := rc.beginRead(); err != nil {
				return nil, err
			}
			st, err := loadStream(rc.stat, stream)
			switch {
			case err != nil:
				return nil, err
			case st.Tombstoned && first:
				return nil, driver.ErrStreamDeleted
			case st.Tombstoned:
				return nil, fmt.Errorf("tombstoned while it was read: %w", driver.ErrStreamDeleted)
			case first && !st.Exists():
				return nil, driver.ErrStreamNotFound
			case !first && int64(st.Start) != start:
				return nil, fmt.Errorf("deleted while it was read: %w", driver.ErrStreamNotFound)
			}
			if first {
				first, start = false, int64(st.Start)
				next = max(start+1, int64(min(r.From, math.MaxInt64)))
				if r.Backwards {
					next = int64(st.Version)
					if r.From != 0 && r.From < st.Version {
						next = int64(r.From)
					}
				}
			}
			if r.Backwards {
				q := rc.streamBack
				return q, errors.Join(q.BindText(1, stream), q.BindInt64(2, next), q.BindInt64(3, start), q.BindInt64(4, int64(n)))
			}
			q := rc.streamFwd
			return q, errors.Join(q.BindText(1, stream), q.BindInt64(2, next), q.BindInt64(3, int64(n)))
		}
		advance := func(e *recado.Event) { next = int64(e.Version) + 1 }
		if r.Backwards {
			advance = func(e *recado.Event) { next = int64(e.Version) - 1 }
		}
		d.db.read(ctx, r.Limit, yield, page, advance)
	}
}

// readErr is the error a read reports for err: ctx's if it has ended,
// ErrClosed if the DB is closing, err itself otherwise.
func (db *DB) readErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if db.isClosing() || errors.Is(err, driver.ErrClosed) {
		return driver.ErrClosed
	}
	return err
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
func (db *DB) read(ctx context.Context, limit int, yield func(recado.Event, error) bool,
	query pageQuery, advance func(*recado.Event)) {
	if db.isClosing() {
		yield(recado.Event{}, driver.ErrClosed)
		return
	}
	f := &fetcher{db: db, query: query, advance: advance, limit: limit, left: limit}
	if err := ctx.Err(); err != nil {
		yield(recado.Event{}, err)
		return
	}
	page := db.getPage()
	defer db.putPage(page)
	more := f.fetch(page)
	if !deliver(ctx, page, yield) || !more {
		return
	}
	pages := make(chan *rawPage, 1)
	free := make(chan *rawPage, 2) // both pages fit: handing one back never blocks
	stop := make(chan struct{})
	second := db.getPage()
	defer db.putPage(second) // after the reader has stopped (deferred below)
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
			yield(recado.Event{}, fmt.Errorf("event %s at position %d (version %d of %q): metadata: %w",
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
	db     *DB
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
	p.events, p.buf, p.ends, p.err, p.db = p.events[:0], p.buf[:0], p.ends[:0], nil, nil
	if cap(p.buf) > 4<<20 {
		p.buf = nil // an odd page of huge events is not kept
	}
	db.pages.Put(p)
}

func (p *rawPage) readErr(ctx context.Context) error { return p.db.readErr(ctx, p.err) }

// fetcher reads the pages of one read, keeping its position (advance) and
// what is left of its limit. One goroutine at a time uses it.
type fetcher struct {
	db          *DB
	query       pageQuery
	advance     func(*recado.Event)
	limit, left int
	strs        pageStrings
}

// fetch fills p with the next page and reports whether another may follow.
func (f *fetcher) fetch(p *rawPage) bool {
	clear(p.events)
	p.events, p.buf, p.ends, p.err, p.db = p.events[:0], p.buf[:0], p.ends[:0], nil, f.db
	n := pageSize
	if f.limit > 0 {
		n = min(n, f.left)
	}
	if p.err = f.db.readPage(f.query, n, p, &f.strs); p.err != nil {
		return false
	}
	if len(p.events) < n {
		return false
	}
	f.advance(&p.events[len(p.events)-1])
	f.left -= len(p.events)
	return f.limit == 0 || f.left > 0
}

// pageQuery returns the statement that reads the next page of at most n
// events on rc, bound. It may begin a read transaction on rc
// (readConn.beginRead) to read more than one statement in it; readPage ends
// it.
type pageQuery func(rc *readConn, n int) (*sqlite3.Stmt, error)

// readPage runs one page's query on a pooled connection and reads its rows
// into p. Stream and type names, which repeat from row to row, are shared
// (strs); the rest of a row is copied into p.buf. The statement is reset
// before the connection goes back, which ends its read transaction.
func (db *DB) readPage(query pageQuery, n int, p *rawPage, strs *pageStrings) error {
	if db.isClosing() {
		return driver.ErrClosed
	}
	rc, err := db.reads.get(db.closing)
	if err != nil {
		return err
	}
	q, err := query(rc, n)
	if err == nil {
		err = readRows(q, p, strs)
	}
	var endErr error
	if q != nil {
		endErr = q.Reset()
	}
	broken := endErr != nil && err == nil
	if rc.inTx {
		rc.inTx = false
		if cerr := rc.commit.Exec(); cerr != nil {
			broken = true
			if err == nil {
				err = cerr
			}
		}
	}
	db.reads.put(rc, broken)
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

// Event times are stored in UTC as Unix microseconds, which hold every time
// from driver.MinTime to driver.MaxTime exactly.
func unixMicro(us int64) time.Time { return time.UnixMicro(us).UTC() }
