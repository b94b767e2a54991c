package sqlite

import (
	"context"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/projection/checkpoint/driver"
)

// checkpoints is the checkpoint store's driver: a row per projection in
// recado_projections and one per partition of each of its copies in
// recado_checkpoints.
type checkpoints struct{ db *DB }

var _ driver.Driver = (*checkpoints)(nil)

// Checkpoints returns the store of projection checkpoints kept in the DB's
// file, with cfg's clock. Its Save and Swap join a unit of work given a
// [*Tx] of this DB, so that a read model in the same file commits with its
// checkpoint; Register, Rebuild and Retired run in a transaction of their
// own. Changed is closed after each commit of this DB that wrote a
// checkpoint or a projection's record, and when the DB closes; other
// processes' commits are left to the front's polling.
func (db *DB) Checkpoints(cfg checkpoint.Config) *checkpoint.Store {
	return checkpoint.New(&checkpoints{db: db}, cfg)
}

// Update implements [driver.Driver.Update]. In a unit of work fn runs under
// a savepoint, so that an fn that fails leaves nothing of itself in the
// unit; without one, in a transaction of its own. Either way the
// transaction holds the file's only writer until it ends: no other
// transaction, in this process or another, writes (or reads on the writer)
// meanwhile, which is all the locking the Writer's reads need. Partitions
// of one projection therefore save one after the other, not side by side;
// on SQLite they share one writer anyway.
func (c *checkpoints) Update(ctx context.Context, rtx recado.Tx, fn func(w driver.Writer) error) error {
	var err error
	if rtx != nil {
		err = c.db.writeInTx(ctx, rtx, func(w *writeStmts) error {
			return w.inSavepoint(func() error { return fn(checkpointWriter{w}) })
		})
		if err == nil {
			rtx.(*Tx).checkpointed = true // writeInTx checked it is ours
		}
	} else {
		err = c.db.writeAlone(ctx, func(w *writeStmts) error { return fn(checkpointWriter{w}) })
		if err == nil {
			c.db.checkpointSig.Notify()
		}
	}
	return storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// Queries of the records. A copy number, a position's parts are unsigned
// 64-bit numbers kept as the signed integer of the same bits.
const (
	getProjection = `SELECT active_copy, active_partitions, building_copy, building_partitions, retiring, updated
FROM recado_projections WHERE name = ?`
	putProjection = `INSERT INTO recado_projections
	(name, active_copy, active_partitions, building_copy, building_partitions, retiring, updated)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET active_copy = excluded.active_copy,
	active_partitions = excluded.active_partitions, building_copy = excluded.building_copy,
	building_partitions = excluded.building_partitions, retiring = excluded.retiring, updated = excluded.updated`
	checkpointColumns = "partition, pos, pos_minor, caught_up, updated"
	getCheckpoint     = "SELECT " + checkpointColumns + " FROM recado_checkpoints WHERE name = ? AND copy = ? AND partition = ?"
	putCheckpoint     = `INSERT INTO recado_checkpoints (name, copy, partition, pos, pos_minor, caught_up, updated)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name, copy, partition) DO UPDATE SET pos = excluded.pos, pos_minor = excluded.pos_minor,
	caught_up = excluded.caught_up, updated = excluded.updated`
	copyCheckpoints = "SELECT " + checkpointColumns + " FROM recado_checkpoints WHERE name = ? AND copy = ? ORDER BY partition"
)

// checkpointWriter is the [driver.Writer] of one transaction on the writer.
type checkpointWriter struct{ w *writeStmts }

func (cw checkpointWriter) Get(name string) (driver.Projection, bool, error) {
	return loadProjection(&cw.w.cache, name)
}

func (cw checkpointWriter) Put(p driver.Projection) error {
	return cw.w.cache.exec(putProjection, p.Name, p.Active.Number, p.Active.Partitions,
		p.Building.Number, p.Building.Partitions, p.Retiring, micros(p.Updated))
}

func (cw checkpointWriter) Checkpoint(name string, copy uint64, partition int) (cp driver.Checkpoint, found bool, err error) {
	found, err = cw.w.cache.queryRow(getCheckpoint, func(st *sqlite3.Stmt) error {
		cp = scanCheckpoint(st, name, copy)
		return nil
	}, name, copy, partition)
	return cp, found, err
}

func (cw checkpointWriter) PutCheckpoint(cp driver.Checkpoint) error {
	major, minor := cp.Position.Parts()
	caught := int64(0)
	if cp.CaughtUp {
		caught = 1
	}
	return cw.w.cache.exec(putCheckpoint, cp.Name, cp.Copy, cp.Partition, major, minor, caught, micros(cp.Updated))
}

func (cw checkpointWriter) DeleteCheckpoints(name string, copy uint64) error {
	return cw.w.cache.exec("DELETE FROM recado_checkpoints WHERE name = ? AND copy = ?", name, copy)
}

// loadProjection reads the record of the projection name on c's connection.
func loadProjection(c *stmtCache, name string) (p driver.Projection, found bool, err error) {
	found, err = c.queryRow(getProjection, func(st *sqlite3.Stmt) error {
		p = driver.Projection{
			Name:     name,
			Active:   driver.Copy{Number: uint64(st.ColumnInt64(0)), Partitions: st.ColumnInt(1)},
			Building: driver.Copy{Number: uint64(st.ColumnInt64(2)), Partitions: st.ColumnInt(3)},
			Retiring: uint64(st.ColumnInt64(4)),
			Updated:  columnTime(st, 5),
		}
		return nil
	}, name)
	return p, found, err
}

// scanCheckpoint reads the checkpoint of st's row (checkpointColumns).
func scanCheckpoint(st *sqlite3.Stmt, name string, copy uint64) driver.Checkpoint {
	return driver.Checkpoint{
		Name:      name,
		Copy:      copy,
		Partition: st.ColumnInt(0),
		Position:  recado.NewPosition(uint64(st.ColumnInt64(1)), uint64(st.ColumnInt64(2))),
		CaughtUp:  st.ColumnInt64(3) != 0,
		Updated:   columnTime(st, 4),
	}
}

// Get implements [driver.Driver.Get], on a read connection.
func (c *checkpoints) Get(ctx context.Context, name string) (p driver.Projection, found bool, err error) {
	err = c.db.readStore(ctx, func(rc *readConn) (err error) {
		p, found, err = loadProjection(&rc.cache, name)
		return err
	})
	return p, found, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
}

// Checkpoints implements [driver.Driver.Checkpoints], on a read connection.
func (c *checkpoints) Checkpoints(ctx context.Context, name string, copy uint64) (out []driver.Checkpoint, err error) {
	err = c.db.readStore(ctx, func(rc *readConn) error {
		out = out[:0] // a read that failed part-way is not kept
		return rc.cache.queryRows(copyCheckpoints, func(st *sqlite3.Stmt) (bool, error) {
			out = append(out, scanCheckpoint(st, name, copy))
			return true, nil
		}, name, copy)
	})
	if err != nil {
		return nil, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return out, nil
}

// Names implements [driver.Driver.Names], on a read connection.
func (c *checkpoints) Names(ctx context.Context) (names []string, err error) {
	err = c.db.readStore(ctx, func(rc *readConn) error {
		return rc.cache.queryRows("SELECT name FROM recado_projections ORDER BY name", func(st *sqlite3.Stmt) (bool, error) {
			names = append(names, st.ColumnText(0))
			return true, nil
		})
	})
	if err != nil {
		return nil, storeErr(err, driver.ErrClosed, driver.ErrForeignTx)
	}
	return names, nil
}

// Changed implements [driver.Driver.Changed].
func (c *checkpoints) Changed() <-chan struct{} { return c.db.checkpointSig.Committed() }
