package deadletter_test

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/deadletter/deadlettertest"
	"github.com/recado-dev/recado/resilience/deadletter/driver"
)

// fake is a driver in a map, without units of work: enough to run the
// suite's rules against the front. Update holds one lock for its whole
// transaction and applies its writes only if fn succeeds.
type fake struct {
	mu      sync.Mutex
	letters map[uint64]driver.Letter
	next    uint64
}

type fakeWriter struct {
	f       *fake
	changed map[uint64]driver.Letter
	next    uint64
}

func (f *fake) Update(ctx context.Context, tx recado.Tx, fn func(w driver.Writer) error) error {
	if tx != nil {
		return driver.ErrForeignTx
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWriter{f: f, changed: map[uint64]driver.Letter{}, next: f.next}
	if err := fn(w); err != nil {
		return err
	}
	maps.Copy(f.letters, w.changed)
	f.next = w.next
	return nil
}

func (w *fakeWriter) Get(id uint64) (driver.Letter, bool, error) {
	if l, ok := w.changed[id]; ok {
		return l, true, nil
	}
	l, ok := w.f.letters[id]
	return l, ok, nil
}

func (w *fakeWriter) Head(source, key string) (driver.Letter, bool, error) {
	var head driver.Letter
	for _, m := range []map[uint64]driver.Letter{w.f.letters, w.changed} {
		for id := range m {
			l, _, _ := w.Get(id)
			if l.Source == source && l.Key == key && l.State.Open() && (head.ID == 0 || l.ID < head.ID) {
				head = l
			}
		}
	}
	return head, head.ID != 0, nil
}

func (w *fakeWriter) Insert(l *driver.Letter) error {
	w.next++
	l.ID = w.next
	w.changed[l.ID] = *l
	return nil
}

func (w *fakeWriter) Update(l *driver.Letter) error {
	w.changed[l.ID] = *l
	return nil
}

func (f *fake) Get(ctx context.Context, id uint64) (driver.Letter, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.letters[id]
	return l, ok, nil
}

func (f *fake) match(q driver.Query) []driver.Letter {
	var out []driver.Letter
	for _, l := range f.letters {
		if q.Match(&l) {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b driver.Letter) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func (f *fake) List(ctx context.Context, q driver.Query) ([]driver.Letter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []driver.Letter
	for _, l := range f.match(q) {
		if l.ID > q.After && len(out) < q.Limit {
			out = append(out, l)
		}
	}
	return out, nil
}

func (f *fake) Groups(ctx context.Context, q driver.Query) ([]driver.Group, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	byKey := map[[2]string]*driver.Group{}
	var groups []*driver.Group
	for _, l := range f.match(q) {
		g := byKey[[2]string{l.Source, l.Error}]
		if g == nil {
			g = &driver.Group{Source: l.Source, Error: l.Error, FirstID: l.ID, FirstFailure: l.FirstFailure}
			byKey[[2]string{l.Source, l.Error}] = g
			groups = append(groups, g)
		}
		g.Count++
		if l.FirstFailure.Before(g.FirstFailure) {
			g.FirstFailure = l.FirstFailure
		}
		if l.LastFailure.After(g.LastFailure) {
			g.LastFailure = l.LastFailure
		}
	}
	slices.SortFunc(groups, func(a, b *driver.Group) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Source, b.Source), cmp.Compare(a.Error, b.Error))
	})
	var out []driver.Group
	for _, g := range groups[:min(len(groups), q.Limit)] {
		out = append(out, *g)
	}
	return out, nil
}

func (f *fake) Blocked(ctx context.Context, source string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	set := map[string]bool{}
	for _, l := range f.letters {
		if l.Source == source && l.Key != "" && l.State.Open() {
			set[l.Key] = true
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}

func (f *fake) Cleanup(ctx context.Context, before time.Time, limit int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for id, l := range f.letters {
		if n < limit && l.State.Final() && l.Handled.Before(before) {
			delete(f.letters, id)
			n++
		}
	}
	return n, nil
}

func TestFake(t *testing.T) {
	deadlettertest.Run(t, func(tb testing.TB, cfg deadletter.Config) deadlettertest.Backend {
		return deadlettertest.Backend{Store: deadletter.New(&fake{letters: map[uint64]driver.Letter{}}, cfg)}
	})
}
