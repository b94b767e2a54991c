package memory

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// table is the storage of one of the DB's keyed stores (dead letters,
// idempotency keys, inbox entries, leases), joined to units of work: now
// holds every write, those of the unit of work in progress included;
// committed holds what has committed, which readers outside the unit see.
// Only the unit that holds the DB's writer changes now, so the two differ
// only by that unit's writes. db.mu guards both.
type table[K comparable, V any] struct {
	now, committed map[K]V
}

func newTable[K comparable, V any]() *table[K, V] {
	return &table[K, V]{now: make(map[K]V), committed: make(map[K]V)}
}

// get returns the value of k as the unit of work tx sees it, or as committed
// when tx is nil.
func (t *table[K, V]) get(tx *Tx, k K) (V, bool) {
	if tx != nil {
		v, ok := t.now[k]
		return v, ok
	}
	v, ok := t.committed[k]
	return v, ok
}

// view returns the map tx sees: now in a unit of work, committed outside.
func (t *table[K, V]) view(tx *Tx) map[K]V {
	if tx != nil {
		return t.now
	}
	return t.committed
}

// put sets k to v in the unit of work tx.
func (t *table[K, V]) put(tx *Tx, k K, v V) {
	t.change(tx, k)
	t.now[k] = v
}

// del deletes k in the unit of work tx.
func (t *table[K, V]) del(tx *Tx, k K) {
	t.change(tx, k)
	delete(t.now, k)
}

// change registers how to undo and how to publish a change of k about to be
// made in tx.
func (t *table[K, V]) change(tx *Tx, k K) {
	prev, had := t.now[k]
	tx.onRollback(func() {
		if had {
			t.now[k] = prev
		} else {
			delete(t.now, k)
		}
	})
	tx.onPublish(func() {
		if v, ok := t.now[k]; ok {
			t.committed[k] = v
		} else {
			delete(t.committed, k)
		}
	})
}

// read runs f, a read of committed data, under the DB's read lock; it fails
// with closed if the DB is closed.
func (db *DB) read(ctx context.Context, closed error, f func()) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return closed
	}
	f()
	return nil
}

// storeErrors maps the errors of the DB's units of work (eventstore/driver's
// ErrClosed and ErrForeignTx) to those of another store's driver contract.
func storeErrors(err, closed, foreign error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, driver.ErrClosed):
		return closed
	case errors.Is(err, driver.ErrForeignTx):
		detail := strings.TrimPrefix(err.Error(), driver.ErrForeignTx.Error()+": ")
		return fmt.Errorf("%w: %s", foreign, detail)
	}
	return err
}

// writeTo runs f in the unit of work rtx (or one of its own) and maps the
// DB's errors to closed and foreign.
func (db *DB) writeTo(ctx context.Context, rtx recado.Tx, closed, foreign error, f func(tx *Tx) error) error {
	return storeErrors(db.write(ctx, rtx, f), closed, foreign)
}
