package postgres

import (
	"context"
	"errors"
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
// trip, and sets their positions. sent reports that a commit was sent, so
// that the outcome of a failure is unknown. A failure of a guard (see
// predictionFailed) leaves nothing written.
func (e *eventDriver) fastCommit(ctx context.Context, reqs []*appendReq, st *batchState, buf *batchBuf) (sent bool, err error) {
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
	b := &pgx.Batch{}
	b.Queue(beginOwn)
	// The update of existing rows joins them to its arguments: it is planned
	// for them (see readState). The inserts scan no table: their generic
	// plans are as good, and cost no planning.
	cas := hasStoredRows(st.rows, buf)
	if cas {
		b.Queue(q.fastSettingsCAS)
	} else {
		b.Queue(q.fastSettings)
	}
	if h := e.hooks.beforeWrite; h != nil {
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return false, err
		}
		h(conn)
		b = &pgx.Batch{}
	}
	e.queueFastStreams(b, st.rows, buf)
	if cas {
		b.Queue(q.genericPlans)
	}
	buf.inserted, buf.committed = false, false
	buf.sliceMeta()
	var xid int64
	var blocks []int64
	b.Queue(q.fastInsert, buf.majors, buf.seqs, buf.ids, buf.streams, buf.versions, buf.types, buf.data, buf.meta, buf.times,
		(len(buf.ids)+seqBlock-1)/seqBlock).QueryRow(func(row pgx.Row) error {
		buf.inserted = true
		return row.Scan(&xid, &blocks)
	})
	_, onCommitted := buf.replies()
	b.Queue("commit").Exec(onCommitted)
	b.Queue(q.notify, q.channel)
	sent, err = e.sendCommit(ctx, conn, b, buf)
	if err != nil {
		return sent, err
	}
	if len(blocks)*seqBlock < len(buf.ids) {
		return true, errors.New("postgres: group commit: too few sequence blocks") // never: the statement takes them
	}
	e.placeFast(reqs, st, buf, xid, blocks)
	e.w.cache.update(st.rows)
	if h := e.hooks.afterCommit; h != nil {
		err = h(len(reqs))
	}
	return true, err
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

// queueFastStreams queues the writes of the stream rows of a predicted group:
// new rows inserted, existing ones updated if unchanged, each in stream order
// (as queueCAS does).
func (e *eventDriver) queueFastStreams(b *pgx.Batch, rows map[string]*streamRow, buf *batchBuf) {
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
	if len(newNames) > 0 {
		b.Queue(e.db.q.fastNewStreams, newNames, newVersions)
	}
	if len(oldNames) > 0 {
		b.Queue(e.db.q.fastCAS, oldNames, versions, oldVersions, oldDeleted, oldMajors, len(oldNames))
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
