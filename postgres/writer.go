package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// An appendReq is one Append on its way through the writer (or through a
// unit of work: then only r is set).
type appendReq struct {
	r        *driver.Request // &own in a group commit; the caller's in a unit of work
	own      driver.Request  // the writer's copy of the caller's request
	state    atomic.Int32    // reqQueued, then reqTaken by the writer or reqAbandoned by the caller
	done     chan error      // nil: r is decided and, if Written, committed
	inFlight bool            // a commit that would have written it was sent, and its outcome is unknown (writer only)
	size     int             // its bytes on the wire, at most (writer only; see measure)
}

const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// writer commits the appends of one DB in groups: while one transaction
// commits, the appends arriving queue up, and the next transaction takes them
// all. Several loops (Options.Writers) take groups from one queue, so that one
// group's round trips and WAL flush overlap the next group's. Appends to a
// stream whose row another transaction holds wait in the park lane, so they
// hold up neither their group nor the writers.
type writer struct {
	e     *eventDriver
	reqs  chan *appendReq // unbuffered: a sent request is the writer's
	stop  chan struct{}
	park  parkLane
	cache rowCache // the predictions of fastCommit
}

// A group commit is tried again after a lost connection up to
// maxCommitAttempts times in all, and after contention with other writers (a
// stream changed meanwhile, a deadlock, an ID stored meanwhile) up to
// maxContendedAttempts: each retry locks the stream rows, so contention ends.
const (
	maxCommitAttempts    = 3
	maxContendedAttempts = 10
)

// groupLockWait is the lock_timeout of a group commit: how long it waits for a
// stream row (or an event ID) another transaction holds before it sets the
// appends that wait aside in the park lane and commits the others. Other
// group commits hold rows for a commit's time; units of work, for as long as
// they run.
const groupLockWait = 200 * time.Millisecond

// maxMessageBytes is the largest message PostgreSQL accepts (and pgx sends):
// an append whose rows cannot fit in one is refused.
const maxMessageBytes = 1<<30 - 2

func (w *writer) close() { close(w.stop) }

// loop is one writer connection's group commit loop.
func (w *writer) loop() {
	var (
		batch []*appendReq
		buf   batchBuf
		last  int        // appends in the last commit
		carry *appendReq // taken from the queue, but over the last group's bounds
	)
	opts := &w.e.db.opts
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-w.reqs:
			case <-w.stop:
				return
			}
		}
		batch = append(batch[:0], first)
		n, size := len(first.r.Events), measure(first)
		// Take every append waiting, up to MaxBatch events and MaxBatchBytes.
		// Appenders whose previous append the last commit just answered may
		// be a scheduling slice away: give them up to two chances to arrive,
		// or the next commit would carry a few and the one after it the rest.
		for idle := 0; idle < 2 && carry == nil; {
			select {
			case r := <-w.reqs:
				if n+len(r.r.Events) > opts.MaxBatch || size+measure(r) > opts.MaxBatchBytes {
					select {
					case w.reqs <- r: // to a writer that is waiting
					default:
						carry = r // the first of the next group
					}
					continue
				}
				batch = append(batch, r)
				n, size = n+len(r.r.Events), size+r.size
				idle = 0
			default:
				if len(batch) >= last {
					idle = 2
					break
				}
				runtime.Gosched()
				idle++
			}
		}
		last = len(batch)
		live := batch[:0]
		for _, r := range batch {
			if r.state.CompareAndSwap(reqQueued, reqTaken) && !w.refuse(r) && !w.park.divert(r) {
				live = append(live, r)
			}
		}
		if len(live) > 0 {
			w.commit(live, &buf)
		}
		clear(batch)
	}
}

// measure returns (and keeps) an upper bound of r's bytes in the messages of
// a commit: its events' data, IDs, types, stream, metadata (as JSON, each
// character escaped at most six-fold) and their framing.
func measure(r *appendReq) int {
	if r.size > 0 {
		return r.size
	}
	n := 0
	for i := range r.r.Events {
		e := &r.r.Events[i]
		m := &e.Metadata
		meta := len(m.CorrelationID) + len(m.CausationID) + len(m.IdempotencyKey) + len(m.TraceParent) + len(m.TraceState)
		for k, v := range m.Fields {
			meta += len(k) + len(v) + 6
		}
		n += len(e.Data) + len(e.ID) + len(e.Type) + len(r.r.Stream) + 6*meta + 200
	}
	r.size = n
	return n
}

// refuse answers an append too large for any commit, and reports whether it
// did.
func (w *writer) refuse(r *appendReq) bool {
	if r.size <= maxMessageBytes-1<<20 {
		return false
	}
	r.done <- fmt.Errorf("%w: its %d events take up to %d bytes, more than one PostgreSQL message can carry (1 GiB)",
		driver.ErrInvalid, len(r.r.Events), r.size)
	return true
}

// commit writes reqs in one transaction and answers each append. Failures a
// new attempt can cure are retried (see attempts). When the group waited too
// long for a stream row another transaction holds, the appends to that
// stream are parked and the others committed. When PostgreSQL refused a value
// of one append (a NUL byte in text, a time out of range, an index row too
// big), the group is split until each such append fails on its own and the
// others commit.
func (w *writer) commit(reqs []*appendReq, buf *batchBuf) {
	err := w.attempts(reqs, buf)
	switch {
	case err == nil:
	case w.e.db.closed.Load():
		w.fail(reqs, err)
	case lockTimedOut(err):
		w.isolateLocked(reqs, buf, err)
	case len(reqs) > 1 && isolable(err):
		w.split(reqs, buf)
	default:
		w.fail(reqs, err)
	}
}

// split commits the two halves of reqs one after the other.
func (w *writer) split(reqs []*appendReq, buf *batchBuf) {
	h := len(reqs) / 2
	w.commit(reqs[:h], buf)
	w.commit(reqs[h:], buf)
}

// attempts writes reqs in one transaction, retrying a transaction that failed
// for a reason a new attempt can cure (a dropped connection, a deadlock, an
// event ID stored meanwhile by another process), and answers every append
// when one succeeds. A retry of a commit whose outcome is unknown is safe:
// the appends it stored are recognised by ID. It returns the last attempt's
// error, the appends unanswered.
func (w *writer) attempts(reqs []*appendReq, buf *batchBuf) error {
	lost := 0 // attempts that failed for a lost connection
	predicted, fast := w.predict(reqs, buf)
	fast = fast && !w.e.hooks.serialize
	for attempt := 1; ; attempt++ {
		var sent bool
		var err error
		answered := false
		if fast {
			sent, err = w.e.fastCommit(w.e.db.ctx, reqs, predicted, buf, func() { answered = true; w.answer(reqs) })
			if h := w.e.hooks.fast; h != nil && err != nil {
				h(false)
			}
		} else {
			sent, err = w.e.execute(w.e.db.ctx, nil, reqs, buf, attempt > 1)
		}
		if err == nil {
			if !answered {
				w.answer(reqs)
			}
			return nil
		}
		if sent {
			// Only the appends the lost commit would have written are in
			// flight: one it found already stored stays a duplicate.
			for _, r := range reqs {
				if r.r.Outcome == driver.Written {
					r.inFlight = true
				}
			}
		}
		if errors.Is(err, errNeedIDs) {
			continue // at once, looking up every ID
		}
		if fast {
			fast = false
			if predictionFailed(err) {
				// Decide on the facts, read (the stream rows locked, every
				// ID looked up), at once.
				w.cache.forget(streamsOf(reqs)...)
				continue
			}
		}
		if connLost(err) {
			lost++
		}
		if lost == maxCommitAttempts || attempt == maxContendedAttempts || !retryable(err) || w.e.db.closed.Load() {
			return err
		}
		if idTaken(err) && attempt == 1 {
			continue // a later event's ID is stored: at once, looking up every ID
		}
		w.e.db.log.Warn("postgres: group commit failed, retrying", "schema", w.e.db.opts.Schema,
			"appends", len(reqs), "attempt", attempt, "err", err)
		select {
		case <-time.After(time.Duration(min(attempt, 5)) * 10 * time.Millisecond):
		case <-w.stop:
		}
	}
}

// answer tells every append of a committed group that it is done, and
// wakes subscriptions.
func (w *writer) answer(reqs []*appendReq) {
	for _, r := range reqs {
		r.done <- nil
	}
	w.e.Notify()
}

// fail answers every append of reqs with err: ErrUnknownOutcome for those a
// lost commit may have stored, ErrClosed (with err) after Close.
func (w *writer) fail(reqs []*appendReq, err error) {
	closed := w.e.db.closed.Load()
	for _, r := range reqs {
		switch {
		case r.inFlight:
			r.done <- fmt.Errorf("%w: %w", driver.ErrUnknownOutcome, err)
		case closed:
			r.done <- fmt.Errorf("%w (%w)", driver.ErrClosed, err)
		default:
			r.done <- fmt.Errorf("postgres: group commit: %w", err)
		}
	}
}

// isolateLocked handles a group that waited groupLockWait for a lock: the
// appends to streams whose rows another transaction holds are parked, and
// the others committed at once. When no stream row is held (what the group
// waited for was an event ID another transaction is inserting, or it was
// released meanwhile), the group is split, and an append left alone is
// parked.
func (w *writer) isolateLocked(reqs []*appendReq, buf *batchBuf, err error) {
	held, perr := w.e.heldStreams(w.e.db.ctx, reqs)
	if perr != nil {
		if w.e.db.closed.Load() {
			w.fail(reqs, err)
		} else {
			w.park.add(reqs...)
		}
		return
	}
	var rest []*appendReq
	for _, r := range reqs {
		if held[r.r.Stream] {
			w.park.add(r)
		} else {
			rest = append(rest, r)
		}
	}
	switch {
	case len(rest) == 0:
	case len(rest) < len(reqs):
		w.commit(rest, buf)
	case oneStream(reqs):
		w.park.add(reqs...)
	default:
		w.split(reqs, buf)
	}
}

// streamsOf returns the streams of reqs.
func streamsOf(reqs []*appendReq) []string {
	streams := make([]string, len(reqs))
	for i, r := range reqs {
		streams[i] = r.r.Stream
	}
	return streams
}

func oneStream(reqs []*appendReq) bool {
	for _, r := range reqs[1:] {
		if r.r.Stream != reqs[0].r.Stream {
			return false
		}
	}
	return true
}

// heldStreams finds which of the streams of reqs have rows that another
// transaction holds locked, without waiting for any: in a transaction that is
// rolled back, it locks the rows it can and reports the others.
func (e *eventDriver) heldStreams(ctx context.Context, reqs []*appendReq) (map[string]bool, error) {
	streams := make([]string, 0, len(reqs))
	for _, r := range reqs {
		streams = append(streams, r.r.Stream)
	}
	held := map[string]bool{}
	b := &pgx.Batch{}
	b.Queue(beginOwn)
	b.Queue(e.db.q.heldStreams, streams).Query(func(rs pgx.Rows) error {
		for rs.Next() {
			var s string
			if err := rs.Scan(&s); err != nil {
				return err
			}
			held[s] = true
		}
		return rs.Err()
	})
	b.Queue("rollback")
	if err := e.db.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return held, nil
}

// errNeedIDs ends a first attempt whose decision about an append of several
// events depends on IDs it did not look up: its first event ID is stored
// (whether it is a retry is decided event by event), or it was refused for
// its version or a tombstone (a stored later ID, a duplicate ID, comes
// first). The group is run again with every ID looked up.
var errNeedIDs = errors.New("postgres: group commit: an append may be a retry; looking up all its IDs")

// idTaken reports whether err is the unique index on event IDs refusing an
// insert.
func idTaken(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_id_key"
}

// lockTimedOut reports whether err is a group commit's lock_timeout.
func lockTimedOut(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// isolable reports whether err is one that a single append's input can cause
// by itself, so that the other appends of its group commit without it:
// PostgreSQL refusing a value (class 22: a NUL byte in text, a time out of
// range, ...), a limit (class 54: an index row too big, ...), or pgx refusing
// to send a message too large.
func isolable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code[:2] == "22" || pgErr.Code[:2] == "54"
	}
	return tooLargeToSend(err)
}

// tooLargeToSend reports whether err is pgx refusing to send a message
// PostgreSQL would refuse (larger than maxMessageBytes). Nothing was sent.
func tooLargeToSend(err error) bool {
	return pgconn.SafeToRetry(err) && strings.Contains(err.Error(), "message body too large")
}

// retryable reports whether a failed group commit may succeed if run again.
func retryable(err error) bool {
	if errors.Is(err, driver.ErrClosed) || errors.Is(err, context.Canceled) || tooLargeToSend(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return true // the connection failed
	}
	switch pgErr.Code {
	case "40001", "40P01", "23505", "57P01", "57P02", "57P03":
		return true
	case "22P02":
		return strings.Contains(pgErr.Message, streamChanged)
	}
	return len(pgErr.Code) == 5 && pgErr.Code[:2] == "08"
}

// connLost reports whether err says the connection (not one statement) failed,
// so a commit sent on it may or may not have happened.
func connLost(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return true
	}
	return pgErr.Code[:2] == "08" || pgErr.Code[:2] == "57"
}

// batchBuf holds the column arrays of one group commit, reused between commits.
type batchBuf struct {
	majors, seqs, versions []int64
	ids, streams, types    []string
	data, meta             [][]byte
	times                  []time.Time
	metaBuf                []byte
	metaEnds               []int
	wire                   []byte // the encoded parameters of a one-round-trip commit

	uStreams          []string
	uVersions, uMajor []int64

	// Whether the insert and the commit of the last write were answered,
	// set by the callbacks replies returns (made once per buffer).
	inserted, committed     bool
	onInserted, onCommitted func(pgconn.CommandTag) error
}

// replies returns the callbacks that record the answers to a write's insert
// and commit in b.inserted and b.committed.
func (b *batchBuf) replies() (inserted, committed func(pgconn.CommandTag) error) {
	if b.onInserted == nil {
		b.onInserted = func(pgconn.CommandTag) error { b.inserted = true; return nil }
		b.onCommitted = func(pgconn.CommandTag) error { b.committed = true; return nil }
	}
	return b.onInserted, b.onCommitted
}

func (b *batchBuf) reset() {
	b.majors, b.seqs, b.versions = b.majors[:0], b.seqs[:0], b.versions[:0]
	clear(b.ids)
	clear(b.streams)
	clear(b.types)
	clear(b.data)
	b.ids, b.streams, b.types, b.data = b.ids[:0], b.streams[:0], b.types[:0], b.data[:0]
	b.meta, b.times, b.metaBuf, b.metaEnds = b.meta[:0], b.times[:0], b.metaBuf[:0], b.metaEnds[:0]
	b.uStreams, b.uVersions, b.uMajor = b.uStreams[:0], b.uVersions[:0], b.uMajor[:0]
}

// sliceMeta cuts the metadata buffer into one value per event.
func (b *batchBuf) sliceMeta() {
	for i, end := range b.metaEnds {
		start := 0
		if i > 0 {
			start = b.metaEnds[i-1]
		}
		m := b.metaBuf[start:end:end]
		if m == nil {
			m = []byte{} // empty metadata is zero bytes, not NULL
		}
		b.meta = append(b.meta, m)
	}
}

type streamRow struct {
	version, deleted uint64
	tombstoned       bool
	major            int64
	dirty            bool
	// As read: whether the row exists, and its version and deleted version.
	stored                 bool
	oldVersion, oldDeleted int64
}

// state is the row's state, as the driver contract sees it.
func (r *streamRow) state() driver.State {
	return driver.State{Version: r.version, Start: r.deleted, Tombstoned: r.tombstoned}
}

// execute decides and writes reqs. With tx nil it runs its own transaction on
// a connection of the pool (the group commit); otherwise it runs inside tx, the
// caller's unit of work, and leaves the commit to it. With lock it locks the
// stream rows before reading them; without, it reads them plainly and the
// write fails (to be retried with lock) if one changed meanwhile. sent reports
// that a commit was sent, so the outcome of a failure is unknown. Each
// request holds what the attempt decided for it, also when the write failed
// (when sent is true, it was decided).
func (e *eventDriver) execute(ctx context.Context, unit *Tx, reqs []*appendReq, buf *batchBuf, lock bool) (sent bool, err error) {
	var conn sender
	if unit != nil {
		conn = unit.tx
	} else {
		c, aerr := e.db.pool.Acquire(ctx)
		if aerr != nil {
			if e.db.closed.Load() {
				return false, errClosed()
			}
			return false, aerr
		}
		// err is the function's result: a failed commit leaves its
		// transaction open (or aborted) until release rolls it back.
		defer func() { release(c, err == nil) }()
		conn = c.Conn()
	}
	// The first attempt of a group commit looks up only each append's first
	// event ID: enough to recognise a retry of a one-event append, and a later
	// event whose ID is stored fails the insert on the unique index. Every
	// other attempt, and every append in a caller's unit of work (which must
	// not be aborted), looks up all of them.
	allIDs := lock
	own := unit == nil
	st, err := e.readState(ctx, conn, own, reqs, lock, allIDs)
	if err != nil {
		return false, err
	}
	if !own {
		unit.setXID(st.xid)
	}
	if !allIDs {
		for _, r := range reqs {
			if _, ok := st.stored[r.r.Events[0].ID]; ok && len(r.r.Events) > 1 {
				return false, errNeedIDs // a retry to check event by event
			}
		}
	}
	if h := e.hooks.beforeWrite; h != nil && own {
		h(conn.(*pgx.Conn))
	}
	buf.reset()
	e.decide(reqs, st, buf)
	if !allIDs && refusedPartly(reqs) {
		return false, errNeedIDs
	}
	sent, err = e.write(ctx, conn, own, st, buf, lock)
	if err == nil && own && len(buf.ids) > 0 {
		e.w.cache.update(st.rows) // committed
	}
	if h := e.hooks.afterCommit; h != nil && err == nil && own {
		err = h(len(reqs))
	}
	return sent, err
}

// refusedPartly reports whether an append of several events, decided with
// only its first ID looked up, was refused for its version or a tombstone:
// with every ID looked up it may be a duplicate ID instead.
func refusedPartly(reqs []*appendReq) bool {
	for _, r := range reqs {
		if o := r.r.Outcome; len(r.r.Events) > 1 && (o == driver.Conflict || o == driver.Deleted) {
			return true
		}
	}
	return false
}

// sender is a connection or a transaction: what a pipeline is sent on.
type sender interface {
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}

// release returns a group commit's connection to the pool. After a failure
// the transaction may still be open (or the connection broken): it is rolled
// back, and the connection closed if even that fails.
func release(c *pgxpool.Conn, healthy bool) {
	if !healthy {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := c.Exec(ctx, "rollback"); err != nil {
			_ = c.Conn().Close(ctx)
		}
		cancel()
	}
	c.Release()
}

// batchState is what the first round trip of a commit learns.
type batchState struct {
	rows     map[string]*streamRow    // by stream: as read (a zero row if none)
	stored   map[string]driver.Stored // by ID: the batch's events already stored, then those it writes (sized for all)
	xid      int64                    // the transaction's id
	seqs     []int64                  // sequence numbers, one per event, increasing
	planMode string                   // plan_cache_mode to restore
}

// readState is the first round trip: it begins the transaction (if own),
// reads (or locks) the streams' rows, finds which of the appends' IDs (all,
// or each append's first) are already stored, and takes
// the transaction id and blocks of sequence numbers, pipelined.
func (e *eventDriver) readState(ctx context.Context, conn sender, own bool, reqs []*appendReq, lock, allIDs bool) (*batchState, error) {
	q := &e.db.q
	var streams, ids []string
	total := 0
	for _, r := range reqs {
		streams = append(streams, r.r.Stream)
		if allIDs {
			for i := range r.r.Events {
				ids = append(ids, r.r.Events[i].ID)
			}
		} else {
			ids = append(ids, r.r.Events[0].ID)
		}
		total += len(r.r.Events)
	}
	slices.Sort(streams)
	streams = slices.Compact(streams)

	st := &batchState{rows: make(map[string]*streamRow, len(streams)), stored: make(map[string]driver.Stored, total)}
	var blocks []int64
	b := &pgx.Batch{}
	// Plan the lookups and the stream update for their arguments. A generic
	// plan cached while the tables were small (a sequential scan for
	// id = ANY($1), a hash join for the stream update) would stay after they
	// grow, costing a scan of the table per commit. The setting is put back
	// before the insert. A transaction of its own also gets its isolation and
	// timeouts (see beginOwn).
	if own {
		b.Queue(beginOwn)
		if e.hooks.serialize {
			b.Queue("SELECT pg_advisory_xact_lock(hashtext($1))", q.channel)
		}
		b.Queue(q.ownSettings).QueryRow(func(row pgx.Row) error { return row.Scan(&st.planMode, nil, nil) })
	} else {
		b.Queue(q.customPlans).QueryRow(func(row pgx.Row) error { return row.Scan(&st.planMode, nil) })
	}
	readStreams := q.readStreams
	if lock {
		readStreams = q.lockStreams
	}
	b.Queue(readStreams, streams).Query(func(rs pgx.Rows) error { return scanStreamRows(rs, st.rows) })
	b.Queue(q.storedIDs, ids).Query(func(rs pgx.Rows) error { return scanStored(rs, st.stored) })
	b.Queue(q.xidAndSeqs, (total+seqBlock-1)/seqBlock).Query(func(rs pgx.Rows) error {
		for rs.Next() {
			var block int64
			if err := rs.Scan(&st.xid, &block); err != nil {
				return err
			}
			blocks = append(blocks, block)
		}
		return rs.Err()
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	if lock && len(st.rows) != len(streams) {
		return nil, fmt.Errorf("postgres: append: locked %d of %d streams", len(st.rows), len(streams))
	}
	slices.Sort(blocks)
	st.seqs = make([]int64, 0, total)
	for _, first := range blocks {
		for i := range min(seqBlock, total-len(st.seqs)) {
			st.seqs = append(st.seqs, first+int64(i))
		}
	}
	for _, s := range streams {
		if st.rows[s] == nil {
			st.rows[s] = &streamRow{}
		}
	}
	return st, nil
}

func scanStreamRows(rs pgx.Rows, rows map[string]*streamRow) error {
	for rs.Next() {
		var name string
		var r streamRow
		var version, deleted int64
		if err := rs.Scan(&name, &version, &deleted, &r.tombstoned, &r.major); err != nil {
			return err
		}
		r.version, r.deleted = uint64(version), uint64(deleted)
		r.oldVersion, r.oldDeleted, r.stored = version, deleted, true
		rows[name] = &r
	}
	return rs.Err()
}

func scanStored(rs pgx.Rows, stored map[string]driver.Stored) error {
	for rs.Next() {
		var s driver.Stored
		var version, major, seq int64
		if err := rs.Scan(&s.ID, &s.Stream, &version, &s.Type, &s.Data, &major, &seq); err != nil {
			return err
		}
		s.Version = uint64(version)
		s.Position = recado.NewPosition(uint64(major), uint64(seq))
		stored[s.ID] = s
	}
	return rs.Err()
}

// write is the second round trip: it writes the events buf holds and the
// stream rows they change, and commits (if own), pipelined. sent reports that
// a commit was sent and may have happened, so that the outcome of a failure is
// unknown.
func (e *eventDriver) write(ctx context.Context, conn sender, own bool, st *batchState, buf *batchBuf, lock bool) (sent bool, err error) {
	if !own {
		return false, e.writeInTx(ctx, conn, st, buf)
	}
	q := &e.db.q
	b := &pgx.Batch{}
	if len(buf.ids) == 0 {
		b.Queue("rollback") // nothing passed: leave no new stream rows behind
		return false, conn.SendBatch(ctx, b).Close()
	}
	buf.inserted, buf.committed = false, false
	onInserted, onCommitted := buf.replies()
	buf.sliceMeta()
	if lock {
		b.Queue(q.updateStream, buf.uStreams, buf.uVersions, buf.uMajor)
	} else {
		e.queueCAS(b, st.rows, buf)
	}
	// The insert scans no table: its generic plan is as good, and planning
	// a hundred-row insert for its arguments costs more than it saves.
	b.Queue(q.restorePlans, st.planMode)
	b.Queue(q.insertEvents, buf.majors, buf.seqs, buf.ids, buf.streams, buf.versions, buf.types, buf.data, buf.meta, buf.times).
		Exec(onInserted)
	b.Queue("commit").Exec(onCommitted)
	// After the commit, in a transaction of its own: a NOTIFY inside the
	// transaction would take PostgreSQL's global notify lock across the
	// commit's WAL flush, serializing every notifying commit.
	b.Queue(q.notify, q.channel)
	return e.sendCommit(ctx, conn, b, buf)
}

// sendCommit sends b, a pipeline that ends a group commit's transaction with
// its commit (answered to buf.replies) and a notification. sent reports that
// the commit may have happened, so that the outcome of a failure is unknown.
func (e *eventDriver) sendCommit(ctx context.Context, conn sender, b *pgx.Batch, buf *batchBuf) (sent bool, err error) {
	// Close gives up on the commit only if the server has not answered
	// within closeGrace (see DB.Close).
	nc := conn.(*pgx.Conn).PgConn().Conn()
	e.db.sending.enter(nc)
	err = conn.SendBatch(context.WithoutCancel(ctx), b).Close()
	e.db.sending.leave(nc)
	if err != nil {
		if buf.committed {
			e.db.log.Warn("postgres: notify after a commit failed; subscribers elsewhere will poll", "schema", e.db.opts.Schema, "err", err)
			return true, nil
		}
		return mayHaveCommitted(err, buf.inserted), err
	}
	return true, nil
}

// writeInTx is write in a caller's unit of work, which must not be aborted by
// an event ID another transaction stored after the lookup: the insert skips
// such an ID, the stream rows are updated only if every event was inserted,
// and otherwise the append is undone and decided again (errRaced).
func (e *eventDriver) writeInTx(ctx context.Context, conn sender, st *batchState, buf *batchBuf) error {
	q := &e.db.q
	b := &pgx.Batch{}
	b.Queue(q.restorePlans, st.planMode)
	var took []string // the IDs inserted
	if len(buf.ids) > 0 {
		buf.sliceMeta()
		b.Queue(q.insertInTx, buf.majors, buf.seqs, buf.ids, buf.streams, buf.versions, buf.types, buf.data, buf.meta, buf.times,
			buf.uStreams, buf.uVersions, buf.uMajor).QueryRow(func(row pgx.Row) error { return row.Scan(&took) })
		b.Queue(q.notify, q.channel) // delivered when the caller commits
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	if len(took) < len(buf.ids) {
		return e.undoInTx(ctx, conn, took)
	}
	return nil
}

// errRaced ends an append in a unit of work that met an event ID stored by
// another transaction after its lookup: it is decided again.
var errRaced = errors.New("postgres: append in a unit of work: an event ID was stored meanwhile")

// undoInTx deletes the events an append in a unit of work inserted before it
// met an ID stored meanwhile (its stream rows were left as they were), and
// returns errRaced.
func (e *eventDriver) undoInTx(ctx context.Context, conn sender, took []string) error {
	if len(took) > 0 {
		b := &pgx.Batch{}
		b.Queue(e.db.q.deleteEvents, took)
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
	}
	return errRaced
}

// mayHaveCommitted reports whether a pipelined write that failed with err may
// have committed, when its commit's reply never came: not if nothing was sent,
// not if the server reported an ERROR (which ends the transaction, commit
// included), not if a fatal error (the session ended) came before the
// insert's reply; otherwise (the connection failed) it may have.
func mayHaveCommitted(err error, inserted bool) bool {
	if pgconn.SafeToRetry(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		severity := pgErr.SeverityUnlocalized
		if severity == "" {
			severity = pgErr.Severity
		}
		return severity != "ERROR" && inserted
	}
	return true
}

// queueCAS queues the updates of the stream rows read without locks: new rows
// are inserted (a unique violation if another writer created one meanwhile),
// existing ones updated only if unchanged.
func (e *eventDriver) queueCAS(b *pgx.Batch, rows map[string]*streamRow, buf *batchBuf) {
	var newNames, oldNames []string
	var newVersions, newMajors, versions, majors, oldVersions, oldDeleted []int64
	// In stream order, as the locking path does, so that no two commits
	// (of this process or another) wait for each other's rows in a cycle.
	order := make([]int, len(buf.uStreams))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(buf.uStreams[a], buf.uStreams[b]) })
	for _, i := range order {
		name := buf.uStreams[i]
		r := rows[name]
		if !r.stored {
			newNames = append(newNames, name)
			newVersions, newMajors = append(newVersions, buf.uVersions[i]), append(newMajors, buf.uMajor[i])
			continue
		}
		oldNames = append(oldNames, name)
		versions, majors = append(versions, buf.uVersions[i]), append(majors, buf.uMajor[i])
		oldVersions, oldDeleted = append(oldVersions, r.oldVersion), append(oldDeleted, r.oldDeleted)
	}
	if len(newNames) > 0 {
		b.Queue(e.db.q.newStreams, newNames, newVersions, newMajors)
	}
	if len(oldNames) > 0 {
		b.Queue(e.db.q.casStreams, oldNames, versions, majors, oldVersions, oldDeleted, len(oldNames))
	}
}

// decide decides every request in order with [driver.Request.Decide], each
// on the state of its stream's row (as read, then as the requests before it
// in the group leave it) and the stored events with its IDs (looked up, and
// those the requests before it write), and fills buf with the events of those
// written. It sets each written event's Stream, Version and Position, and the
// request's positions.
func (e *eventDriver) decide(reqs []*appendReq, st *batchState, buf *batchBuf) {
	next := 0
	var found []driver.Stored
	for i, a := range reqs {
		r := a.r
		last := i == len(reqs)-1
		found = found[:0]
		for j := range r.Events {
			if s, ok := st.stored[r.Events[j].ID]; ok {
				found = append(found, s)
			}
		}
		if len(found) == 0 {
			found = nil
		}
		row := st.rows[r.Stream]
		if !r.Decide(row.state(), found) {
			if r.Outcome == driver.Duplicate && a.inFlight {
				// Stored by this very append's earlier attempt, whose commit
				// was lost: it is written, not a retry.
				r.Outcome = driver.Written
				for j := range r.Events {
					ev, s := &r.Events[j], st.stored[r.Events[j].ID]
					ev.Stream, ev.Version, ev.Position = r.Stream, s.Version, s.Position
				}
			}
			continue
		}
		major := max(st.xid, row.major)
		for j := range r.Events {
			ev := &r.Events[j]
			version := r.FirstVersion + uint64(j)
			seq := st.seqs[next]
			next++
			data := ev.Data
			if data == nil {
				data = []byte{} // the column is NOT NULL
			}
			buf.majors = append(buf.majors, major)
			buf.seqs = append(buf.seqs, seq)
			buf.ids = append(buf.ids, ev.ID)
			buf.streams = append(buf.streams, r.Stream)
			buf.versions = append(buf.versions, int64(version))
			buf.types = append(buf.types, ev.Type)
			buf.data = append(buf.data, data)
			buf.metaBuf = ev.Metadata.AppendJSON(buf.metaBuf)
			buf.metaEnds = append(buf.metaEnds, len(buf.metaBuf))
			buf.times = append(buf.times, ev.Time)
			ev.Stream, ev.Version, ev.Position = r.Stream, version, recado.NewPosition(uint64(major), uint64(seq))
			if !last { // for the requests after it
				st.stored[ev.ID] = driver.Stored{ID: ev.ID, Stream: r.Stream, Version: version, Position: ev.Position, Type: ev.Type, Data: data}
			}
		}
		r.FirstPosition, r.LastPosition = r.Events[0].Position, r.Events[len(r.Events)-1].Position
		row.version = r.LastVersion
		row.major = major
		if !row.dirty {
			row.dirty = true
			buf.uStreams = append(buf.uStreams, r.Stream)
		}
	}
	for _, s := range buf.uStreams {
		row := st.rows[s]
		buf.uVersions = append(buf.uVersions, int64(row.version))
		buf.uMajor = append(buf.uMajor, row.major)
	}
}

// clampInt64 maps a position or version part beyond the int64 range (never
// stored) to the largest int64.
func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// testHooks let the package's tests break a group commit at chosen points.
type testHooks struct {
	// beforeWrite runs between the two round trips, with the connection
	// (inside the group commit's transaction).
	beforeWrite func(conn *pgx.Conn)
	// afterCommit runs after a commit of so many appends succeeded; an error
	// makes the writer believe the reply was lost.
	afterCommit func(appends int) error
	// fast, if set, is told the end of each one-round-trip commit: whether
	// it committed.
	fast func(committed bool)
	// grace, if set, replaces closeGrace.
	grace time.Duration
	// serialize makes every group commit take one transaction-scoped advisory
	// lock first: the other known gap-safe design (commits serialized across
	// processes), kept to compare the two by measurement.
	serialize bool
}

func (h *testHooks) closeGrace(d time.Duration) time.Duration {
	if h.grace > 0 {
		return h.grace
	}
	return d
}
