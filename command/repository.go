package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// RepositoryConfig sets up a Repository of aggregates whose state is S and
// whose events are E.
type RepositoryConfig[S, E any] struct {
	// Events is the event store the aggregates' streams are in. Required.
	Events *eventstore.Store
	// Registry encodes and decodes the events (values of E's types).
	// Required.
	Registry *recado.Registry
	// Initial returns the state of an aggregate with no events; nil means
	// the zero S. Evolve folds one event into the state. Required. A
	// Decider's Initial and Evolve fit.
	Initial func() S
	Evolve  func(S, E) S

	// Snapshots, if set with SnapshotEvery above zero, keeps the state
	// every SnapshotEvery events, so that a load reads only the events
	// after the latest snapshot. SnapshotSchema names the state's shape
	// ("order/v1"): change it whenever S changes in a way the Registry's
	// codec cannot read old snapshots as, and old snapshots are ignored.
	// A load folds the same state with snapshots as without.
	Snapshots      *SnapshotStore
	SnapshotEvery  int
	SnapshotSchema string

	// ConflictRetries is how many times [Repository.Update] loads and
	// decides again after a conflict. Default 3; negative means none.
	ConflictRetries int
	// Logger receives what callers cannot be told: a snapshot that could
	// not be read or saved (the load or save goes on without it). Nil
	// discards it.
	Logger *slog.Logger
}

// Repository loads aggregates from their streams, folding their events into
// state (from the latest snapshot, when there are snapshots), and appends
// new events with the version it loaded. It is safe for concurrent use.
type Repository[S, E any] struct {
	cfg RepositoryConfig[S, E]
	log *slog.Logger
}

// NewRepository returns a Repository, or an error if cfg lacks what it
// needs.
func NewRepository[S, E any](cfg RepositoryConfig[S, E]) (*Repository[S, E], error) {
	switch {
	case cfg.Events == nil:
		return nil, errors.New("command: RepositoryConfig.Events is required")
	case cfg.Registry == nil:
		return nil, errors.New("command: RepositoryConfig.Registry is required")
	case cfg.Evolve == nil:
		return nil, errors.New("command: RepositoryConfig.Evolve is required")
	case cfg.SnapshotEvery < 0:
		return nil, errors.New("command: RepositoryConfig.SnapshotEvery must be >= 0")
	case cfg.Snapshots != nil && cfg.SnapshotEvery > 0:
		if err := checkName("SnapshotSchema", cfg.SnapshotSchema, MaxSchemaLen); err != nil {
			return nil, fmt.Errorf("command: RepositoryConfig: %v", err)
		}
	}
	if cfg.ConflictRetries == 0 {
		cfg.ConflictRetries = DefaultConflictRetries
	}
	cfg.ConflictRetries = max(cfg.ConflictRetries, 0)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Repository[S, E]{cfg: cfg, log: log}, nil
}

func (r *Repository[S, E]) snapshots() bool { return r.cfg.Snapshots != nil && r.cfg.SnapshotEvery > 0 }

// Load returns the state of the aggregate whose stream is stream and the
// stream's version (0 for a stream with no events, which is not an error).
// A snapshot that does not fit the stream (the stream was deleted and
// written again, or the snapshot cannot be decoded) is ignored.
func (r *Repository[S, E]) Load(ctx context.Context, stream string) (S, uint64, error) {
	state, version, err := r.load(ctx, stream)
	if err != nil {
		return state, 0, &Error{Op: "load", ID: stream, Err: err}
	}
	return state, version, nil
}

func (r *Repository[S, E]) load(ctx context.Context, stream string) (S, uint64, error) {
	if r.snapshots() {
		snap, found, err := r.cfg.Snapshots.Load(ctx, stream, r.cfg.SnapshotSchema)
		if err != nil {
			r.log.WarnContext(ctx, "command: snapshot unreadable; folding the whole stream", "stream", stream, "err", err)
		}
		if found {
			state := initial(r.cfg.Initial)
			if err := r.cfg.Registry.Codec().Unmarshal(snap.Data, &state); err != nil {
				r.log.WarnContext(ctx, "command: snapshot undecodable; folding the whole stream", "stream", stream, "err", err)
			} else if state, version, ok, err := r.foldFrom(ctx, stream, state, &snap); err != nil || ok {
				return state, version, err
			}
		}
	}
	state, version, _, err := r.foldFrom(ctx, stream, initial(r.cfg.Initial), nil)
	return state, version, err
}

// foldFrom folds the events of stream into state: all of them when snap is
// nil, else those after the snapshot's, into the snapshot's state. ok is
// false if the snapshot does not fit the stream: its event is not the one
// at its version.
func (r *Repository[S, E]) foldFrom(ctx context.Context, stream string, state S, snap *Snapshot) (_ S, version uint64, ok bool, err error) {
	var opts []eventstore.ReadOption
	if snap != nil {
		opts = append(opts, eventstore.FromVersion(snap.Version))
	}
	first := true
	for e, err := range r.cfg.Events.ReadStream(ctx, stream, opts...) {
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return initial(r.cfg.Initial), 0, true, nil
		}
		if err != nil {
			return state, 0, false, err
		}
		if snap != nil && first {
			first = false
			if e.Version != snap.Version || e.ID != snap.EventID {
				return state, 0, false, nil
			}
			version = e.Version
			continue // folded into the snapshot already
		}
		ev, err := r.decode(e)
		if err != nil {
			return state, 0, false, err
		}
		state, version = r.cfg.Evolve(state, ev), e.Version
	}
	if snap != nil && first {
		return state, 0, false, nil // the stream is shorter than the snapshot
	}
	return state, version, true, nil
}

func (r *Repository[S, E]) decode(e recado.Event) (E, error) {
	var zero E
	v, err := r.cfg.Registry.Decode(e)
	if err != nil {
		return zero, err
	}
	ev, ok := v.(E)
	if !ok {
		return zero, fmt.Errorf("event %s of stream %s is a %T, not a %s", e.ID, e.Stream, v, reflect.TypeFor[E]())
	}
	return ev, nil
}

// encode returns events as recado events, ready for their IDs and metadata.
func (r *Repository[S, E]) encode(events []E) ([]recado.Event, error) {
	out := make([]recado.Event, len(events))
	for i, e := range events {
		typ, data, err := r.cfg.Registry.Encode(e)
		if err != nil {
			return nil, err
		}
		out[i] = recado.Event{Type: typ, Data: data}
	}
	return out, nil
}

// decide loads stream, lets decide make events of its state and returns
// them as the result to commit, with the snapshot to save if one is due.
func (r *Repository[S, E]) decide(ctx context.Context, stream string, decide func(S) ([]E, error)) (Result, error) {
	state, version, err := r.load(ctx, stream)
	if err != nil {
		return Result{}, err
	}
	events, err := decide(state)
	if err != nil {
		return Result{}, rejectUnmarked(err)
	}
	encoded, err := r.encode(events)
	if err != nil {
		return Result{}, err
	}
	res := Result{Stream: stream, Expected: eventstore.Exact(version), Events: encoded}
	n := uint64(r.cfg.SnapshotEvery)
	if r.snapshots() && len(events) > 0 && (version+uint64(len(events)))/n > version/n {
		data, err := r.cfg.Registry.Codec().Marshal(fold(state, r.cfg.Evolve, events))
		if err != nil {
			r.log.WarnContext(ctx, "command: state not encodable; no snapshot", "stream", stream, "err", err)
		} else {
			res.snapshot = &snapshotPlan{store: r.cfg.Snapshots, log: r.log, stream: stream, schema: r.cfg.SnapshotSchema, data: data}
		}
	}
	return res, nil
}

// Update loads the aggregate of stream, lets decide make events of its
// state, and appends them with the version it loaded; if the stream moved
// on meanwhile, it loads and decides again, up to ConflictRetries times,
// then returns the conflict. decide's errors are returned as they are. The
// options [WithID] (the events' IDs derive from it), [WithMetadata] and
// [InTx] apply.
func (r *Repository[S, E]) Update(ctx context.Context, stream string, decide func(S) ([]E, error), opts ...Option) (Outcome, error) {
	o, err := resolve(opts, "dispatch")
	if err != nil {
		return Outcome{}, &Error{Op: "update", ID: stream, Err: err}
	}
	if o.id == "" {
		o.id = recado.NewID()
	}
	c := &Command{ID: o.id, Key: stream, Metadata: o.md, Attempt: 1}
	for try := 0; ; try++ {
		var refused error
		res, err := r.decide(ctx, stream, func(s S) ([]E, error) {
			events, err := decide(s)
			refused = err
			return events, err
		})
		if refused != nil {
			return Outcome{ID: o.id}, refused
		}
		if err != nil {
			return Outcome{ID: o.id}, &Error{Op: "update", ID: stream, Err: err}
		}
		out, err := commit(ctx, r.cfg.Events, c, &res, o.tx)
		if err == nil {
			saveSnapshot(ctx, o.tx, &res, out)
			return out, nil
		}
		if !errors.Is(err, eventstore.ErrConflict) || o.tx != nil || try >= r.cfg.ConflictRetries {
			return out, &Error{Op: "update", ID: stream, Err: err}
		}
	}
}

// Decide returns the Handle function of a [Route] for commands of type C
// that act on the aggregates of r: it loads the aggregate whose stream is
// the command's key, calls decide with its state and the command, and
// returns the events decide made, to be appended with the loaded version.
// decide's errors refuse the command (see [Reject]). A Decider's Decide
// fits, and so does a method of an [Aggregate]: (*Order).Pay.
func Decide[S, C, E any](r *Repository[S, E], decide func(S, C) ([]E, error)) func(context.Context, *Command, C) (Result, error) {
	return func(ctx context.Context, c *Command, cmd C) (Result, error) {
		if c.Key == "" {
			return Result{}, Reject(invalid("command %s has no key: its Route's Key names the aggregate's stream", c.Type))
		}
		return r.decide(ctx, c.Key, func(s S) ([]E, error) { return decide(s, cmd) })
	}
}

// snapshotPlan is a snapshot a handler's result asks for, saved once its
// events have committed (or in the unit of work they commit in).
type snapshotPlan struct {
	store          *SnapshotStore
	log            *slog.Logger
	stream, schema string
	data           []byte
}

// saveSnapshot saves the snapshot res plans (if any) once its events, which
// went where out says, have committed: now, or when the caller's unit of
// work tx commits. A failure is logged: a snapshot is an optimisation.
func saveSnapshot(ctx context.Context, tx recado.Tx, res *Result, out Outcome) {
	p := res.snapshot
	if p == nil || out.LastVersion == 0 {
		return
	}
	snap := Snapshot{Stream: p.stream, Schema: p.schema, Version: out.LastVersion,
		EventID: res.Events[len(res.Events)-1].ID, Data: p.data}
	save := func(ctx context.Context) {
		if _, err := p.store.Save(ctx, nil, snap); err != nil {
			p.log.WarnContext(ctx, "command: snapshot not saved", "stream", p.stream, "version", snap.Version, "err", err)
		}
	}
	if tx != nil {
		ctx = context.WithoutCancel(ctx)
		tx.OnCommit(func() { save(ctx) })
		return
	}
	save(ctx)
}
