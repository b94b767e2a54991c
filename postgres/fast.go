package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// The one-round-trip group commit.
//
// A group commit decides its appends on facts it reads in its transaction
// (the streams' rows, the stored events that share an ID with them), and then
// writes: two round trips. Most appends are predictable: a new stream, or a
// stream this writer wrote or read last, and IDs never used. For those the
// writer decides on the predicted facts and sends the write at once, in one
// round trip, with guards that make the transaction fail unless the
// prediction held: a predicted new stream's row is inserted (a unique
// violation if it exists), a predicted row is updated only if it is still
// exactly as predicted, and the unique index on IDs refuses a stored ID. If
// the transaction commits, every prediction held, so the decisions are those
// the read facts would have given. If a guard fails, the group is committed
// the usual way.
//
// Positions are taken in the transaction, as in the usual way: the major is
// the transaction id, or the stream's major if that is larger, and the
// sequence numbers come from blocks taken after the stream rows were written,
// so a stream's events sort after its earlier ones.

// rowCache remembers stream rows as the writer last read or wrote them: the
// predictions of the one-round-trip commit. It is never trusted: a stale row
// only costs that commit a second attempt.
type rowCache struct {
	mu   sync.Mutex
	rows map[string]cachedRow
}

type cachedRow struct{ version, deleted, major int64 }

// maxCachedRows bounds the cache; when full it starts again empty.
const maxCachedRows = 1 << 14

func (c *rowCache) get(stream string) (cachedRow, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.rows[stream]
	return r, ok
}

// update records the rows of a commit that succeeded (or, with committed
// false, rows as read): those it wrote and, if read, the others.
func (c *rowCache) update(rows map[string]*streamRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rows == nil || len(c.rows)+len(rows) > maxCachedRows {
		c.rows = make(map[string]cachedRow, len(rows))
	}
	for name, r := range rows {
		switch {
		case r.tombstoned || (!r.stored && !r.dirty):
			delete(c.rows, name)
		default:
			c.rows[name] = cachedRow{version: int64(r.version), deleted: int64(r.deleted), major: r.major}
		}
	}
}

// forget drops the rows of streams that another path changed or whose
// prediction failed.
func (c *rowCache) forget(streams ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range streams {
		delete(c.rows, s)
	}
}

// predict decides reqs on predicted facts: each stream's row as cached, or
// no row, and no stored ID. It reports whether every append was then written,
// the only case the one-round-trip commit takes; buf holds the events, with
// their stream's predicted major in place of the major and their ordinal in
// place of the sequence number.
func (w *writer) predict(reqs []*appendReq, buf *batchBuf) (*batchState, bool) {
	st := &batchState{rows: make(map[string]*streamRow, 1), stored: make(map[string]driver.Stored)}
	total := 0
	for _, a := range reqs {
		total += len(a.r.Events)
		if st.rows[a.r.Stream] != nil {
			continue
		}
		row := &streamRow{}
		if c, ok := w.cache.get(a.r.Stream); ok {
			*row = streamRow{version: uint64(c.version), deleted: uint64(c.deleted), major: c.major,
				stored: true, oldVersion: c.version, oldDeleted: c.deleted}
		}
		st.rows[a.r.Stream] = row
	}
	st.seqs = make([]int64, total)
	for i := range st.seqs {
		st.seqs[i] = int64(i)
	}
	buf.reset()
	w.e.decide(reqs, st, buf)
	for _, a := range reqs {
		if a.r.Outcome != driver.Written {
			return nil, false
		}
	}
	return st, true
}

// fastCommit writes and commits reqs, decided by predict on st, in one round
// trip, and sets their positions. It calls committed as soon as the commit is
// answered, before the notification that follows it, so the appenders go on
// while the server sends it; not if a test hook must see the commit first.
// sent reports that a commit was sent, so that the outcome of a failure is
// unknown. A failure of a guard (see predictionFailed) leaves nothing
// written.
func (e *eventDriver) fastCommit(ctx context.Context, reqs []*appendReq, st *batchState, buf *batchBuf, committed func()) (sent bool, err error) {
	c, err := e.db.pool.Acquire(ctx)
	if err != nil {
		if e.db.closed.Load() {
			return false, errClosed()
		}
		return false, err
	}
	defer func() { release(c, err == nil) }()
	conn := c.Conn()
	q := &e.db.q
	// The update of existing rows joins them to its arguments: it is planned
	// for them (see readState). The inserts scan no table: their generic
	// plans are as good, and cost no planning.
	cas := hasStoredRows(st.rows, buf)
	settings := q.fast.settings
	if cas {
		settings = q.fast.settingsCAS
	}
	p := fastPipeline{conn: conn}
	p.add(ctx, q.fast.begin, nil)
	p.add(ctx, settings, nil)
	buf.sliceMeta()
	e.addFastStreams(ctx, &p, st.rows, buf)
	if cas {
		p.add(ctx, q.fast.genericPlans, nil)
	}
	w := buf.wire[:0]
	var ends []int
	for _, col := range [][]int64{buf.majors, buf.seqs} {
		w = appendInt8Array(w, col)
		ends = append(ends, len(w))
	}
	w = appendTextArray(w, buf.ids)
	ends = append(ends, len(w))
	w = appendTextArray(w, buf.streams)
	ends = append(ends, len(w))
	w = appendInt8Array(w, buf.versions)
	ends = append(ends, len(w))
	w = appendTextArray(w, buf.types)
	ends = append(ends, len(w))
	w = appendByteaArray(w, buf.data)
	ends = append(ends, len(w))
	w = appendByteaArray(w, buf.meta)
	ends = append(ends, len(w))
	w = appendTimestamptzArray(w, buf.times)
	ends = append(ends, len(w))
	w = binary.BigEndian.AppendUint32(w, uint32((len(buf.ids)+seqBlock-1)/seqBlock))
	ends = append(ends, len(w))
	buf.wire = w
	insert := p.add(ctx, q.fast.insert, params(w, ends))
	commit := p.add(ctx, q.fast.commit, nil)
	p.flush = commit // the commit's answer comes before the notification's
	p.add(ctx, q.fast.notify, [][]byte{[]byte(q.channel)})
	if p.err != nil {
		return false, p.err // nothing sent
	}
	from := 0
	if h := e.hooks.beforeWrite; h != nil {
		// The test's hook runs in the transaction, between two round trips.
		if err := p.run(ctx, 0, 2, func(int, *pgconn.ResultReader) error { return nil }); err != nil {
			return false, err
		}
		h(conn)
		from = 2
	}
	var xid int64
	var blocks []int64
	done := false // positions set, requests answered
	buf.inserted, buf.committed = false, false
	nc := conn.PgConn().Conn()
	e.db.sending.enter(nc)
	err = p.run(context.WithoutCancel(ctx), from, len(p.sds), func(i int, rr *pgconn.ResultReader) error {
		switch i {
		case insert:
			buf.inserted = true
			for rr.NextRow() {
				v := rr.Values()
				if len(v) != 2 {
					return errWire
				}
				var err error
				if xid, err = parseInt8(v[0]); err != nil {
					return err
				}
				if blocks, err = parseInt8Array(v[1]); err != nil {
					return err
				}
				if len(blocks)*seqBlock < len(buf.ids) {
					return errors.New("postgres: group commit: too few sequence blocks in the reply")
				}
			}
		case commit:
			buf.committed = true
			if e.hooks.afterCommit == nil {
				e.fastDone(reqs, st, buf, xid, blocks)
				done = true
				committed()
			}
		}
		return nil
	})
	e.db.sending.leave(nc)
	if err != nil {
		if !buf.committed {
			return mayHaveCommitted(err, buf.inserted), err
		}
		e.db.log.Warn("postgres: notify after a commit failed; subscribers elsewhere will poll", "schema", e.db.opts.Schema, "err", err)
	}
	if done {
		return true, nil
	}
	e.fastDone(reqs, st, buf, xid, blocks)
	if h := e.hooks.afterCommit; h != nil {
		err = h(len(reqs))
	}
	return true, err
}

// fastDone sets the positions of a committed predicted group and keeps its
// stream rows for the next predictions.
func (e *eventDriver) fastDone(reqs []*appendReq, st *batchState, buf *batchBuf, xid int64, blocks []int64) {
	e.placeFast(reqs, st, buf, xid, blocks)
	e.w.cache.update(st.rows)
	if h := e.hooks.fast; h != nil {
		h(true)
	}
}

// fastStmt is a statement of the one-round-trip commit: prepared on each
// connection under a name of its own (pgx keeps its description), and sent
// with parameters encoded here, of the types in oids.
type fastStmt struct {
	name, sql string
	oids      []uint32
}

func newFastStmt(sql string, oids ...uint32) fastStmt {
	sum := sha256.Sum256([]byte(sql))
	return fastStmt{name: "recado_" + hex.EncodeToString(sum[:12]), sql: sql, oids: oids}
}

// fastStmts are the statements of the one-round-trip commit of one schema.
type fastStmts struct {
	begin, settings, settingsCAS, genericPlans, newStreams, cas, insert, commit, notify fastStmt
}

// fastPipeline is the one round trip: statements, prepared if need be, sent
// at once in one pipeline.
type fastPipeline struct {
	conn  *pgx.Conn
	sds   []*pgconn.StatementDescription
	binds [][][]byte
	flush int   // the server is asked to send the results up to this statement at once
	err   error // of a preparation: nothing was sent
}

// add queues s with its parameters (binary), and returns its index.
func (p *fastPipeline) add(ctx context.Context, s fastStmt, params [][]byte) int {
	if p.err != nil {
		return -1
	}
	sd, err := p.conn.Prepare(ctx, s.name, s.sql) // a round trip the first time on a connection only
	if err == nil && !slices.Equal(sd.ParamOIDs, s.oids) {
		err = fmt.Errorf("postgres: statement %s takes parameters of types %v, not %v", s.name, sd.ParamOIDs, s.oids)
	}
	if err != nil {
		p.err = err
		return -1
	}
	p.sds = append(p.sds, sd)
	p.binds = append(p.binds, params)
	return len(p.sds) - 1
}

// binaryFormat is the format of every parameter and result of the pipeline.
var binaryFormat = []int16{1}

// run sends statements from..to-1 and hands the result of each to result,
// in order, until one fails. It returns the first error: the server's (the
// transaction failed), or the connection's.
func (p *fastPipeline) run(ctx context.Context, from, to int, result func(i int, rr *pgconn.ResultReader) error) error {
	pl := p.conn.PgConn().StartPipeline(ctx)
	for i := from; i < to; i++ {
		pl.SendQueryStatement(p.sds[i], p.binds[i], binaryFormat, binaryFormat)
		if i == p.flush && i < to-1 {
			pl.SendFlushRequest()
		}
	}
	err := pl.Sync()
	for i := from; err == nil && i < to; i++ {
		var res any
		if res, err = pl.GetResults(); err != nil {
			break
		}
		rr, ok := res.(*pgconn.ResultReader)
		if !ok {
			err = fmt.Errorf("postgres: pipeline: got %T, want a result", res)
			break
		}
		err = result(i, rr)
		if _, cerr := rr.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := pl.Close(); err == nil {
		err = cerr
	}
	return err
}

// hasStoredRows reports whether the group writes a stream row that exists.
func hasStoredRows(rows map[string]*streamRow, buf *batchBuf) bool {
	for _, s := range buf.uStreams {
		if rows[s].stored {
			return true
		}
	}
	return false
}

// addFastStreams adds the writes of the stream rows of a predicted group:
// new rows inserted, existing ones updated if unchanged, each in stream order
// (as queueCAS does).
func (e *eventDriver) addFastStreams(ctx context.Context, p *fastPipeline, rows map[string]*streamRow, buf *batchBuf) {
	var newNames, oldNames []string
	var newVersions, versions, oldVersions, oldDeleted, oldMajors []int64
	order := make([]int, len(buf.uStreams))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(buf.uStreams[a], buf.uStreams[b]) })
	for _, i := range order {
		name := buf.uStreams[i]
		r := rows[name]
		if !r.stored {
			newNames, newVersions = append(newNames, name), append(newVersions, buf.uVersions[i])
			continue
		}
		oldNames, versions = append(oldNames, name), append(versions, buf.uVersions[i])
		oldVersions, oldDeleted, oldMajors = append(oldVersions, r.oldVersion), append(oldDeleted, r.oldDeleted), append(oldMajors, r.major)
	}
	q := &e.db.q.fast
	if len(newNames) > 0 {
		p.add(ctx, q.newStreams, [][]byte{appendTextArray(nil, newNames), appendInt8Array(nil, newVersions)})
	}
	if len(oldNames) > 0 {
		p.add(ctx, q.cas, [][]byte{appendTextArray(nil, oldNames), appendInt8Array(nil, versions),
			appendInt8Array(nil, oldVersions), appendInt8Array(nil, oldDeleted), appendInt8Array(nil, oldMajors),
			binary.BigEndian.AppendUint64(nil, uint64(len(oldNames)))})
	}
}

// placeFast sets the positions of the events of a committed predicted group,
// as the statement computed them: event i (in buf's order) is at major
// greatest(xid, its stream's predicted major) and sequence number
// blocks[i/seqBlock] + i%seqBlock.
func (e *eventDriver) placeFast(reqs []*appendReq, st *batchState, buf *batchBuf, xid int64, blocks []int64) {
	slices.Sort(blocks)
	i := 0
	for _, a := range reqs {
		r := a.r
		for j := range r.Events {
			major := max(xid, buf.majors[i])
			r.Events[j].Position = recado.NewPosition(uint64(major), uint64(blocks[i/seqBlock]+int64(i%seqBlock)))
			i++
		}
		r.FirstPosition, r.LastPosition = r.Events[0].Position, r.Events[len(r.Events)-1].Position
		major, _ := r.LastPosition.Parts()
		st.rows[r.Stream].major = int64(major)
	}
}

// predictionFailed reports whether err is a guard of the one-round-trip
// commit refusing a prediction: a stream row that exists, one that changed,
// or a stored event ID. The transaction wrote nothing.
func predictionFailed(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "23505":
		return pgErr.ConstraintName == "streams_pkey" || pgErr.ConstraintName == "events_id_key"
	case "22P02":
		return strings.Contains(pgErr.Message, streamChanged)
	}
	return false
}
