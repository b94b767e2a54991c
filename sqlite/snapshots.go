package sqlite

import (
	"context"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/command/driver"
)

// snapshots is the snapshot store's driver: a row per stream, its latest
// snapshot, in recado_snapshots.
type snapshots struct{ db *DB }

var _ driver.Snapshots = (*snapshots)(nil)

// Snapshots returns a snapshot store kept in the DB's file, with cfg's
// clock and limit, for package command's repositories. Its Save joins a
// unit of work given a [*Tx] of this DB; without one it goes through group
// commit.
func (db *DB) Snapshots(cfg command.SnapshotConfig) *command.SnapshotStore {
	return command.NewSnapshotStore(&snapshots{db: db}, cfg)
}

const getSnapshot = "SELECT rowid, schema, version, event_id, data, time FROM recado_snapshots WHERE stream = ?"

// querySnapshot reads the snapshot of stream on c's connection, and its
// rowid.
func querySnapshot(c *stmtCache, stream string) (s driver.Snapshot, row int64, found bool, err error) {
	found, err = c.queryRow(getSnapshot, func(st *sqlite3.Stmt) error {
		row = st.ColumnInt64(0)
		s = driver.Snapshot{Stream: stream, Schema: st.ColumnText(1), Version: uint64(st.ColumnInt64(2)),
			EventID: st.ColumnText(3), Data: columnBytes(st, 4), Time: columnTime(st, 5)}
		return nil
	}, stream)
	return s, row, found, err
}

// Save implements [driver.Snapshots.Save]: on the writer, inside the write
// transaction, it reads the stream's row and replaces it when
// [driver.Replaces] says so.
func (s *snapshots) Save(ctx context.Context, tx recado.Tx, snap driver.Snapshot) (stored bool, err error) {
	err = s.db.storeWrite(ctx, tx, func(w *writeStmts) error {
		stored = false // set on every run: the group may run again
		cur, row, found, err := querySnapshot(&w.cache, snap.Stream)
		if err != nil || !driver.Replaces(cur, found, snap) {
			return err
		}
		if found {
			err = w.cache.exec("UPDATE recado_snapshots SET schema = ?, version = ?, event_id = ?, data = ?, time = ? WHERE rowid = ?",
				snap.Schema, snap.Version, snap.EventID, nonNil(snap.Data), micros(snap.Time), row)
		} else {
			err = w.cache.exec("INSERT INTO recado_snapshots (stream, schema, version, event_id, data, time) VALUES (?, ?, ?, ?, ?, ?)",
				snap.Stream, snap.Schema, snap.Version, snap.EventID, nonNil(snap.Data), micros(snap.Time))
		}
		stored = err == nil
		return err
	})
	if err != nil {
		return false, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return stored, nil
}

// Get implements [driver.Snapshots.Get], on a read connection.
func (s *snapshots) Get(ctx context.Context, stream string) (snap driver.Snapshot, found bool, err error) {
	err = s.db.readStore(ctx, func(rc *readConn) (err error) {
		snap, _, found, err = querySnapshot(&rc.cache, stream)
		return err
	})
	if err != nil {
		return driver.Snapshot{}, false, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return snap, found, nil
}

// Delete implements [driver.Snapshots.Delete], through group commit.
func (s *snapshots) Delete(ctx context.Context, stream string) error {
	err := s.db.storeWrite(ctx, nil, func(w *writeStmts) error {
		return w.cache.exec("DELETE FROM recado_snapshots WHERE stream = ?", stream)
	})
	return storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}
