package eventstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sync"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// fakeDriver is the least driver the front's tests need: a log in a slice,
// stream states in a map, decisions by Request.Decide and DecideDelete. It
// keeps the events of a request as the contract allows (they are the front's
// copies); reads hand out copies of its own.
type fakeDriver struct {
	driver.Signal
	mu      sync.Mutex
	log     []recado.Event
	streams map[string]driver.State
	reqs    []*driver.Request // every request the driver got
	read    driver.Read       // the last read's settings
	reads   int               // how many reads the driver was asked for

	err     error                   // when set, every call fails with it
	readErr error                   // when set, reads fail with it once the log is not empty
	silent  bool                    // commits do not wake subscribers: they must poll
	decide  func(r *driver.Request) // when set, decides appends instead of the rules
	after   func(r *driver.Request) // called at the end of each append
}

func newFake() *fakeDriver { return &fakeDriver{streams: map[string]driver.State{}} }

// fakeTx is a unit of work of one fakeDriver.
type fakeTx struct{ d *fakeDriver }

func (fakeTx) OnCommit(func()) {}

func (d *fakeDriver) checkTx(tx recado.Tx) error {
	if tx == nil {
		return nil
	}
	if ft, ok := tx.(fakeTx); !ok || ft.d != d {
		return fmt.Errorf("%w: %T", driver.ErrForeignTx, tx)
	}
	return nil
}

func (d *fakeDriver) Append(ctx context.Context, r *driver.Request) error {
	if d.err != nil {
		return d.err
	}
	if err := d.checkTx(r.Tx); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reqs = append(d.reqs, r)
	if d.after != nil {
		defer d.after(r)
	}
	if d.decide != nil {
		d.decide(r)
		return nil
	}
	var stored []driver.Stored
	for _, e := range d.log {
		if slices.Contains(r.IDs(), e.ID) {
			stored = append(stored, driver.Stored{ID: e.ID, Stream: e.Stream, Version: e.Version, Position: e.Position, Type: e.Type, Data: e.Data})
		}
	}
	if !r.Decide(d.streams[r.Stream], stored) {
		return nil
	}
	for i := range r.Events {
		e := &r.Events[i]
		e.Stream, e.Version, e.Position = r.Stream, r.FirstVersion+uint64(i), recado.NewPosition(uint64(len(d.log)+1), 0)
		d.log = append(d.log, *e)
	}
	r.FirstPosition, r.LastPosition = r.Events[0].Position, r.Events[len(r.Events)-1].Position
	st := d.streams[r.Stream]
	st.Version = r.LastVersion
	d.streams[r.Stream] = st
	if !d.silent {
		d.Notify()
	}
	return nil
}

func (d *fakeDriver) Delete(ctx context.Context, r *driver.Request) error {
	if d.err != nil {
		return d.err
	}
	if err := d.checkTx(r.Tx); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reqs = append(d.reqs, r)
	st := d.streams[r.Stream]
	if !r.DecideDelete(st) {
		return nil
	}
	if r.Tombstone {
		st.Tombstoned = true
	} else {
		st.Start = st.Version
	}
	d.streams[r.Stream] = st
	return nil
}

func (d *fakeDriver) State(ctx context.Context, stream string, tx recado.Tx) (driver.State, error) {
	if d.err != nil {
		return driver.State{}, d.err
	}
	if err := d.checkTx(tx); err != nil {
		return driver.State{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.streams[stream], nil
}

// events returns copies of the logged events that keep, from index i on.
func (d *fakeDriver) events(ctx context.Context, r driver.Read, from int, keep func(*recado.Event) bool) iter.Seq2[recado.Event, error] {
	return func(yield func(recado.Event, error) bool) {
		d.mu.Lock()
		d.read = r
		d.reads++
		var out []recado.Event
		for i := from; i < len(d.log) && (r.Limit == 0 || len(out) < r.Limit); i++ {
			if keep(&d.log[i]) {
				e := d.log[i]
				e.Data = slices.Clone(e.Data)
				e.Metadata.Fields = maps.Clone(e.Metadata.Fields)
				out = append(out, e)
			}
		}
		fail := d.err
		if fail == nil && d.readErr != nil && len(d.log) > 0 {
			fail = d.readErr
		}
		d.mu.Unlock()
		if fail == nil {
			fail = ctx.Err()
		}
		if fail != nil {
			yield(recado.Event{}, fail)
			return
		}
		for _, e := range out {
			if !yield(e, nil) {
				return
			}
		}
	}
}

// ReadStream reads forwards, whatever r says (the front's tests look at r).
func (d *fakeDriver) ReadStream(ctx context.Context, stream string, r driver.Read) iter.Seq2[recado.Event, error] {
	d.mu.Lock()
	st := d.streams[stream]
	d.mu.Unlock()
	if !st.Exists() && d.err == nil {
		err := driver.ErrStreamNotFound
		if st.Tombstoned {
			err = driver.ErrStreamDeleted
		}
		return func(yield func(recado.Event, error) bool) { yield(recado.Event{}, err) }
	}
	return d.events(ctx, r, 0, func(e *recado.Event) bool { return e.Stream == stream && e.Version > st.Start })
}

// ReadAll reads forwards after a position (positions are log indexes + 1).
func (d *fakeDriver) ReadAll(ctx context.Context, after recado.Position, r driver.Read) iter.Seq2[recado.Event, error] {
	major, _ := after.Parts()
	return d.events(ctx, r, int(major), func(*recado.Event) bool { return true })
}

func (d *fakeDriver) Close() error { return nil }

// lastRequest returns the last request the driver got, or nil.
func (d *fakeDriver) lastRequest() *driver.Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.reqs) == 0 {
		return nil
	}
	return d.reqs[len(d.reqs)-1]
}

var errDisk = errors.New("disk on fire")
