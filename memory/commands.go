package memory

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/command/driver"
)

// commandRecords is the command store's driver: records by ID, an index of
// idempotency keys, and the set of pending records the workers scan.
type commandRecords struct {
	db      *DB
	recs    *table[string, driver.Record]
	keys    *table[[3]string, string] // (queue, scope, key) to ID
	pending *table[string, struct{}]  // IDs of Accepted and Running records
	last    uint64                    // the highest Seq given, by the unit of work in progress too
}

var _ driver.Commands = (*commandRecords)(nil)

func newCommandRecords(db *DB) *commandRecords {
	return &commandRecords{db: db, recs: newTable[string, driver.Record](),
		keys: newTable[[3]string, string](), pending: newTable[string, struct{}]()}
}

// Commands returns a command store of the DB, with cfg's clock, limits and
// retention: the records of package command's queues and workers. Its
// accepts and the workers' state changes join a unit of work given a [*Tx]
// of this DB.
func (db *DB) Commands(cfg command.StoreConfig) *command.Store {
	return command.NewStore(db.commands, cfg)
}

func idemKey(rec *driver.Record) [3]string {
	return [3]string{rec.Queue, rec.Scope, rec.IdempotencyKey}
}

// Insert implements [driver.Commands.Insert].
func (c *commandRecords) Insert(ctx context.Context, rtx recado.Tx, rec *driver.Record) (existing driver.Record, found bool, err error) {
	err = c.db.writeTo(ctx, rtx, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		if rec.IdempotencyKey != "" {
			if id, ok := c.keys.get(tx, idemKey(rec)); ok {
				existing, found = c.recs.get(tx, id)
				existing = existing.Clone()
				return nil
			}
			c.keys.put(tx, idemKey(rec), rec.ID)
		}
		c.put(tx, rec)
		return nil
	})
	return existing, found, err
}

// put stores rec in the unit of work tx, giving it a Seq if it has none.
func (c *commandRecords) put(tx *Tx, rec *driver.Record) {
	if rec.Seq == 0 {
		last := c.last
		tx.onRollback(func() { c.last = last })
		c.last++
		rec.Seq = c.last
	}
	c.recs.put(tx, rec.ID, rec.Clone())
	_, wasPending := c.pending.get(tx, rec.ID)
	switch {
	case rec.Status.Pending() && !wasPending:
		c.pending.put(tx, rec.ID, struct{}{})
	case !rec.Status.Pending() && wasPending:
		c.pending.del(tx, rec.ID)
	}
}

// Update implements [driver.Commands.Update]. A unit of work holds the DB's
// writer, which is all the locking the Writer's reads need.
func (c *commandRecords) Update(ctx context.Context, rtx recado.Tx, fn func(w driver.Writer) error) error {
	return c.db.writeTo(ctx, rtx, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		return fn(&recordWriter{c: c, tx: tx})
	})
}

type recordWriter struct {
	c  *commandRecords
	tx *Tx
}

func (w *recordWriter) Get(id string) (driver.Record, bool, error) {
	rec, ok := w.c.recs.get(w.tx, id)
	return rec.Clone(), ok, nil
}

func (w *recordWriter) Put(rec *driver.Record) error {
	w.c.put(w.tx, rec)
	return nil
}

// Get implements [driver.Commands.Get].
func (c *commandRecords) Get(ctx context.Context, id string) (rec driver.Record, found bool, err error) {
	err = c.db.read(ctx, driver.ErrClosed, func() { rec, found = c.recs.get(nil, id) })
	return rec.Clone(), found, err
}

// Pending implements [driver.Commands.Pending].
func (c *commandRecords) Pending(ctx context.Context, q driver.Query) (out []driver.Record, err error) {
	err = c.db.read(ctx, driver.ErrClosed, func() {
		for id := range c.pending.committed {
			if rec := c.recs.committed[id]; q.Match(&rec) {
				out = append(out, rec)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b driver.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	out = out[:min(len(out), q.Limit)]
	for i := range out { // the worker reads the rest when it claims them
		out[i].Data, out[i].Fingerprint, out[i].Problem, out[i].Metadata = nil, nil, nil, recado.Metadata{}
	}
	return out, nil
}

// Cleanup implements [driver.Commands.Cleanup].
func (c *commandRecords) Cleanup(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = c.db.writeTo(ctx, nil, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		for id, rec := range c.recs.now {
			if n == limit {
				break
			}
			if rec.Status.Final() && rec.Updated.Before(before) {
				c.recs.del(tx, id)
				if rec.IdempotencyKey != "" {
					c.keys.del(tx, idemKey(&rec))
				}
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
