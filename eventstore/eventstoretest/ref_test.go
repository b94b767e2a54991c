package eventstoretest_test

import (
	"context"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

// refDriver is the suite's reference backend: the log in a slice, streams'
// states in a map, decisions by Request.Decide and DecideDelete, one writer
// at a time (a plain append, a delete or a whole unit of work), readers that
// see only what was committed. bug names a deliberate defect (see
// brokenDrivers), or is empty.
type refDriver struct {
	driver.Signal
	bug    string
	writer chan struct{} // holds a token while someone writes
	closed chan struct{}
	once   sync.Once

	mu      sync.RWMutex // guards the log and the maps
	log     []recado.Event
	streams map[string]driver.State
	byID    map[string]int   // event ID → index in log
	byName  map[string][]int // stream → indexes in log
	kept    []recado.Event   // the last request's events, for the recycles-request bug
}

func newRefDriver(bug string) *refDriver {
	return &refDriver{bug: bug, writer: make(chan struct{}, 1), closed: make(chan struct{}),
		streams: map[string]driver.State{}, byID: map[string]int{}, byName: map[string][]int{}}
}

// refTx is a unit of work: it holds the writer token; its appends and deletes
// wait in pending and states until it commits.
type refTx struct {
	d        *refDriver
	pending  []recado.Event
	states   map[string]driver.State
	onCommit []func()
	ended    bool
}

func (tx *refTx) OnCommit(f func()) { tx.onCommit = append(tx.onCommit, f) }

func (d *refDriver) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}

// acquire takes the writer token.
func (d *refDriver) acquire(ctx context.Context) error {
	if d.isClosed() {
		return driver.ErrClosed
	}
	select {
	case d.writer <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-d.closed:
		return driver.ErrClosed
	}
}

func (d *refDriver) release() { <-d.writer }

// unit returns the driver's own live unit of work behind tx, or nil for none.
func (d *refDriver) unit(tx recado.Tx) (*refTx, error) {
	if tx == nil {
		return nil, nil
	}
	u, ok := tx.(*refTx)
	if !ok || u.d != d || u.ended {
		return nil, fmt.Errorf("%w: %T", driver.ErrForeignTx, tx)
	}
	return u, nil
}

// Tx runs fn in a unit of work: it commits if fn returns nil and rolls back if
// fn fails or panics.
func (d *refDriver) Tx(ctx context.Context, fn func(tx *refTx) error) error {
	if err := d.acquire(ctx); err != nil {
		return err
	}
	tx := &refTx{d: d, states: map[string]driver.State{}}
	returned := false
	defer func() {
		if !returned { // fn panicked: roll back, and the panic goes on
			tx.ended = true
			if d.bug == "no-rollback" {
				d.commit(tx)
			}
			d.release()
		}
	}()
	err := fn(tx)
	returned = true
	tx.ended = true
	if err != nil && d.bug != "no-rollback" {
		d.release()
		return err
	}
	d.commit(tx)
	d.release()
	d.Notify()
	if err == nil {
		for _, f := range tx.onCommit {
			f()
		}
	}
	return err
}

// commit applies a unit's work. The caller holds the writer token.
func (d *refDriver) commit(tx *refTx) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range tx.pending {
		d.store(e)
	}
	maps.Copy(d.streams, tx.states)
}

// store adds e to the log. The caller holds mu.
func (d *refDriver) store(e recado.Event) {
	d.byID[e.ID] = len(d.log)
	d.byName[e.Stream] = append(d.byName[e.Stream], len(d.log))
	d.log = append(d.log, e)
}

// state is stream's state as tx sees it. The caller holds mu (read).
func (d *refDriver) state(stream string, tx *refTx) driver.State {
	if tx != nil {
		if st, ok := tx.states[stream]; ok {
			return st
		}
	}
	return d.streams[stream]
}

func (d *refDriver) Append(ctx context.Context, r *driver.Request) error {
	tx, err := d.unit(r.Tx)
	if err != nil {
		return err
	}
	if tx == nil {
		if err := d.acquire(ctx); err != nil {
			return err
		}
		defer d.release()
	}
	d.mu.Lock()
	stored := d.decide(r, tx)
	if stored {
		next := len(d.log) + 1
		if tx != nil {
			next += len(tx.pending)
		}
		for i := range r.Events {
			e := &r.Events[i]
			e.Stream, e.Version, e.Position = r.Stream, r.FirstVersion+uint64(i), recado.NewPosition(uint64(next+i), 0)
			switch d.bug {
			case "drops-empty-metadata":
				maps.DeleteFunc(e.Metadata.Fields, func(_, v string) bool { return v == "" })
			case "nanoseconds":
				e.Time = time.Now().UTC()
			}
		}
		r.FirstPosition, r.LastPosition = r.Events[0].Position, r.Events[len(r.Events)-1].Position
		st := d.state(r.Stream, tx)
		st.Version = r.LastVersion
		if tx != nil {
			tx.pending = append(tx.pending, r.Events...)
			tx.states[r.Stream] = st
		} else {
			if d.bug == "recycles-request" { // reuses the last request's buffers
				for _, e := range d.kept {
					clear(e.Data)
				}
				d.kept = r.Events
			}
			for _, e := range r.Events {
				d.store(e)
			}
			d.streams[r.Stream] = st
		}
	}
	d.mu.Unlock()
	if stored && tx == nil {
		d.Notify()
		if err := ctx.Err(); err != nil { // the caller gave up while we committed
			return fmt.Errorf("%w: %w", driver.ErrUnknownOutcome, err)
		}
	}
	return nil
}

// decide gathers the facts and decides r. The caller holds mu.
func (d *refDriver) decide(r *driver.Request, tx *refTx) bool {
	st := d.state(r.Stream, tx)
	var stored []driver.Stored
	for _, id := range r.IDs() {
		e, ok := d.lookup(id, tx)
		if ok {
			stored = append(stored, driver.Stored{ID: e.ID, Stream: e.Stream, Version: e.Version, Position: e.Position, Type: e.Type, Data: e.Data})
		}
	}
	switch d.bug {
	case "ignores-version":
		r.Expected = driver.Expected{}
	case "version-first":
		if !st.Tombstoned && !r.Expected.Holds(st) {
			r.Reset()
			r.State, r.Outcome = st, driver.Conflict
			return false
		}
	}
	return r.Decide(st, stored)
}

// lookup finds a stored event by ID, in the log or the unit's pending events.
func (d *refDriver) lookup(id string, tx *refTx) (recado.Event, bool) {
	if i, ok := d.byID[id]; ok {
		return d.log[i], true
	}
	if tx != nil {
		for _, e := range tx.pending {
			if e.ID == id {
				return e, true
			}
		}
	}
	return recado.Event{}, false
}

func (d *refDriver) Delete(ctx context.Context, r *driver.Request) error {
	tx, err := d.unit(r.Tx)
	if err != nil {
		return err
	}
	if tx == nil {
		if err := d.acquire(ctx); err != nil {
			return err
		}
		defer d.release()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state(r.Stream, tx)
	if d.bug == "delete-version-first" && !st.Tombstoned && !r.Expected.Holds(st) {
		r.Reset()
		r.State, r.Outcome = st, driver.Conflict
		return nil
	}
	if !r.DecideDelete(st) {
		return nil
	}
	if r.Tombstone {
		st.Tombstoned = true
	} else {
		st.Start = st.Version
	}
	if tx != nil {
		tx.states[r.Stream] = st
	} else {
		d.streams[r.Stream] = st
	}
	return nil
}

func (d *refDriver) State(ctx context.Context, stream string, tx recado.Tx) (driver.State, error) {
	u, err := d.unit(tx)
	if err != nil {
		return driver.State{}, err
	}
	if d.isClosed() {
		return driver.State{}, driver.ErrClosed
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	st := d.state(stream, u)
	if d.bug == "state-after-soft-delete" && st.SoftDeleted() {
		st.Start = 0
	}
	return st, nil
}

// read yields copies of the events at the indexes pick chooses, under the
// read lock, or err.
func (d *refDriver) read(ctx context.Context, pick func() ([]int, error)) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		if d.isClosed() {
			yield(recado.Event{}, driver.ErrClosed)
			return
		}
		if err := ctx.Err(); err != nil {
			yield(recado.Event{}, err)
			return
		}
		d.mu.RLock()
		idx, err := pick()
		out := make([]recado.Event, len(idx))
		for i, k := range idx {
			out[i] = d.log[k]
			if d.bug != "reads-alias-storage" {
				out[i].Data = slices.Clone(out[i].Data)
				out[i].Metadata.Fields = maps.Clone(out[i].Metadata.Fields)
			}
			if d.bug == "local-time" {
				out[i].Time = out[i].Time.In(time.FixedZone("CET", 3600))
			}
		}
		d.mu.RUnlock()
		if err != nil {
			yield(recado.Event{}, err)
			return
		}
		for _, e := range out {
			if !yield(e, nil) {
				return
			}
		}
	}
}

// window returns n indexes from..., forwards or backwards, at most limit.
func window(idx []int, backwards bool, limit int) []int {
	if backwards {
		idx = slices.Clone(idx)
		slices.Reverse(idx)
	}
	if limit > 0 && len(idx) > limit {
		idx = idx[:limit]
	}
	return idx
}

func (d *refDriver) ReadStream(ctx context.Context, stream string, r driver.Read) iter.Seq2[recado.Event, error] {
	return d.read(ctx, func() ([]int, error) {
		st := d.streams[stream]
		switch {
		case st.Tombstoned:
			return nil, driver.ErrStreamDeleted
		case !st.Exists():
			return nil, driver.ErrStreamNotFound
		}
		all := d.byName[stream]
		lo := max(st.Start+1, r.From) // first version, forwards
		if r.Backwards {
			hi := st.Version
			if r.From != 0 && r.From < hi {
				hi = r.From
			}
			return window(all[st.Start:max(hi, st.Start)], true, r.Limit), nil
		}
		if lo > st.Version {
			return nil, nil
		}
		return window(all[lo-1:], false, r.Limit), nil
	})
}

func (d *refDriver) ReadAll(ctx context.Context, after recado.Position, r driver.Read) iter.Seq2[recado.Event, error] {
	return d.read(ctx, func() ([]int, error) {
		major, _ := after.Parts()
		at := int(major) // index of the first event after the position
		var idx []int
		if r.Backwards {
			end := len(d.log)
			if major != 0 {
				end = min(at-1, end)
			}
			for i := range max(end, 0) {
				idx = append(idx, i)
			}
			return window(idx, true, r.Limit), nil
		}
		switch {
		case d.bug == "skips-after-checkpoint" && major > 0:
			at++
		case d.bug == "redelivers-checkpoint" && major > 0:
			at--
		}
		for i := at; i < len(d.log); i++ {
			idx = append(idx, i)
		}
		return window(idx, false, r.Limit), nil
	})
}

func (d *refDriver) Close() error {
	d.once.Do(func() {
		close(d.closed)
		d.Notify()
	})
	return nil
}

// newRefBackend returns a backend over a fresh reference driver with bug.
func newRefBackend(tb testing.TB, bug string) eventstoretest.Backend {
	d := newRefDriver(bug)
	tb.Cleanup(func() { _ = d.Close() })
	return eventstoretest.Backend{
		Store:    eventstore.New(d),
		Close:    d.Close,
		Tx:       eventstoretest.UnitOfWork[*refTx](d),
		Features: eventstoretest.Features{Delete: true, UnitOfWork: true, Close: true, LeakCheck: true},
	}
}

// TestReference: the reference backend passes the suite.
func TestReference(t *testing.T) {
	eventstoretest.Run(t, func(tb testing.TB) eventstoretest.Backend { return newRefBackend(tb, "") })
}

func BenchmarkReference(b *testing.B) {
	eventstoretest.Bench(b, func(tb testing.TB) eventstoretest.Backend { return newRefBackend(tb, "") })
}
