package memory

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/deadletter/driver"
)

// deadLetters is the dead-letter queue's driver: letters by ID. Queries scan
// the letters: the memory backend keeps few.
type deadLetters struct {
	db      *DB
	letters *table[uint64, driver.Letter]
	last    uint64 // the highest ID given, by the unit of work in progress too
}

var _ driver.Driver = (*deadLetters)(nil)

// DeadLetters returns a dead-letter queue of the DB, with cfg's clock and
// retention. Its Add, Park, Delivered and FailedAgain join a unit of work
// given a [*Tx] of this DB.
func (db *DB) DeadLetters(cfg deadletter.Config) *deadletter.Store {
	return deadletter.New(db.deadLetters, cfg)
}

// Update implements [driver.Driver.Update]. A unit of work holds the DB's
// writer, which is all the locking the Writer's reads need.
func (d *deadLetters) Update(ctx context.Context, rtx recado.Tx, fn func(w driver.Writer) error) error {
	return d.db.writeTo(ctx, rtx, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		return fn(&letterWriter{d: d, tx: tx})
	})
}

type letterWriter struct {
	d  *deadLetters
	tx *Tx
}

func (w *letterWriter) Get(id uint64) (driver.Letter, bool, error) {
	l, ok := w.d.letters.get(w.tx, id)
	return detachLetter(l), ok, nil
}

func (w *letterWriter) Head(source, key string) (driver.Letter, bool, error) {
	var head driver.Letter
	for _, l := range w.d.letters.now {
		if l.Source == source && l.Key == key && l.State.Open() && (head.ID == 0 || l.ID < head.ID) {
			head = l
		}
	}
	return detachLetter(head), head.ID != 0, nil
}

func (w *letterWriter) Insert(l *driver.Letter) error {
	last := w.d.last
	w.tx.onRollback(func() { w.d.last = last })
	w.d.last++
	l.ID = w.d.last
	w.d.letters.put(w.tx, l.ID, detachLetter(*l))
	return nil
}

func (w *letterWriter) Update(l *driver.Letter) error {
	w.d.letters.put(w.tx, l.ID, detachLetter(*l))
	return nil
}

// detachLetter returns a copy of l that shares no memory with it.
func detachLetter(l driver.Letter) driver.Letter {
	l.Message.Data = slices.Clone(l.Message.Data)
	l.Message.Metadata.Fields = maps.Clone(l.Message.Metadata.Fields)
	return l
}

// Get implements [driver.Driver.Get].
func (d *deadLetters) Get(ctx context.Context, id uint64) (l driver.Letter, found bool, err error) {
	err = d.db.read(ctx, driver.ErrClosed, func() { l, found = d.letters.get(nil, id) })
	return detachLetter(l), found, err
}

// matching returns the committed letters that match q, by ascending ID.
// db.mu is held.
func (d *deadLetters) matching(q *driver.Query) []driver.Letter {
	var out []driver.Letter
	for _, l := range d.letters.committed {
		if q.Match(&l) {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b driver.Letter) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// List implements [driver.Driver.List].
func (d *deadLetters) List(ctx context.Context, q driver.Query) (out []driver.Letter, err error) {
	err = d.db.read(ctx, driver.ErrClosed, func() {
		for _, l := range d.matching(&q) {
			if l.ID > q.After && len(out) < q.Limit {
				out = append(out, detachLetter(l))
			}
		}
	})
	return out, err
}

// Groups implements [driver.Driver.Groups].
func (d *deadLetters) Groups(ctx context.Context, q driver.Query) (out []driver.Group, err error) {
	err = d.db.read(ctx, driver.ErrClosed, func() {
		index := make(map[[2]string]int)
		for _, l := range d.matching(&q) {
			k := [2]string{l.Source, l.Error}
			i, ok := index[k]
			if !ok {
				i = len(out)
				index[k] = i
				out = append(out, driver.Group{Source: l.Source, Error: l.Error, FirstID: l.ID,
					FirstFailure: l.FirstFailure, LastFailure: l.LastFailure})
			}
			g := &out[i]
			g.Count++
			if l.FirstFailure.Before(g.FirstFailure) {
				g.FirstFailure = l.FirstFailure
			}
			if l.LastFailure.After(g.LastFailure) {
				g.LastFailure = l.LastFailure
			}
		}
	})
	slices.SortFunc(out, func(a, b driver.Group) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Source, b.Source), cmp.Compare(a.Error, b.Error))
	})
	return out[:min(len(out), q.Limit)], err
}

// Blocked implements [driver.Driver.Blocked].
func (d *deadLetters) Blocked(ctx context.Context, source string) (keys []string, err error) {
	err = d.db.read(ctx, driver.ErrClosed, func() {
		set := make(map[string]bool)
		for _, l := range d.letters.committed {
			if l.Source == source && l.Key != "" && l.State.Open() {
				set[l.Key] = true
			}
		}
		keys = slices.Sorted(maps.Keys(set))
	})
	return keys, err
}

// Cleanup implements [driver.Driver.Cleanup].
func (d *deadLetters) Cleanup(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = d.db.writeTo(ctx, nil, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		for id, l := range d.letters.now {
			if n == limit {
				break
			}
			if l.State.Final() && l.Handled.Before(before) {
				d.letters.del(tx, id)
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
