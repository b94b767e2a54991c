package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/command/driver"
)

// commandRecords is the command store's driver: a row per command in
// recado_commands.
type commandRecords struct{ db *DB }

var _ driver.Commands = (*commandRecords)(nil)

// Commands returns a command store kept in the DB's file, with cfg's clock,
// limits and retention: the records of package command's queues and
// workers. Its accepts and the workers' state changes join a unit of work
// given a [*Tx] of this DB. An accept without a unit of work goes through
// group commit, so concurrent accepts share commits; a state change without
// one runs in a transaction of its own.
func (db *DB) Commands(cfg command.StoreConfig) *command.Store {
	return command.NewStore(&commandRecords{db: db}, cfg)
}

// commandColumns are the columns of a record but its Seq, in the order of
// commandArgs and after the Seq in scanCommand.
const commandColumns = `id, queue, scope, idem_key, fingerprint, type, data, metadata, seq_key, key_hash,
	status, attempts, accepted, updated, not_before, stream, version, pos, pos_minor, location, problem, letter`

const (
	selectCommand = "SELECT seq, " + commandColumns + " FROM recado_commands "
	getCommand    = selectCommand + "WHERE id = ?"
	insertCommand = "INSERT INTO recado_commands (" + commandColumns +
		") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	// updateCommand sets every column but the ID and the idempotency key,
	// which a record keeps for its life.
	updateCommand = `UPDATE recado_commands SET (fingerprint, type, data, metadata, seq_key, key_hash,
	status, attempts, accepted, updated, not_before, stream, version, pos, pos_minor, location, problem, letter) =
	(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) WHERE id = ?`
	// pendingCommands is the SQL form of driver.Query.Match: ?1 the queue,
	// ?2 the partition count, ?3 the owned partitions as a JSON array, ?4
	// the limit. The pending index serves it in Seq order.
	pendingCommands = `SELECT seq, id, queue, scope, idem_key, type, seq_key, key_hash, status, attempts,
	accepted, updated, not_before, stream, version, pos, pos_minor, location, letter
FROM recado_commands INDEXED BY recado_commands_pending
WHERE queue = ?1 AND status <= 2 AND key_hash % ?2 IN (SELECT value FROM json_each(?3))
ORDER BY seq LIMIT ?4`
)

// commandArgs returns the values of rec's columns but its Seq, in the order
// of commandColumns.
func commandArgs(rec *driver.Record) []any {
	var key any // NULL for none: NULLs never collide in the unique constraint
	if rec.IdempotencyKey != "" {
		key = rec.IdempotencyKey
	}
	major, minor := rec.Position.Parts()
	return []any{rec.ID, rec.Queue, rec.Scope, key, rec.Fingerprint, rec.Type, rec.Data,
		rec.Metadata.AppendJSON(nil), rec.Key, int64(rec.KeyHash), int64(rec.Status), int64(rec.Attempts),
		micros(rec.Accepted), micros(rec.Updated), micros(rec.NotBefore), rec.Stream, rec.Version,
		major, minor, rec.Location, rec.Problem, rec.Letter}
}

// scanCommand reads the record of st's row (selectCommand).
func scanCommand(st *sqlite3.Stmt) (driver.Record, error) {
	meta, err := recado.ParseMetadata(st.ColumnRawBlob(8))
	if err != nil {
		return driver.Record{}, fmt.Errorf("command %s: metadata: %w", st.ColumnText(1), err)
	}
	return driver.Record{
		Seq:            uint64(st.ColumnInt64(0)),
		ID:             st.ColumnText(1),
		Queue:          st.ColumnText(2),
		Scope:          st.ColumnText(3),
		IdempotencyKey: st.ColumnText(4), // NULL reads as ""
		Fingerprint:    columnBytes(st, 5),
		Type:           st.ColumnText(6),
		Data:           columnBytes(st, 7),
		Metadata:       meta,
		Key:            st.ColumnText(9),
		KeyHash:        uint32(st.ColumnInt64(10)),
		Status:         driver.Status(st.ColumnInt64(11)),
		Attempts:       int(st.ColumnInt64(12)),
		Accepted:       columnTime(st, 13),
		Updated:        columnTime(st, 14),
		NotBefore:      columnTime(st, 15),
		Stream:         st.ColumnText(16),
		Version:        uint64(st.ColumnInt64(17)),
		Position:       recado.NewPosition(uint64(st.ColumnInt64(18)), uint64(st.ColumnInt64(19))),
		Location:       st.ColumnText(20),
		Problem:        columnBytes(st, 21),
		Letter:         uint64(st.ColumnInt64(22)),
	}, nil
}

// queryCommand reads the first record query returns, if any.
func queryCommand(c *stmtCache, query string, args ...any) (rec driver.Record, found bool, err error) {
	found, err = c.queryRow(query, func(st *sqlite3.Stmt) (err error) {
		rec, err = scanCommand(st)
		return err
	}, args...)
	return rec, found, err
}

// insertRecord inserts rec as a new row and sets its Seq, unless a row with
// its queue, scope and idempotency key is there: then it inserts nothing
// and reports that it did not.
func insertRecord(c *stmtCache, rec *driver.Record) (inserted bool, err error) {
	err = c.exec(insertCommand+" ON CONFLICT (queue, scope, idem_key) DO NOTHING", commandArgs(rec)...)
	if err != nil || c.conn.Changes() != 1 {
		return false, err
	}
	rec.Seq = uint64(c.conn.LastInsertRowID())
	return true, nil
}

// Insert implements [driver.Commands.Insert]: one insert, which stores
// nothing if the key is taken, then, only then, a read of the record that
// holds it.
func (c *commandRecords) Insert(ctx context.Context, tx recado.Tx, rec *driver.Record) (existing driver.Record, found bool, err error) {
	err = c.db.storeWrite(ctx, tx, func(w *writeStmts) error {
		existing, found = driver.Record{}, false // set on every run: the group may run again
		rec.Seq = 0
		inserted, err := insertRecord(&w.cache, rec)
		if err != nil || inserted {
			return err
		}
		existing, found, err = queryCommand(&w.cache, selectCommand+"WHERE queue = ? AND scope = ? AND idem_key = ?",
			rec.Queue, rec.Scope, rec.IdempotencyKey)
		if err == nil && !found {
			err = fmt.Errorf("sqlite: command %s: insert stored nothing, and no record holds its key", rec.ID)
		}
		return err
	})
	if err != nil {
		return driver.Record{}, false, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return existing, found, nil
}

// Update implements [driver.Commands.Update]. In a unit of work fn runs
// under a savepoint, so that an fn that fails leaves nothing of itself in
// the unit; without one, in a transaction of its own (not a group commit:
// the front's fn must run once). Either way the transaction holds the
// file's only writer, which is all the locking the Writer's reads need.
func (c *commandRecords) Update(ctx context.Context, tx recado.Tx, fn func(w driver.Writer) error) error {
	var err error
	if tx != nil {
		err = c.db.writeInTx(ctx, tx, func(w *writeStmts) error {
			return w.inSavepoint(func() error { return fn(recordWriter{w}) })
		})
	} else {
		err = c.db.writeAlone(ctx, func(w *writeStmts) error { return fn(recordWriter{w}) })
	}
	return storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// recordWriter is the [driver.Writer] of one transaction on the writer.
type recordWriter struct{ w *writeStmts }

func (rw recordWriter) Get(id string) (driver.Record, bool, error) {
	return queryCommand(&rw.w.cache, getCommand, id)
}

func (rw recordWriter) Put(rec *driver.Record) error {
	if rec.Seq == 0 {
		inserted, err := insertRecord(&rw.w.cache, rec)
		if err == nil && !inserted {
			err = fmt.Errorf("sqlite: command %s: its idempotency key is taken", rec.ID)
		}
		return err
	}
	args := commandArgs(rec)
	return rw.w.cache.exec(updateCommand, append(args[4:], rec.ID)...)
}

// Get implements [driver.Commands.Get], on a read connection.
func (c *commandRecords) Get(ctx context.Context, id string) (rec driver.Record, found bool, err error) {
	err = c.db.readStore(ctx, func(rc *readConn) (err error) {
		rec, found, err = queryCommand(&rc.cache, getCommand, id)
		return err
	})
	if err != nil {
		return driver.Record{}, false, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return rec, found, nil
}

// Pending implements [driver.Commands.Pending], on a read connection: the
// records come without their data, fingerprint, metadata and problem.
func (c *commandRecords) Pending(ctx context.Context, q driver.Query) (out []driver.Record, err error) {
	owned, err := json.Marshal(q.Owned)
	if err != nil {
		return nil, err
	}
	err = c.db.readStore(ctx, func(rc *readConn) error {
		return rc.cache.queryRows(pendingCommands, func(st *sqlite3.Stmt) (bool, error) {
			out = append(out, driver.Record{
				Seq:            uint64(st.ColumnInt64(0)),
				ID:             st.ColumnText(1),
				Queue:          st.ColumnText(2),
				Scope:          st.ColumnText(3),
				IdempotencyKey: st.ColumnText(4),
				Type:           st.ColumnText(5),
				Key:            st.ColumnText(6),
				KeyHash:        uint32(st.ColumnInt64(7)),
				Status:         driver.Status(st.ColumnInt64(8)),
				Attempts:       int(st.ColumnInt64(9)),
				Accepted:       columnTime(st, 10),
				Updated:        columnTime(st, 11),
				NotBefore:      columnTime(st, 12),
				Stream:         st.ColumnText(13),
				Version:        uint64(st.ColumnInt64(14)),
				Position:       recado.NewPosition(uint64(st.ColumnInt64(15)), uint64(st.ColumnInt64(16))),
				Location:       st.ColumnText(17),
				Letter:         uint64(st.ColumnInt64(18)),
			})
			return true, nil
		}, q.Queue, int64(q.Partitions), owned, int64(q.Limit))
	})
	if err != nil {
		return nil, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return out, nil
}

// Cleanup implements [driver.Commands.Cleanup], in a transaction of its own.
func (c *commandRecords) Cleanup(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = c.db.writeAlone(ctx, func(w *writeStmts) error {
		err := w.cache.exec(`DELETE FROM recado_commands WHERE seq IN
	(SELECT seq FROM recado_commands INDEXED BY recado_commands_final WHERE status >= 3 AND updated < ? LIMIT ?)`,
			micros(before), limit)
		n = int(w.conn.Changes())
		return err
	})
	if err != nil {
		return 0, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return n, nil
}
