package memory

import (
	"cmp"
	"context"
	"maps"
	"slices"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/projection/checkpoint/driver"
)

// checkpoints is the checkpoint store's driver: a record per projection and
// one per partition of each of its copies.
type checkpoints struct {
	db          *DB
	projections *table[string, driver.Projection]
	positions   *table[checkpointKey, driver.Checkpoint]
}

type checkpointKey struct {
	name      string
	copy      uint64
	partition int
}

func newCheckpoints(db *DB) *checkpoints {
	return &checkpoints{db: db, projections: newTable[string, driver.Projection](),
		positions: newTable[checkpointKey, driver.Checkpoint]()}
}

var _ driver.Driver = (*checkpoints)(nil)

// Checkpoints returns the DB's store of projection checkpoints, with cfg's
// clock. Its Save and Swap join a unit of work given a [*Tx] of this DB.
func (db *DB) Checkpoints(cfg checkpoint.Config) *checkpoint.Store {
	return checkpoint.New(db.checkpoints, cfg)
}

// Update implements [driver.Driver.Update]. A unit of work holds the DB's
// writer, which is all the locking the Writer's reads need.
func (c *checkpoints) Update(ctx context.Context, rtx recado.Tx, fn func(w driver.Writer) error) error {
	return c.db.writeTo(ctx, rtx, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		return fn(&checkpointWriter{c: c, tx: tx})
	})
}

type checkpointWriter struct {
	c  *checkpoints
	tx *Tx
}

func (w *checkpointWriter) Get(name string) (driver.Projection, bool, error) {
	p, ok := w.c.projections.get(w.tx, name)
	return p, ok, nil
}

func (w *checkpointWriter) Put(p driver.Projection) error {
	w.c.projections.put(w.tx, p.Name, p)
	return nil
}

func (w *checkpointWriter) Checkpoint(name string, copy uint64, partition int) (driver.Checkpoint, bool, error) {
	cp, ok := w.c.positions.get(w.tx, checkpointKey{name, copy, partition})
	return cp, ok, nil
}

func (w *checkpointWriter) PutCheckpoint(cp driver.Checkpoint) error {
	w.c.positions.put(w.tx, checkpointKey{cp.Name, cp.Copy, cp.Partition}, cp)
	return nil
}

func (w *checkpointWriter) DeleteCheckpoints(name string, copy uint64) error {
	for k := range w.c.positions.now {
		if k.name == name && k.copy == copy {
			w.c.positions.del(w.tx, k)
		}
	}
	return nil
}

// Get implements [driver.Driver.Get].
func (c *checkpoints) Get(ctx context.Context, name string) (p driver.Projection, found bool, err error) {
	err = c.db.read(ctx, driver.ErrClosed, func() { p, found = c.projections.get(nil, name) })
	return p, found, err
}

// Checkpoints implements [driver.Driver.Checkpoints].
func (c *checkpoints) Checkpoints(ctx context.Context, name string, copy uint64) (out []driver.Checkpoint, err error) {
	err = c.db.read(ctx, driver.ErrClosed, func() {
		for k, cp := range c.positions.committed {
			if k.name == name && k.copy == copy {
				out = append(out, cp)
			}
		}
	})
	slices.SortFunc(out, func(a, b driver.Checkpoint) int { return cmp.Compare(a.Partition, b.Partition) })
	return out, err
}

// Names implements [driver.Driver.Names].
func (c *checkpoints) Names(ctx context.Context) (names []string, err error) {
	err = c.db.read(ctx, driver.ErrClosed, func() { names = slices.Sorted(maps.Keys(c.projections.committed)) })
	return names, err
}

// Changed implements [driver.Driver.Changed]: the DB wakes its waiters
// after every commit that changed something.
func (c *checkpoints) Changed() <-chan struct{} { return c.db.sig.Committed() }
