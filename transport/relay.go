package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/lease"
)

// RelayConfig configures a [Relay]. Store, Publisher, Leases and a Topic or
// Route are required.
type RelayConfig struct {
	// Store is the event store whose committed events the relay publishes.
	Store *eventstore.Store
	// Publisher publishes them; put [Guard] in front of a broker's
	// publisher so that an outage fails fast.
	Publisher Publisher
	// Topic is where every event goes, unless Route is set.
	Topic string
	// Route, if set, returns the topic of each event.
	Route func(e *recado.Event) string
	// Filter selects the events to publish; the zero Filter selects all
	// (but the relays' own checkpoint streams).
	Filter eventstore.Filter
	// Name names the relay: its lease and its checkpoint. Default "relay".
	Name string
	// Checkpoints keeps how far the relay has published. Default
	// StreamCheckpoints(Store).
	Checkpoints Checkpoints
	// Leases makes one relay of a name active at a time; the others stand
	// by and take over when its lease expires.
	Leases *lease.Store
	// Holder names this relay to the lease. Default a new ID.
	Holder string
	// LeaseTTL is how long the lease lasts unless renewed (it is renewed
	// every third of it): how long a standby waits after the active relay
	// died. Default 10 s.
	LeaseTTL time.Duration
	// Batch is the most events published at once. Default 256.
	Batch int
	// Backoff spaces the attempts after a failed publish or checkpoint.
	// Default 100 ms doubling up to 5 s.
	Backoff resilience.Backoff
	// OnPublished, if set, is called after each confirmed, checkpointed
	// batch with its events (for metrics and tests). It must not keep them.
	OnPublished func(events []recado.Event)
	// Logger reports outages and take-overs. Default: none.
	Logger *slog.Logger
}

// Relay is the outbox relay: it subscribes to the event store from its
// checkpoint and publishes each committed event, with the event's ID as the
// message ID and its stream as the key, then advances its checkpoint, only
// after the broker confirmed the publish, in a unit of work fenced by its
// lease. One relay of a name is active at a time; others stand by.
//
// After a crash, the next active relay publishes again at most the batch
// that was not checkpointed (Batch events): the broker's de-duplication
// (NATS) or the consumers' inbox drop the copies. While the broker is down
// the relay retries with back-off and loses nothing.
type Relay struct {
	cfg RelayConfig
	tx  func(ctx context.Context, fn func(recado.Tx) error) error

	mu      sync.Mutex
	running bool
}

// NewRelay returns a relay whose checkpoints commit in units of work of u
// (the DB of cfg.Store, cfg.Leases and cfg.Checkpoints).
func NewRelay[T recado.Tx](u recado.UnitOfWork[T], cfg RelayConfig) (*Relay, error) {
	switch {
	case u == nil || cfg.Store == nil || cfg.Publisher == nil || cfg.Leases == nil:
		return nil, fmt.Errorf("%w: a relay needs a unit of work, a Store, a Publisher and Leases", ErrInvalid)
	case cfg.Route == nil && cfg.Topic == "":
		return nil, fmt.Errorf("%w: a relay needs a Topic or a Route", ErrInvalid)
	case cfg.Batch < 0 || cfg.LeaseTTL < 0:
		return nil, fmt.Errorf("%w: negative Batch or LeaseTTL", ErrInvalid)
	}
	if cfg.Route == nil {
		if err := CheckName("topic", cfg.Topic); err != nil {
			return nil, err
		}
	}
	if err := cfg.Backoff.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if cfg.Name == "" {
		cfg.Name = "relay"
	}
	if cfg.Checkpoints == nil {
		cfg.Checkpoints = StreamCheckpoints(cfg.Store)
	}
	if cfg.Holder == "" {
		cfg.Holder = recado.NewID()
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.Batch == 0 {
		cfg.Batch = 256
	}
	cfg.Backoff = withDefaults(cfg.Backoff, resilience.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2, Jitter: 0.5})
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tx := func(ctx context.Context, fn func(recado.Tx) error) error {
		return u.Tx(ctx, func(t T) error { return fn(t) })
	}
	return &Relay{cfg: cfg, tx: tx}, nil
}

// errLeaseLost ends a term as the active relay.
var errLeaseLost = errors.New("transport: the relay's lease was lost")

// Run relays until ctx ends, then returns nil: it stands by until it holds
// the lease, publishes while it holds it, and stands by again if it loses
// it. Errors of the store, the broker and the lease are retried.
func (r *Relay) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return &Error{Op: "relay", Err: errors.New("the relay is running already")}
	}
	r.running = true
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.running = false; r.mu.Unlock() }()

	failures := 0
	for ctx.Err() == nil {
		l, err := r.cfg.Leases.Acquire(ctx, r.cfg.Name, r.cfg.Holder, r.cfg.LeaseTTL)
		if err != nil {
			if !errors.Is(err, lease.ErrHeld) && ctx.Err() == nil {
				r.cfg.Logger.Warn("transport: relay cannot acquire its lease", "relay", r.cfg.Name, "error", err)
			}
			sleep(ctx, r.cfg.LeaseTTL/3)
			continue
		}
		r.cfg.Logger.Info("transport: relay active", "relay", r.cfg.Name, "holder", r.cfg.Holder, "token", l.Token)
		err = r.term(ctx, l)
		if ctx.Err() != nil {
			_ = r.cfg.Leases.Release(context.WithoutCancel(ctx), l)
			return nil
		}
		if errors.Is(err, errLeaseLost) {
			r.cfg.Logger.Warn("transport: relay lost its lease", "relay", r.cfg.Name, "holder", r.cfg.Holder)
			failures = 0
			continue
		}
		_ = r.cfg.Leases.Release(ctx, l)
		failures++
		r.cfg.Logger.Warn("transport: relay stopped; it starts again from its checkpoint", "relay", r.cfg.Name, "error", err)
		sleep(ctx, r.cfg.Backoff.Delay(min(failures, 20)))
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// term relays while it holds l: from the checkpoint, batch by batch.
func (r *Relay) term(ctx context.Context, l lease.Lease) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Keep the lease while the subscription waits or the broker is down.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	wg.Go(func() {
		t := time.NewTicker(r.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, err := r.cfg.Leases.Renew(ctx, l, r.cfg.LeaseTTL); err != nil && ctx.Err() == nil {
				if errors.Is(err, lease.ErrLost) {
					cancel(errLeaseLost)
					return
				}
				r.cfg.Logger.Warn("transport: relay cannot renew its lease", "relay", r.cfg.Name, "error", err)
			}
		}
	})

	after, err := r.cfg.Checkpoints.Load(ctx, r.cfg.Name)
	if err != nil {
		return cause(ctx, err)
	}
	var opts []eventstore.SubscribeOption
	if !r.cfg.Filter.IsZero() {
		opts = append(opts, eventstore.WithFilter(r.cfg.Filter))
	}
	opts = append(opts, eventstore.WithBatchSize(r.cfg.Batch))
	batch := make([]recado.Event, 0, r.cfg.Batch)
	var last recado.Position
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := r.publish(ctx, l, batch, last); err != nil {
			return err
		}
		if r.cfg.OnPublished != nil {
			r.cfg.OnPublished(batch)
		}
		clear(batch)
		batch = batch[:0]
		return nil
	}
	for m, err := range r.cfg.Store.Subscribe(ctx, after, opts...) {
		if err != nil {
			return cause(ctx, err)
		}
		switch m.Kind {
		case eventstore.KindEvent:
			if strings.HasPrefix(m.Event.Stream, CheckpointStreamPrefix) {
				continue // a relay's checkpoint: never published (and never checkpointed alone)
			}
			batch = append(batch, m.Event)
			last = m.Position
			if len(batch) == cap(batch) {
				if err := flush(); err != nil {
					return err
				}
			}
		case eventstore.KindCaughtUp:
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return cause(ctx, ctx.Err())
}

// cause returns errLeaseLost if that is why ctx ended, else err.
func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); errors.Is(c, errLeaseLost) {
		return c
	}
	return err
}

// publish publishes batch, retrying until the broker confirms, then saves
// the checkpoint at last, fenced by l.
func (r *Relay) publish(ctx context.Context, l lease.Lease, batch []recado.Event, last recado.Position) error {
	for attempt := 1; ; attempt++ {
		err := r.send(ctx, batch)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return cause(ctx, ctx.Err())
		}
		delay := r.cfg.Backoff.Delay(min(attempt, 20))
		r.cfg.Logger.Warn("transport: relay cannot publish; it tries again", "relay", r.cfg.Name, "events", len(batch), "in", delay, "error", err)
		sleep(ctx, delay)
	}
	for attempt := 1; ; attempt++ {
		err := r.tx(ctx, func(tx recado.Tx) error {
			if err := r.cfg.Leases.Guard(ctx, tx, l); err != nil {
				return err
			}
			return r.cfg.Checkpoints.Save(ctx, tx, r.cfg.Name, last)
		})
		switch {
		case err == nil:
			return nil
		case errors.Is(err, lease.ErrLost):
			return errLeaseLost
		case ctx.Err() != nil:
			return cause(ctx, ctx.Err())
		}
		delay := r.cfg.Backoff.Delay(min(attempt, 20))
		r.cfg.Logger.Warn("transport: relay cannot save its checkpoint; it tries again", "relay", r.cfg.Name, "in", delay, "error", err)
		sleep(ctx, delay)
	}
}

// send publishes batch, each run of events with one topic in one Publish.
func (r *Relay) send(ctx context.Context, batch []recado.Event) error {
	msgs := make([]Message, len(batch))
	for i := range batch {
		msgs[i] = MessageOf(batch[i])
	}
	if r.cfg.Route == nil {
		return r.cfg.Publisher.Publish(ctx, r.cfg.Topic, msgs...)
	}
	start := 0
	for i := 1; i <= len(batch); i++ {
		if i < len(batch) && r.cfg.Route(&batch[i]) == r.cfg.Route(&batch[start]) {
			continue
		}
		if err := r.cfg.Publisher.Publish(ctx, r.cfg.Route(&batch[start]), msgs[start:i]...); err != nil {
			return err
		}
		start = i
	}
	return nil
}
