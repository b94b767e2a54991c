// Package checkpoint keeps how far each projection has read the event
// store's global log: a checkpoint per partition of each copy of its read
// model, and which copy queries read.
//
// A projection runner (package projection) saves its checkpoint with
// [Store.Save] in the unit of work that applies the events, so that the
// read model and the checkpoint commit together. Save refuses a position
// before the stored one ([ErrBackwards]) and a copy that is neither the
// active one nor the one being rebuilt ([ErrRetired]): a runner that has
// missed a rebuild cannot write into a replaced copy.
//
// # Copies and rebuilds
//
// A projection's read model has an active copy (number 1 at first), which
// queries read. [Store.Rebuild] asks for a new copy, built from the start
// of the log beside the active one; [Store.Swap] makes it the active copy
// once each of its partitions has caught up with the log and gone at least
// as far as the active copy, in the unit of work where the application
// switches its queries over. The replaced copy's checkpoints go; its
// number stays in [Projection.Retiring] until its dead letters are retired
// ([Store.Retired]).
//
// Each backend's DB hands out a Store (memory.DB.Checkpoints, ...); the
// rules above hold on every backend because this package applies them once
// over the backend's driver (package checkpoint/driver). Projection names
// are 1 to [MaxNameLen] bytes of UTF-8 without NUL. Every error is an
// [*Error] naming the operation and the projection.
package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/projection/checkpoint/driver"
)

// Limits every backend holds; input beyond them fails with [ErrInvalid].
const (
	// MaxNameLen is the longest projection name, in bytes.
	MaxNameLen = 200
	// MaxPartitions is the most partitions a copy may have.
	MaxPartitions = 1024
)

var (
	// ErrInvalid: the arguments are wrong (an empty or oversized name, a
	// partition out of range, a unit of work of another DB). Nothing was
	// stored.
	ErrInvalid = errors.New("checkpoint: invalid argument")
	// ErrNotFound: the projection has no record: it was never registered.
	ErrNotFound = errors.New("checkpoint: projection not found")
	// ErrRetired: the copy is neither the projection's active copy nor the
	// one being rebuilt: a rebuild replaced it, or it never existed.
	ErrRetired = errors.New("checkpoint: copy retired or unknown")
	// ErrBackwards: the position is before the stored checkpoint.
	ErrBackwards = errors.New("checkpoint: position before the stored checkpoint")
	// ErrNotReady: the copy being rebuilt cannot replace the active one yet
	// (a partition has not caught up, or is behind the active copy).
	ErrNotReady = errors.New("checkpoint: rebuilt copy not ready to replace the active one")
	// ErrClosed: the backend's DB was closed.
	ErrClosed = driver.ErrClosed
)

// Error is the error every call of a [Store] returns.
type Error struct {
	// Op is "register", "get", "names", "checkpoints", "save", "rebuild",
	// "swap" or "retired".
	Op string
	// Name is the projection's name; empty for "names".
	Name string
	Err  error
}

func (e *Error) Error() string {
	if e.Name == "" {
		return "checkpoint: " + e.Op + ": " + e.Err.Error()
	}
	return "checkpoint: " + e.Op + " " + strconv.Quote(e.Name) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Projection is a projection's record: its active copy, the copy being
// rebuilt, the copy being retired. See the fields of driver.Projection.
type Projection = driver.Projection

// Copy is one copy of a projection's read model.
type Copy = driver.Copy

// Checkpoint is how far one partition of one copy has gone. See the fields
// of driver.Checkpoint.
type Checkpoint = driver.Checkpoint

// Role is what a copy is to its projection when a checkpoint of it is
// saved.
type Role uint8

const (
	// Active: the copy queries read.
	Active Role = iota + 1
	// Building: the copy being rebuilt, which queries do not read yet.
	Building
)

func (r Role) String() string {
	switch r {
	case Active:
		return "active"
	case Building:
		return "building"
	}
	return "Role(" + strconv.Itoa(int(r)) + ")"
}

// Config sets a Store's clock. The zero Config is ready to use.
type Config struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store keeps projections' checkpoints. It is safe for concurrent use.
type Store struct {
	d   driver.Driver
	now func() time.Time
}

// New returns the front over d. Backends call it; applications get a Store
// from their backend's DB.
func New(d driver.Driver, cfg Config) *Store {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Store{d: d, now: now}
}

// Register returns the record of the projection name, and creates it, with
// an active copy numbered 1 of the given partitions, if there is none. A
// projection that exists keeps its copies: compare their partitions with
// what the caller wants.
func (s *Store) Register(ctx context.Context, name string, partitions int) (Projection, error) {
	var p Projection
	err := s.update(ctx, "register", name, nil, func(w driver.Writer) error {
		if err := checkPartitions(partitions); err != nil {
			return err
		}
		cur, found, err := w.Get(name)
		if err != nil || found {
			p = cur
			return err
		}
		p = Projection{Name: name, Active: Copy{Number: 1, Partitions: partitions}, Updated: s.clock()}
		return w.Put(p)
	})
	return p, err
}

// Get returns the committed record of the projection name, or [ErrNotFound].
func (s *Store) Get(ctx context.Context, name string) (Projection, error) {
	fail := func(err error) (Projection, error) { return Projection{}, &Error{Op: "get", Name: name, Err: err} }
	if err := checkName(name); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	p, found, err := s.d.Get(ctx, name)
	switch {
	case err != nil:
		return fail(driverError(err))
	case !found:
		return fail(ErrNotFound)
	}
	return p, nil
}

// Names returns the names of every registered projection, sorted.
func (s *Store) Names(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: "names", Err: err}
	}
	names, err := s.d.Names(ctx)
	if err != nil {
		return nil, &Error{Op: "names", Err: driverError(err)}
	}
	return names, nil
}

// Checkpoints returns the committed checkpoints of copy of the projection
// name, one per partition of the copy, in order; a partition that has saved
// none has the zero position. A copy that is neither active nor being
// rebuilt is [ErrRetired].
func (s *Store) Checkpoints(ctx context.Context, name string, copy uint64) ([]Checkpoint, error) {
	fail := func(err error) ([]Checkpoint, error) { return nil, &Error{Op: "checkpoints", Name: name, Err: err} }
	p, err := s.Get(ctx, name)
	if err != nil {
		return fail(errors.Unwrap(err))
	}
	c, _, err := role(p, copy)
	if err != nil {
		return fail(err)
	}
	stored, err := s.d.Checkpoints(ctx, name, copy)
	if err != nil {
		return fail(driverError(err))
	}
	out := make([]Checkpoint, c.Partitions)
	for i := range out {
		out[i] = Checkpoint{Name: name, Copy: copy, Partition: i}
	}
	for _, cp := range stored {
		if cp.Partition >= 0 && cp.Partition < len(out) {
			out[cp.Partition] = cp
		}
	}
	return out, nil
}

// Save stores c (its Name, Copy, Partition, Position and CaughtUp; Updated
// is set to now) in the unit of work tx, or in a transaction of its own
// when tx is nil, and returns what the copy is to the projection. It fails
// with [ErrRetired] if c.Copy is neither the active copy nor the one being
// rebuilt, and with [ErrBackwards] if the stored checkpoint is after
// c.Position. CaughtUp, once saved, stays set. The check holds until tx
// commits: a rebuild cannot replace the copy in between.
func (s *Store) Save(ctx context.Context, tx recado.Tx, c Checkpoint) (Role, error) {
	var r Role
	err := s.update(ctx, "save", c.Name, tx, func(w driver.Writer) error {
		p, found, err := w.Get(c.Name)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		cp, rl, err := role(p, c.Copy)
		if err != nil {
			return err
		}
		if c.Partition < 0 || c.Partition >= cp.Partitions {
			return invalid(fmt.Errorf("partition %d of a copy of %d partitions", c.Partition, cp.Partitions))
		}
		cur, found, err := w.Checkpoint(c.Name, c.Copy, c.Partition)
		if err != nil {
			return err
		}
		if found && c.Position.Before(cur.Position) {
			return fmt.Errorf("%w: partition %d of copy %d is at %s, not moving back to %s",
				ErrBackwards, c.Partition, c.Copy, cur.Position, c.Position)
		}
		c.CaughtUp = c.CaughtUp || cur.CaughtUp
		c.Updated = s.clock()
		r = rl
		return w.PutCheckpoint(c)
	})
	return r, err
}

// Rebuild asks for a new copy of the projection name with the given
// partitions, to be built from the start of the log beside the active copy,
// and returns the record: its Building copy is the new one. If a rebuild is
// under way already, it returns the record unchanged.
func (s *Store) Rebuild(ctx context.Context, name string, partitions int) (Projection, error) {
	var p Projection
	err := s.update(ctx, "rebuild", name, nil, func(w driver.Writer) error {
		if err := checkPartitions(partitions); err != nil {
			return err
		}
		cur, found, err := w.Get(name)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		p = cur
		if p.Building.Number != 0 {
			return nil
		}
		p.Building = Copy{Number: p.Active.Number + 1, Partitions: partitions}
		p.Updated = s.clock()
		return w.Put(p)
	})
	return p, err
}

// Swap makes copy, the one being rebuilt, the active copy of the projection
// name, in the unit of work tx (the one where the application switches its
// queries over to the new copy) or in a transaction of its own, and returns
// the new record. It fails with [ErrNotReady] unless every partition of the
// copy has caught up with the log and is at or after every checkpoint of
// the active copy, so that queries never see the read model go back. The
// replaced copy's checkpoints are deleted and its number is kept in
// Retiring (see [Store.Retired]).
func (s *Store) Swap(ctx context.Context, tx recado.Tx, name string, copy uint64) (Projection, error) {
	var p Projection
	err := s.update(ctx, "swap", name, tx, func(w driver.Writer) error {
		cur, found, err := w.Get(name)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		if copy == 0 || cur.Building.Number != copy {
			return fmt.Errorf("%w: copy %d is not being rebuilt", ErrRetired, copy)
		}
		if err := ready(w, cur); err != nil {
			return err
		}
		p = cur
		p.Retiring, p.Active, p.Building = cur.Active.Number, cur.Building, Copy{}
		p.Updated = s.clock()
		if err := w.Put(p); err != nil {
			return err
		}
		return w.DeleteCheckpoints(name, cur.Active.Number)
	})
	return p, err
}

// ready returns nil if p's building copy may replace its active copy.
func ready(w driver.Writer, p Projection) error {
	var newest recado.Position // the furthest checkpoint of the active copy
	for i := range p.Active.Partitions {
		c, found, err := w.Checkpoint(p.Name, p.Active.Number, i)
		if err != nil {
			return err
		}
		if found && newest.Before(c.Position) {
			newest = c.Position
		}
	}
	for i := range p.Building.Partitions {
		c, found, err := w.Checkpoint(p.Name, p.Building.Number, i)
		switch {
		case err != nil:
			return err
		case !found || !c.CaughtUp:
			return fmt.Errorf("%w: partition %d of copy %d has not caught up with the log", ErrNotReady, i, p.Building.Number)
		case c.Position.Before(newest):
			return fmt.Errorf("%w: partition %d of copy %d is at %s, behind the active copy at %s",
				ErrNotReady, i, p.Building.Number, c.Position, newest)
		}
	}
	return nil
}

// Retired records that the dead letters of copy, the projection's Retiring
// copy, are retired: Retiring goes back to 0. It does nothing if Retiring
// is not copy.
func (s *Store) Retired(ctx context.Context, name string, copy uint64) error {
	return s.update(ctx, "retired", name, nil, func(w driver.Writer) error {
		p, found, err := w.Get(name)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		if copy == 0 || p.Retiring != copy {
			return nil
		}
		p.Retiring, p.Updated = 0, s.clock()
		return w.Put(p)
	})
}

// Changed returns a channel closed after the next commit that may have
// changed a checkpoint, made through this process at least, and when the
// DB closes. Waiters that must also see other processes' commits poll as
// well.
func (s *Store) Changed() <-chan struct{} { return s.d.Changed() }

// role returns the copy numbered n of p and its role, or ErrRetired.
func role(p Projection, n uint64) (Copy, Role, error) {
	switch {
	case n != 0 && n == p.Active.Number:
		return p.Active, Active, nil
	case n != 0 && n == p.Building.Number:
		return p.Building, Building, nil
	}
	return Copy{}, 0, fmt.Errorf("%w: copy %d of a projection whose active copy is %d", ErrRetired, n, p.Active.Number)
}

// update checks name and runs fn in a transaction of the driver.
func (s *Store) update(ctx context.Context, op, name string, tx recado.Tx, fn func(w driver.Writer) error) error {
	fail := func(err error) error { return &Error{Op: op, Name: name, Err: err} }
	if err := checkName(name); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if err := s.d.Update(ctx, tx, fn); err != nil {
		return fail(driverError(err))
	}
	return nil
}

// clock returns now as the stores keep times.
func (s *Store) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

func checkName(name string) error {
	switch {
	case name == "":
		return invalid(errors.New("no projection name"))
	case len(name) > MaxNameLen:
		return invalid(fmt.Errorf("projection name of %d bytes, longer than %d", len(name), MaxNameLen))
	case !utf8.ValidString(name):
		return invalid(errors.New("projection name is not valid UTF-8"))
	case strings.IndexByte(name, 0) >= 0:
		return invalid(errors.New("projection name contains a NUL byte"))
	}
	return nil
}

func checkPartitions(n int) error {
	if n < 1 || n > MaxPartitions {
		return invalid(fmt.Errorf("%d partitions, not in 1..%d", n, MaxPartitions))
	}
	return nil
}

func invalid(err error) error { return fmt.Errorf("%w: %v", ErrInvalid, err) }

// driverError maps a driver's error to what users see.
func driverError(err error) error {
	if errors.Is(err, driver.ErrForeignTx) {
		return invalid(err)
	}
	return err
}
