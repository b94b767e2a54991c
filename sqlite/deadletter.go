package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/deadletter/driver"
)

// deadLetters is the dead-letter queue's driver: a row per letter in
// recado_dead_letters.
type deadLetters struct{ db *DB }

var _ driver.Driver = (*deadLetters)(nil)

// DeadLetters returns a dead-letter queue kept in the DB's file, with cfg's
// clock and retention. Its Add, Park, Delivered and FailedAgain join a unit
// of work given a [*Tx] of this DB; without one, and for the operators'
// calls (Replay, Discard, ...), each runs in a transaction of its own.
func (db *DB) DeadLetters(cfg deadletter.Config) *deadletter.Store {
	return deadletter.New(&deadLetters{db: db}, cfg)
}

// Update implements [driver.Driver.Update]. In a unit of work fn runs under a
// savepoint, so that an fn that fails leaves nothing of itself in the unit;
// without one, in a transaction of its own (not a group commit: the front's
// fn must run once). Either way the transaction holds the file's only writer,
// which is all the locking the Writer's reads need.
func (d *deadLetters) Update(ctx context.Context, tx recado.Tx, fn func(w driver.Writer) error) error {
	var err error
	if tx != nil {
		err = d.db.writeInTx(ctx, tx, func(w *writeStmts) error {
			return w.inSavepoint(func() error { return fn(letterWriter{w}) })
		})
	} else {
		err = d.db.writeAlone(ctx, func(w *writeStmts) error { return fn(letterWriter{w}) })
	}
	return storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// letterColumns are the columns of a letter but its ID, in the order of
// letterArgs and after the ID in scanLetter.
const letterColumns = `source, seq_key, state, msg_id, msg_stream, msg_version, msg_pos, msg_pos_minor,
	msg_type, msg_data, msg_metadata, msg_time, error, class, attempts, added, first_failure, last_failure,
	requested, handled, reason`

const selectLetter = "SELECT id, " + letterColumns + " FROM recado_dead_letters "

// letterArgs returns the values of l's columns but its ID, in the order of
// letterColumns.
func letterArgs(l *driver.Letter) []any {
	m := &l.Message
	major, minor := m.Position.Parts()
	meta := m.Metadata.AppendJSON(nil) // nil (NULL) for no metadata
	return []any{l.Source, l.Key, int64(l.State), m.ID, m.Stream, m.Version, major, minor,
		m.Type, m.Data, meta, micros(m.Time), l.Error, int64(l.Class), int64(l.Attempts), micros(l.Added),
		micros(l.FirstFailure), micros(l.LastFailure), micros(l.Requested), micros(l.Handled), l.Reason}
}

// scanLetter reads the letter of st's row (selectLetter).
func scanLetter(st *sqlite3.Stmt) (driver.Letter, error) {
	meta, err := recado.ParseMetadata(st.ColumnRawBlob(11))
	if err != nil {
		return driver.Letter{}, fmt.Errorf("letter %d: message metadata: %w", st.ColumnInt64(0), err)
	}
	return driver.Letter{
		ID:     uint64(st.ColumnInt64(0)),
		Source: st.ColumnText(1),
		Key:    st.ColumnText(2),
		State:  driver.State(st.ColumnInt64(3)),
		Message: recado.Event{
			ID:       st.ColumnText(4),
			Stream:   st.ColumnText(5),
			Version:  uint64(st.ColumnInt64(6)),
			Position: recado.NewPosition(uint64(st.ColumnInt64(7)), uint64(st.ColumnInt64(8))),
			Type:     st.ColumnText(9),
			Data:     columnBytes(st, 10),
			Metadata: meta,
			Time:     columnTime(st, 12),
		},
		Error:        st.ColumnText(13),
		Class:        resilience.Class(st.ColumnInt64(14)),
		Attempts:     int(st.ColumnInt64(15)),
		Added:        columnTime(st, 16),
		FirstFailure: columnTime(st, 17),
		LastFailure:  columnTime(st, 18),
		Requested:    columnTime(st, 19),
		Handled:      columnTime(st, 20),
		Reason:       st.ColumnText(21),
	}, nil
}

// queryLetter reads the first letter query returns, if any.
func queryLetter(c *stmtCache, query string, args ...any) (l driver.Letter, found bool, err error) {
	found, err = c.queryRow(query, func(st *sqlite3.Stmt) (err error) {
		l, err = scanLetter(st)
		return err
	}, args...)
	return l, found, err
}

// getLetter and headLetter are the queries of Get and Head. The head is the
// open letter of a source and key with the lowest ID (open: state <= 3).
const (
	getLetter  = selectLetter + "WHERE id = ?"
	headLetter = selectLetter + "WHERE source = ? AND seq_key = ? AND state <= 3 ORDER BY id LIMIT 1"
)

// letterWriter is the [driver.Writer] of one transaction on the writer.
type letterWriter struct{ w *writeStmts }

func (lw letterWriter) Get(id uint64) (driver.Letter, bool, error) {
	return queryLetter(&lw.w.cache, getLetter, id)
}

func (lw letterWriter) Head(source, key string) (driver.Letter, bool, error) {
	return queryLetter(&lw.w.cache, headLetter, source, key)
}

func (lw letterWriter) Insert(l *driver.Letter) error {
	err := lw.w.cache.exec("INSERT INTO recado_dead_letters ("+letterColumns+
		") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", letterArgs(l)...)
	if err != nil {
		return err
	}
	l.ID = uint64(lw.w.conn.LastInsertRowID())
	return nil
}

func (lw letterWriter) Update(l *driver.Letter) error {
	return lw.w.cache.exec(`UPDATE recado_dead_letters SET (`+letterColumns+
		`) = (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) WHERE id = ?`, append(letterArgs(l), l.ID)...)
}

// Get implements [driver.Driver.Get], on a read connection.
func (d *deadLetters) Get(ctx context.Context, id uint64) (l driver.Letter, found bool, err error) {
	err = d.db.readStore(ctx, func(rc *readConn) (err error) {
		l, found, err = queryLetter(&rc.cache, getLetter, id)
		return err
	})
	return l, found, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// letterFilter is the WHERE clause of q (After and Limit aside), the SQL form
// of driver.Query.Match, over the arguments of filterArgs: ?1 the source
// (bySource only), ?2 the states as a bit set, ?3 the error text, ?4 and ?5
// the bounds of the last failure (NULL for none, which a letter that never
// failed, a NULL last_failure, does not pass). With bySource the source's
// index serves the query.
func letterFilter(bySource bool) string {
	where := `((?2 >> state) & 1) = 1 AND instr(error, ?3) > 0
	AND (?4 IS NULL OR last_failure >= ?4) AND (?5 IS NULL OR last_failure < ?5)`
	if bySource {
		return "source = ?1 AND " + where
	}
	return "?1 = '' AND " + where
}

// filterArgs returns the arguments of letterFilter for q, then after and
// limit (?6 and ?7; Groups has no ?6).
func filterArgs(q *driver.Query, after uint64) []any {
	var states int64
	for _, s := range q.States {
		states |= 1 << s
	}
	return []any{q.Source, states, q.ErrorContains, micros(q.Since), micros(q.Until), after, int64(q.Limit)}
}

// The queries of List and Groups, with and without a source.
var (
	listLetters = [2]string{
		selectLetter + "WHERE " + letterFilter(false) + " AND id > ?6 ORDER BY id LIMIT ?7",
		selectLetter + "WHERE " + letterFilter(true) + " AND id > ?6 ORDER BY id LIMIT ?7",
	}
	groupLetters = [2]string{groupQuery(false), groupQuery(true)}
)

// groupQuery returns the query of Groups. A group's first failure is the
// earliest of its letters', the zero time (NULL) if one of them never
// failed, as the driver contract's Group says.
func groupQuery(bySource bool) string {
	return `SELECT source, error, count(*),
	CASE WHEN count(first_failure) < count(*) THEN NULL ELSE min(first_failure) END,
	max(last_failure), min(id)
FROM recado_dead_letters WHERE ` + letterFilter(bySource) + `
GROUP BY source, error ORDER BY count(*) DESC, source, error LIMIT ?7`
}

func bySource(q *driver.Query) int {
	if q.Source != "" {
		return 1
	}
	return 0
}

// List implements [driver.Driver.List], on a read connection.
func (d *deadLetters) List(ctx context.Context, q driver.Query) (out []driver.Letter, err error) {
	err = d.db.readStore(ctx, func(rc *readConn) error {
		return rc.cache.queryRows(listLetters[bySource(&q)], func(st *sqlite3.Stmt) (bool, error) {
			l, err := scanLetter(st)
			out = append(out, l)
			return true, err
		}, filterArgs(&q, q.After)...)
	})
	if err != nil {
		return nil, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return out, nil
}

// Groups implements [driver.Driver.Groups], on a read connection.
func (d *deadLetters) Groups(ctx context.Context, q driver.Query) (out []driver.Group, err error) {
	err = d.db.readStore(ctx, func(rc *readConn) error {
		return rc.cache.queryRows(groupLetters[bySource(&q)], func(st *sqlite3.Stmt) (bool, error) {
			out = append(out, driver.Group{Source: st.ColumnText(0), Error: st.ColumnText(1), Count: int(st.ColumnInt64(2)),
				FirstFailure: columnTime(st, 3), LastFailure: columnTime(st, 4), FirstID: uint64(st.ColumnInt64(5))})
			return true, nil
		}, filterArgs(&q, 0)...)
	})
	if err != nil {
		return nil, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return out, nil
}

// Blocked implements [driver.Driver.Blocked], on a read connection.
func (d *deadLetters) Blocked(ctx context.Context, source string) (keys []string, err error) {
	err = d.db.readStore(ctx, func(rc *readConn) error {
		return rc.cache.queryRows(`SELECT DISTINCT seq_key FROM recado_dead_letters
WHERE source = ? AND seq_key != '' AND state <= 3 ORDER BY seq_key`, func(st *sqlite3.Stmt) (bool, error) {
			keys = append(keys, st.ColumnText(0))
			return true, nil
		}, source)
	})
	if err != nil {
		return nil, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return keys, nil
}

// Cleanup implements [driver.Driver.Cleanup], in a transaction of its own.
func (d *deadLetters) Cleanup(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = d.db.writeAlone(ctx, func(w *writeStmts) error {
		err := w.cache.exec(`DELETE FROM recado_dead_letters WHERE id IN
	(SELECT id FROM recado_dead_letters WHERE state >= 4 AND handled < ? LIMIT ?)`, micros(before), limit)
		n = int(w.conn.Changes())
		return err
	})
	if err != nil {
		return 0, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return n, nil
}
