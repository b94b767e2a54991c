package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// MaxLagEvents is the most events Status counts after a checkpoint: a
// larger lag is reported as MaxLagEvents.
const MaxLagEvents = 10_000

// State is what a projection is doing, as its stores tell.
type State uint8

const (
	// Stopped: no runner holds a lease of the active copy's partitions.
	Stopped State = iota + 1
	// CatchingUp: runners hold the active copy's partitions, and events
	// of the log are after its checkpoints.
	CatchingUp
	// Live: the active copy's checkpoints are at the end of the log.
	Live
)

func (s State) String() string {
	switch s {
	case Stopped:
		return "stopped"
	case CatchingUp:
		return "catching up"
	case Live:
		return "live"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Status is a projection's progress, as its stores tell.
type Status struct {
	Name  string
	State State
	// Active is the copy queries read; Building the copy being rebuilt, if
	// any.
	Active   CopyStatus
	Building *CopyStatus
	// Head is the position of the last event of the log.
	Head recado.Position
	// LagEvents counts the events of the log after the active copy's
	// lowest checkpoint (the filter's and other partitions' included), up to
	// MaxLagEvents.
	LagEvents int
	// LagTime is the age of the first event after that checkpoint: how long
	// ago the oldest event still to apply was appended. Zero when none is.
	LagTime time.Duration
	// DeadLetters counts the open dead letters of the active copy (failed,
	// parked, or whose replay is under way).
	DeadLetters int
}

// CopyStatus is the progress of one copy of a projection.
type CopyStatus struct {
	Number uint64
	// Position is the lowest checkpoint of its partitions: every event up
	// to it is applied, or parked in the dead-letter queue.
	Position   recado.Position
	Partitions []PartitionStatus
}

// PartitionStatus is the progress of one partition of a copy.
type PartitionStatus struct {
	Partition int
	// Position is the partition's checkpoint, Updated when it was saved.
	Position recado.Position
	Updated  time.Time
	// CaughtUp reports that the partition has reached the end of the log at
	// least once.
	CaughtUp bool
	// Holder is the runner that holds the partition's lease, if one does.
	Holder string
}

// Monitor reads the progress of projections from their stores, in any
// process: a query service that does not run the projections waits on
// them through it. It is safe for concurrent use.
type Monitor struct {
	s    Stores
	poll time.Duration
}

// NewMonitor returns a monitor over the stores s. Waiting reads the
// checkpoints again when this process commits one, and every pollInterval
// (default 1 s) for the commits of other processes.
func NewMonitor(s Stores, pollInterval time.Duration) (*Monitor, error) {
	if err := s.check(); err != nil {
		return nil, &Error{Op: "new", Err: fmt.Errorf("%w: %v", ErrInvalid, err)}
	}
	if pollInterval <= 0 {
		pollInterval = DefaultPollInterval
	}
	return &Monitor{s: s, poll: pollInterval}, nil
}

// WaitFor waits until the active copy of the projection name has reached
// pos: until each of its partitions has applied every event up to pos, or
// parked it. It returns nil then; a [*ParkedError] at once if the event at
// pos is in the dead-letter queue (the read model will not show it until
// someone replays or discards the letter); or an error wrapping ctx's when
// ctx ends first. A projection not yet registered is waited for.
//
// Pass the position an append returned (its LastPosition), or that a
// command's status reported. A read model that lives in the runner's
// process memory and is updated after commit (tx.OnCommit) is waited for
// with the Runner's WaitFor instead, which sees its updates.
func (m *Monitor) WaitFor(ctx context.Context, name string, pos recado.Position) error {
	return waitFor(ctx, m.s, name, pos, m.poll, nil, nil)
}

// Status returns the progress of the projection name.
func (m *Monitor) Status(ctx context.Context, name string) (Status, error) {
	return status(ctx, m.s, name)
}

// Waiter returns the waiter of the projection name, for package query.
func (m *Monitor) Waiter(name string) *Waiter { return &Waiter{m: m, name: name} }

// Waiter waits for one projection; see [Monitor.Waiter].
type Waiter struct {
	m    *Monitor
	name string
}

// WaitFor is [Monitor.WaitFor] for the waiter's projection.
func (w *Waiter) WaitFor(ctx context.Context, pos recado.Position) error {
	return w.m.WaitFor(ctx, w.name, pos)
}

// WaitFor waits until the projection's active copy has reached pos, as
// [Monitor.WaitFor] does; for the partitions this runner runs, it waits for
// the units of work to have committed and run their OnCommit functions, so
// a read model kept in process memory and updated in them shows pos when
// WaitFor returns.
func (r *Runner[T]) WaitFor(ctx context.Context, pos recado.Position) error {
	return waitFor(ctx, r.s, r.o.Name, pos, r.o.PollInterval, r.localOf, r.sig.wait)
}

// Status returns the projection's progress, as [Monitor.Status] does.
func (r *Runner[T]) Status(ctx context.Context) (Status, error) {
	return status(ctx, r.s, r.o.Name)
}

// waitFor is WaitFor. local, if not nil, tells the positions of the
// partitions this process runs, and changed when they change.
func waitFor(ctx context.Context, s Stores, name string, pos recado.Position, poll time.Duration,
	local func(part) (localState, bool), changed func() <-chan struct{}) error {
	fail := func(err error) error { return &Error{Op: "wait", Projection: name, Err: err} }
	ended := func(p checkpoint.Projection, at recado.Position) error {
		if p.Name == "" {
			return fail(fmt.Errorf("waiting for position %s: the projection is not registered: %w", pos, ctx.Err()))
		}
		return fail(fmt.Errorf("waiting for position %s: reached %s: %w", pos, at, ctx.Err()))
	}
	timer := time.NewTimer(poll)
	defer timer.Stop()
	var last checkpoint.Projection // the record last read
	var at recado.Position         // the position last reached
	for {
		stored := s.Checkpoints.Changed()
		var here <-chan struct{}
		if changed != nil {
			here = changed()
		}
		p, low, err := reached(ctx, s, name, local)
		switch {
		case ctx.Err() != nil:
			return ended(last, at)
		case errors.Is(err, checkpoint.ErrNotFound):
		case err != nil:
			return fail(err)
		case !low.Before(pos):
			return parkedAt(ctx, s, p, pos)
		default:
			last, at = p, low
		}
		timer.Reset(poll)
		select {
		case <-ctx.Done():
			return ended(last, at)
		case <-stored:
		case <-here:
		case <-timer.C:
		}
	}
}

// reached returns the projection's record and the lowest checkpoint of its
// active copy, taking the positions of the partitions local runs from it.
func reached(ctx context.Context, s Stores, name string, local func(part) (localState, bool)) (checkpoint.Projection, recado.Position, error) {
	p, err := s.Checkpoints.Get(ctx, name)
	if err != nil {
		return p, recado.Position{}, err
	}
	cps, err := s.Checkpoints.Checkpoints(ctx, name, p.Active.Number)
	if errors.Is(err, checkpoint.ErrRetired) { // a swap in between: read again
		return reached(ctx, s, name, local)
	}
	if err != nil {
		return p, recado.Position{}, err
	}
	var low recado.Position
	for i, c := range cps {
		at := c.Position
		if local != nil {
			if st, ok := local(part{p.Active.Number, i}); ok {
				at = st.applied
			}
		}
		if i == 0 || at.Before(low) {
			low = at
		}
	}
	return p, low, nil
}

// parkedAt returns a *ParkedError if the event at pos is an open letter of
// p's active copy.
func parkedAt(ctx context.Context, s Stores, p checkpoint.Projection, pos recado.Position) error {
	heads := make(map[string]deadletter.Letter)
	var found *deadletter.Letter
	err := openLetters(ctx, s, Source(p.Name, p.Active.Number), func(l deadletter.Letter) {
		if _, ok := heads[l.Key]; !ok {
			heads[l.Key] = l
		}
		if found == nil && l.Message.Position == pos {
			found = &l
		}
	})
	if err != nil {
		return &Error{Op: "wait", Projection: p.Name, Err: err}
	}
	if found == nil {
		return nil
	}
	head := heads[found.Key]
	if found.Key == "" {
		head = *found
	}
	return &ParkedError{Projection: p.Name, Position: pos, Letter: *found, Head: head}
}

// openLetters calls f with each open letter of source, by ascending ID.
func openLetters(ctx context.Context, s Stores, source string, f func(deadletter.Letter)) error {
	q := deadletter.Query{Source: source, Limit: deadletter.MaxLimit}
	for {
		page, err := s.DeadLetters.List(ctx, q)
		if err != nil {
			return err
		}
		for _, l := range page {
			f(l)
		}
		if len(page) < q.Limit {
			return nil
		}
		q.After = page[len(page)-1].ID
	}
}

func status(ctx context.Context, s Stores, name string) (Status, error) {
	fail := func(err error) (Status, error) { return Status{}, &Error{Op: "status", Projection: name, Err: err} }
	p, err := s.Checkpoints.Get(ctx, name)
	if err != nil {
		return fail(err)
	}
	st := Status{Name: name}
	if st.Active, err = copyStatus(ctx, s, p.Name, p.Active); err != nil {
		return fail(err)
	}
	if p.Building.Number != 0 {
		b, err := copyStatus(ctx, s, p.Name, p.Building)
		if err != nil {
			return fail(err)
		}
		st.Building = &b
	}
	for e, err := range s.Events.ReadAll(ctx, recado.Position{}, eventstore.Backwards(), eventstore.Limit(1)) {
		if err != nil {
			return fail(err)
		}
		st.Head = e.Position
	}
	for e, err := range s.Events.ReadAll(ctx, st.Active.Position, eventstore.Limit(MaxLagEvents)) {
		if err != nil {
			return fail(err)
		}
		if st.LagEvents == 0 {
			st.LagTime = max(time.Since(e.Time), 0)
		}
		st.LagEvents++
	}
	err = openLetters(ctx, s, Source(p.Name, p.Active.Number), func(deadletter.Letter) { st.DeadLetters++ })
	if err != nil {
		return fail(err)
	}
	st.State = Stopped
	for _, ps := range st.Active.Partitions {
		if ps.Holder != "" {
			st.State = CatchingUp
		}
	}
	if st.State == CatchingUp && st.LagEvents == 0 {
		st.State = Live
	}
	return st, nil
}

// copyStatus returns the checkpoints of c and the holders of their leases.
func copyStatus(ctx context.Context, s Stores, name string, c checkpoint.Copy) (CopyStatus, error) {
	cps, err := s.Checkpoints.Checkpoints(ctx, name, c.Number)
	if err != nil {
		return CopyStatus{}, err
	}
	cs := CopyStatus{Number: c.Number, Partitions: make([]PartitionStatus, len(cps))}
	now := s.Leases.Now()
	for i, cp := range cps {
		ps := PartitionStatus{Partition: i, Position: cp.Position, Updated: cp.Updated, CaughtUp: cp.CaughtUp}
		l, err := s.Leases.Get(ctx, LeaseName(name, c.Number, i))
		switch {
		case err == nil && l.HeldAt(now):
			ps.Holder = l.Holder
		case err != nil && !errors.Is(err, lease.ErrNotFound):
			return CopyStatus{}, err
		}
		if i == 0 || cp.Position.Before(cs.Position) {
			cs.Position = cp.Position
		}
		cs.Partitions[i] = ps
	}
	return cs, nil
}
