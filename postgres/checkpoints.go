package postgres

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/projection/checkpoint/driver"
)

// checkpointV1 creates the checkpoint store: a row per projection (its
// active copy, the copy being rebuilt, the copy being retired) and a row per
// partition of each of its copies. Copy numbers and position parts are kept
// bit for bit in bigints.
const checkpointV1 = `
CREATE TABLE %[1]s.projections (
	name                text COLLATE "C" NOT NULL,
	active_copy         bigint      NOT NULL,
	active_partitions   integer     NOT NULL,
	building_copy       bigint      NOT NULL,
	building_partitions integer     NOT NULL,
	retiring            bigint      NOT NULL,
	updated             timestamptz NOT NULL,
	CONSTRAINT projections_pkey PRIMARY KEY (name)
);
CREATE TABLE %[1]s.projection_checkpoints (
	name      text COLLATE "C" NOT NULL,
	copy      bigint      NOT NULL,
	partition integer     NOT NULL,
	major     bigint      NOT NULL,
	minor     bigint      NOT NULL,
	caught_up boolean     NOT NULL,
	updated   timestamptz NOT NULL,
	CONSTRAINT projection_checkpoints_pkey PRIMARY KEY (name, copy, partition)
);
`

// checkpoints is the checkpoint store's driver.
type checkpoints struct {
	db *DB
	// The statements, on the DB's schema.
	get, getShared, getExclusive, insert, update, upsert    string
	pointLocked, points, insertPoint, updatePoint, upsertPt string
	deletePoints, names                                     string
}

var _ driver.Driver = (*checkpoints)(nil)

// Checkpoints returns the DB's store of projection checkpoints, with cfg's
// clock. Its Save and Swap join a unit of work given a [*Tx] of this DB.
//
// Each change runs in one transaction (the unit's, or a short one of its
// own) that locks what it reads: a Save takes a shared lock on the
// projection's row and an exclusive one on its partition's checkpoint, so
// the partitions of a projection save side by side, and a Swap, a Rebuild
// or a Register, which write the projection's row, wait for the units of
// work in flight (and they for it). A change that finds it must write a
// row it read under a shared lock goes back to a savepoint taken before
// its first statement and starts again with the row locked exclusively, so
// that two such changes never deadlock; so does one whose insert finds the
// row inserted by another transaction meanwhile.
func (db *DB) Checkpoints(cfg checkpoint.Config) *checkpoint.Store {
	return checkpoint.New(newCheckpoints(db), cfg)
}

func newCheckpoints(db *DB) *checkpoints {
	r := strings.NewReplacer("$S", db.schema)
	const cols = `active_copy, active_partitions, building_copy, building_partitions, retiring, updated`
	const pointCols = `major, minor, caught_up, updated`
	get := r.Replace(`SELECT ` + cols + ` FROM $S.projections WHERE name = $1`)
	point := r.Replace(`SELECT ` + pointCols + ` FROM $S.projection_checkpoints WHERE name = $1 AND copy = $2 AND partition = $3`)
	return &checkpoints{db: db,
		get: get,
		// A Save's lock, which other Saves share; the UPDATE of a row
		// (a Swap's, a Rebuild's) waits for it, and it for the UPDATE.
		getShared: get + " FOR SHARE",
		// The lock an UPDATE of the row takes: held from the read, it is
		// never upgraded.
		getExclusive: get + " FOR NO KEY UPDATE",
		// A plain insert: one that finds the row inserted meanwhile fails
		// (projections_pkey), and the change starts again.
		insert: r.Replace(`INSERT INTO $S.projections (name, ` + cols + `) VALUES ($1, $2, $3, $4, $5, $6, $7)`),
		update: r.Replace(`UPDATE $S.projections SET active_copy = $2, active_partitions = $3, building_copy = $4,
building_partitions = $5, retiring = $6, updated = $7 WHERE name = $1`),
		upsert: r.Replace(`INSERT INTO $S.projections (name, ` + cols + `) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (name) DO UPDATE SET active_copy = $2, active_partitions = $3, building_copy = $4,
building_partitions = $5, retiring = $6, updated = $7`),
		pointLocked: point + " FOR NO KEY UPDATE",
		points: r.Replace(`SELECT partition, ` + pointCols + ` FROM $S.projection_checkpoints
WHERE name = $1 AND copy = $2 ORDER BY partition`),
		insertPoint: r.Replace(`INSERT INTO $S.projection_checkpoints (name, copy, partition, ` + pointCols + `)
VALUES ($1, $2, $3, $4, $5, $6, $7)`),
		updatePoint: r.Replace(`UPDATE $S.projection_checkpoints SET major = $4, minor = $5, caught_up = $6, updated = $7
WHERE name = $1 AND copy = $2 AND partition = $3`),
		upsertPt: r.Replace(`INSERT INTO $S.projection_checkpoints (name, copy, partition, ` + pointCols + `)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (name, copy, partition) DO UPDATE SET major = $4, minor = $5, caught_up = $6, updated = $7`),
		deletePoints: r.Replace(`DELETE FROM $S.projection_checkpoints WHERE name = $1 AND copy = $2`),
		names:        r.Replace(`SELECT name FROM $S.projections ORDER BY name`),
	}
}

// checkpointSavepoint is taken before the first statement of every change,
// so that the change can start again (see [DB.Checkpoints]).
const checkpointSavepoint = "recado_checkpoint"

// errUpgrade: the Writer was asked to write a projection's row it read
// under a shared lock. The change starts again with exclusive locks.
var errUpgrade = errors.New("postgres: checkpoint change must lock the projection exclusively")

// Update implements [driver.Driver.Update]: fn runs after a savepoint, in
// tx or in a transaction of its own, and starts again from the savepoint
// when it must (errUpgrade, or an insert that met a row inserted meanwhile).
// The Writer's writes are sent with its next read or with the end of the
// change, to save round trips.
func (c *checkpoints) Update(ctx context.Context, tx recado.Tx, fn func(w driver.Writer) error) error {
	s, err := c.db.session(tx, driver.ErrClosed, driver.ErrForeignTx)
	if err != nil {
		return err
	}
	defer s.close()
	w := &checkpointWriter{ctx: ctx, c: c, s: s}
	for {
		err := fn(w)
		if err == nil {
			err = w.finish()
		}
		if err == nil {
			return nil
		}
		if !w.again(err) {
			return s.fail(err, driver.ErrClosed)
		}
		if err := w.rollback(); err != nil {
			return s.fail(err, driver.ErrClosed)
		}
	}
}

// checkpointWriter is the Writer of one Update.
type checkpointWriter struct {
	ctx       context.Context
	c         *checkpoints
	s         *session
	queued    *pgx.Batch // writes not sent yet
	saved     bool       // the savepoint is taken
	exclusive bool       // Get locks a projection's row for the update
	wrote     bool       // a write was queued
	// What this run of fn read: by projection name, whether its row was
	// found (and under which lock); by checkpoint, whether it was found.
	read   map[string]projectionRead
	points map[pointKey]bool
}

type projectionRead struct{ found, shared bool }

type pointKey struct {
	name      string
	copy      uint64
	partition int
}

// batch returns the batch of the next statement: the queued writes' if any,
// after the savepoint.
func (w *checkpointWriter) batch() *pgx.Batch {
	b := w.queued
	w.queued = nil
	if b == nil {
		b = w.s.batch()
	}
	if !w.saved {
		b.Queue("SAVEPOINT " + checkpointSavepoint)
		w.saved = true
	}
	return b
}

// queue queues a write, sent with the next statement.
func (w *checkpointWriter) queue(sql string, args ...any) {
	if w.queued == nil {
		w.queued = w.batch()
	}
	w.queued.Queue(sql, args...)
	w.wrote = true
}

// finish sends the queued writes: with the commit in a transaction of its
// own, with the savepoint's release in a unit of work (whose commit is the
// commit). Once the change has committed, or when the unit of work does,
// the DB's checkpoint waiters are woken.
func (w *checkpointWriter) finish() error {
	s := w.s
	if s.unit != nil {
		if w.queued == nil {
			return nil // nothing written: the savepoint may stay until the unit ends
		}
		b := w.queued
		w.queued = nil
		b.Queue("RELEASE SAVEPOINT " + checkpointSavepoint)
		if err := s.send(w.ctx, b); err != nil {
			return err
		}
		s.unit.OnCommit(w.c.db.checkpointsChanged.Notify)
		return nil
	}
	b := w.queued
	w.queued = nil
	if err := s.commit(w.ctx, b); err != nil {
		return err
	}
	if w.wrote {
		w.c.db.checkpointsChanged.Notify()
	}
	return nil
}

// again reports whether fn's run that failed with err is to start again,
// and how: after errUpgrade, with exclusive locks.
func (w *checkpointWriter) again(err error) bool {
	if errors.Is(err, errUpgrade) {
		w.exclusive = true
		return true
	}
	var pgErr *pgconn.PgError
	return w.saved && errors.As(err, &pgErr) && pgErr.Code == "23505" &&
		(pgErr.ConstraintName == "projections_pkey" || pgErr.ConstraintName == "projection_checkpoints_pkey")
}

// rollback goes back to the savepoint: what this run of fn locked and wrote
// is undone (the transaction may have failed since; it is usable again).
func (w *checkpointWriter) rollback() error {
	w.queued, w.read, w.points, w.wrote = nil, nil, nil, false
	b := &pgx.Batch{}
	b.Queue("ROLLBACK TO SAVEPOINT " + checkpointSavepoint)
	if err := w.s.send(w.ctx, b); err != nil {
		return err
	}
	w.s.bad = false
	return nil
}

// queryRow sends b with sql and args, a query of at most one row, last, and
// scans the row with scan; it reports whether there was one.
func (w *checkpointWriter) queryRow(b *pgx.Batch, scan func(pgx.Row) error, sql string, args ...any) (found bool, err error) {
	b.Queue(sql, args...).QueryRow(func(row pgx.Row) error {
		err := scan(row)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err := w.s.send(w.ctx, b); err != nil {
		return false, err
	}
	return found, nil
}

// Get implements [driver.Writer.Get]: it locks the projection's row, shared
// on the first run of fn, exclusively once fn has asked to write it.
func (w *checkpointWriter) Get(name string) (driver.Projection, bool, error) {
	sql := w.c.getShared
	if w.exclusive {
		sql = w.c.getExclusive
	}
	p := driver.Projection{Name: name}
	found, err := w.queryRow(w.batch(), func(row pgx.Row) error { return scanProjection(row, &p) }, sql, name)
	if err != nil {
		return driver.Projection{}, false, err
	}
	if w.read == nil {
		w.read = map[string]projectionRead{}
	}
	w.read[name] = projectionRead{found: found, shared: !w.exclusive}
	if !found {
		return driver.Projection{}, false, nil
	}
	return p, true, nil
}

// Put implements [driver.Writer.Put]. A row read under a shared lock is not
// written: fn starts again (errUpgrade).
func (w *checkpointWriter) Put(p driver.Projection) error {
	args := []any{p.Name, int64(p.Active.Number), p.Active.Partitions, int64(p.Building.Number), p.Building.Partitions,
		int64(p.Retiring), p.Updated}
	r, read := w.read[p.Name]
	switch {
	case read && r.shared:
		return errUpgrade
	case read && r.found:
		w.queue(w.c.update, args...)
	case read:
		w.queue(w.c.insert, args...)
	default:
		w.queue(w.c.upsert, args...)
	}
	return nil
}

// Checkpoint implements [driver.Writer.Checkpoint]: it locks the
// checkpoint's row, if there is one, for the update.
func (w *checkpointWriter) Checkpoint(name string, copy uint64, partition int) (driver.Checkpoint, bool, error) {
	c := driver.Checkpoint{Name: name, Copy: copy, Partition: partition}
	found, err := w.queryRow(w.batch(), func(row pgx.Row) error { return scanPoint(row, &c) },
		w.c.pointLocked, name, int64(copy), partition)
	if err != nil {
		return driver.Checkpoint{}, false, err
	}
	if w.points == nil {
		w.points = map[pointKey]bool{}
	}
	w.points[pointKey{name, copy, partition}] = found
	if !found {
		return driver.Checkpoint{}, false, nil
	}
	return c, true, nil
}

// PutCheckpoint implements [driver.Writer.PutCheckpoint].
func (w *checkpointWriter) PutCheckpoint(c driver.Checkpoint) error {
	major, minor := c.Position.Parts()
	args := []any{c.Name, int64(c.Copy), c.Partition, int64(major), int64(minor), c.CaughtUp, c.Updated}
	found, read := w.points[pointKey{c.Name, c.Copy, c.Partition}]
	switch {
	case read && found:
		w.queue(w.c.updatePoint, args...)
	case read:
		w.queue(w.c.insertPoint, args...)
	default:
		w.queue(w.c.upsertPt, args...)
	}
	return nil
}

// DeleteCheckpoints implements [driver.Writer.DeleteCheckpoints].
func (w *checkpointWriter) DeleteCheckpoints(name string, copy uint64) error {
	w.queue(w.c.deletePoints, name, int64(copy))
	return nil
}

// scanProjection scans a projection's row (without its name) into p.
func scanProjection(row pgx.Row, p *driver.Projection) error {
	var active, building, retiring int64
	err := row.Scan(&active, &p.Active.Partitions, &building, &p.Building.Partitions, &retiring, &p.Updated)
	if err != nil {
		return err
	}
	p.Active.Number, p.Building.Number, p.Retiring, p.Updated = uint64(active), uint64(building), uint64(retiring), utc(p.Updated)
	return nil
}

// scanPoint scans a checkpoint's position, flag and time into c.
func scanPoint(row pgx.Row, c *driver.Checkpoint) error {
	var major, minor int64
	if err := row.Scan(&major, &minor, &c.CaughtUp, &c.Updated); err != nil {
		return err
	}
	c.Position, c.Updated = recado.NewPosition(uint64(major), uint64(minor)), utc(c.Updated)
	return nil
}

// Get implements [driver.Driver.Get].
func (c *checkpoints) Get(ctx context.Context, name string) (p driver.Projection, found bool, err error) {
	err = c.db.read(ctx, driver.ErrClosed, func(q querier) error {
		p = driver.Projection{Name: name}
		err := scanProjection(q.QueryRow(ctx, c.get, name), &p)
		if errors.Is(err, pgx.ErrNoRows) {
			p = driver.Projection{}
			return nil
		}
		found = err == nil
		return err
	})
	return p, found, err
}

// Checkpoints implements [driver.Driver.Checkpoints].
func (c *checkpoints) Checkpoints(ctx context.Context, name string, copy uint64) (out []driver.Checkpoint, err error) {
	err = c.db.read(ctx, driver.ErrClosed, func(q querier) error {
		rows, err := q.Query(ctx, c.points, name, int64(copy))
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (driver.Checkpoint, error) {
			cp := driver.Checkpoint{Name: name, Copy: copy}
			var major, minor int64
			err := row.Scan(&cp.Partition, &major, &minor, &cp.CaughtUp, &cp.Updated)
			cp.Position, cp.Updated = recado.NewPosition(uint64(major), uint64(minor)), utc(cp.Updated)
			return cp, err
		})
		return err
	})
	return out, err
}

// Names implements [driver.Driver.Names].
func (c *checkpoints) Names(ctx context.Context) (names []string, err error) {
	err = c.db.read(ctx, driver.ErrClosed, func(q querier) error {
		rows, err := q.Query(ctx, c.names)
		if err != nil {
			return err
		}
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return names, err
}

// Changed implements [driver.Driver.Changed]: the DB wakes its waiters after
// each commit of a change made through it (other processes' commits are
// left to the front's polling), and when it closes.
func (c *checkpoints) Changed() <-chan struct{} {
	ch := c.db.checkpointsChanged.Committed()
	if c.db.closed.Load() { // Close may have woken the waiters before ch was made
		c.db.checkpointsChanged.Notify()
	}
	return ch
}
