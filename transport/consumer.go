package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// Handler handles one message. It returns nil when the message's effect is
// done; an error marked permanent (resilience.MarkPermanent) dead-letters the
// message at once; any other error has it delivered again after a back-off,
// and dead-lettered after [ConsumerConfig.MaxAttempts]. A message can arrive
// twice: make the handler idempotent ([Inbox] does).
type Handler func(ctx context.Context, m Message) error

// ConsumerConfig configures a [Consumer]. Only DeadLetters is required.
type ConsumerConfig struct {
	// DeadLetters keeps the messages that failed MaxAttempts times, and
	// the replays operators ask for.
	DeadLetters *deadletter.Store
	// Source names the consumer in its dead letters. Default
	// "transport:<topic>:<group>".
	Source string
	// MaxAttempts is how many deliveries of a message fail before it is
	// dead-lettered. Default 5.
	MaxAttempts int
	// Retries is how many times a failed attempt is retried at once, in the
	// consumer, before the message goes back to the broker: a brief failure
	// then costs no redelivery and does not let the key's later messages
	// overtake it. Default 2; negative means none.
	Retries int
	// RetryBackoff spaces those retries. Default 50 ms doubling, up to
	// 500 ms.
	RetryBackoff resilience.Backoff
	// Backoff is the delay of the n-th redelivery (a nack after attempt n).
	// Default 1 s doubling up to 1 min, jittered by 20%.
	Backoff resilience.Backoff
	// Unordered turns off sequence blocking: by default, a dead-lettered
	// message blocks its key, whose later messages are parked behind it in
	// the dead-letter store until it is replayed or discarded, while other
	// keys flow.
	Unordered bool
	// Workers is how many messages are handled at once, each key always by
	// the same worker, in order. Default 1.
	Workers int
	// Leases, if set, makes the consumer that holds the lease named after
	// Source the one that carries out replay requests (any number of
	// members may run). Without it, each consumer carries them out: run one
	// member of the group, or give Leases.
	Leases *lease.Store
	// Holder names this consumer to the lease. Default a new ID.
	Holder string
	// ReplayInterval is how often the consumer looks for replay requests
	// and renews its lease. Default 2 s.
	ReplayInterval time.Duration
	// StopTimeout is how long handlers under way may run on after Run's
	// context ends, before their context is cancelled too. Default 10 s.
	StopTimeout time.Duration
	// Logger reports what the consumer cannot return (a redelivery, a
	// resubscription). Default: none.
	Logger *slog.Logger
}

// Consumer runs a handler on one consumer group of a topic: it receives,
// handles, acks and nacks, dead-letters what keeps failing, carries out
// replays of its dead letters, and resubscribes after the broker's errors.
// It behaves the same on every broker.
type Consumer struct {
	sub          Subscriber
	topic, group string
	h            Handler
	cfg          ConsumerConfig

	mu      sync.Mutex
	blocked map[string]bool // keys with an open dead letter, as far as this consumer knows
	running bool
}

// NewConsumer returns a consumer of group on topic that runs h.
func NewConsumer(sub Subscriber, topic, group string, h Handler, cfg ConsumerConfig) (*Consumer, error) {
	switch {
	case sub == nil || h == nil:
		return nil, fmt.Errorf("%w: a consumer needs a subscriber and a handler", ErrInvalid)
	case cfg.DeadLetters == nil:
		return nil, fmt.Errorf("%w: ConsumerConfig.DeadLetters is required: a message that keeps failing must be kept", ErrInvalid)
	case cfg.MaxAttempts < 0 || cfg.Workers < 0:
		return nil, fmt.Errorf("%w: negative MaxAttempts or Workers", ErrInvalid)
	}
	for _, n := range [...][2]string{{"topic", topic}, {"group", group}} {
		if err := CheckName(n[0], n[1]); err != nil {
			return nil, err
		}
	}
	for _, b := range [...]resilience.Backoff{cfg.Backoff, cfg.RetryBackoff} {
		if err := b.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if cfg.Source == "" {
		cfg.Source = "transport:" + topic + ":" + group
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	cfg.RetryBackoff = withDefaults(cfg.RetryBackoff, resilience.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, Multiplier: 2, Jitter: 0.5})
	cfg.Backoff = withDefaults(cfg.Backoff, resilience.Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2})
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	if cfg.Holder == "" {
		cfg.Holder = recado.NewID()
	}
	if cfg.ReplayInterval <= 0 {
		cfg.ReplayInterval = 2 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Consumer{sub: sub, topic: topic, group: group, h: h, cfg: cfg}, nil
}

func withDefaults(b, def resilience.Backoff) resilience.Backoff {
	if b.Initial == 0 {
		b.Initial = def.Initial
	}
	if b.Max == 0 {
		b.Max = max(def.Max, b.Initial)
	}
	if b.Multiplier == 0 {
		b.Multiplier = def.Multiplier
	}
	if b.Jitter == 0 {
		b.Jitter = def.Jitter
	}
	return b
}

// Source returns the name the consumer's dead letters carry.
func (c *Consumer) Source() string { return c.cfg.Source }

// Run consumes until ctx ends, then lets the handlers under way finish
// (for up to StopTimeout), settles their deliveries, leaves the group and
// returns nil. It returns an error only for what retrying cannot mend: the
// Subscriber was closed, or the dead-letter store cannot be read at start.
// Run may be called once at a time.
func (c *Consumer) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return &Error{Op: "consume", Topic: c.topic, Err: errors.New("the consumer is running already")}
	}
	c.running = true
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.running = false; c.mu.Unlock() }()

	keys, err := c.cfg.DeadLetters.Blocked(ctx, c.cfg.Source)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return &Error{Op: "consume", Topic: c.topic, Err: err}
	}
	c.mu.Lock()
	c.blocked = make(map[string]bool, len(keys))
	for _, k := range keys {
		c.blocked[k] = true
	}
	c.mu.Unlock()

	// Handlers run on a context that outlives ctx by StopTimeout, so a
	// message under way at shutdown is finished and acked, not redelivered.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(c.cfg.StopTimeout, hcancel) })
	defer stop()

	var wg sync.WaitGroup
	queues := make([]chan Delivery, c.cfg.Workers)
	for i := range queues {
		queues[i] = make(chan Delivery)
		wg.Go(func() {
			for d := range queues[i] {
				c.handle(hctx, d)
			}
		})
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	wg.Go(func() { c.replayLoop(rctx, hctx) })
	sub, err := c.receiveLoop(ctx, queues)
	rcancel()
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	if sub != nil {
		// Closed only now that the handlers under way have settled their
		// deliveries: closing hands back what is unsettled.
		_ = sub.Close()
	}
	return err
}

var seed = maphash.MakeSeed()

// receiveLoop receives and dispatches deliveries until ctx ends, and
// returns the subscription then open, for Run to close.
func (c *Consumer) receiveLoop(ctx context.Context, queues []chan Delivery) (Subscription, error) {
	failures := 0
	for ctx.Err() == nil {
		sub, err := c.sub.Subscribe(ctx, c.topic, c.group)
		if err == nil {
			err = c.drain(ctx, sub, queues)
			if ctx.Err() != nil {
				return sub, nil
			}
			_ = sub.Close()
		}
		switch {
		case ctx.Err() != nil:
			return nil, nil
		case errors.Is(err, ErrClosed):
			return nil, &Error{Op: "consume", Topic: c.topic, Err: err}
		}
		failures++
		delay := c.cfg.Backoff.Delay(min(failures, 10))
		c.cfg.Logger.Warn("transport: consumer resubscribes", "topic", c.topic, "group", c.group, "error", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
	}
	return nil, nil
}

// drain receives from sub until ctx ends or Receive fails.
func (c *Consumer) drain(ctx context.Context, sub Subscription, queues []chan Delivery) error {
	for {
		d, err := sub.Receive(ctx)
		if err != nil {
			return err
		}
		q := queues[0]
		if len(queues) > 1 {
			q = queues[maphash.String(seed, d.Key)%uint64(len(queues))]
		}
		select {
		case q <- d:
		case <-ctx.Done():
			// Not dispatched: hand it back so another member takes it.
			c.settle(d, func(ctx context.Context) error { return d.Nack(ctx, 0) })
			return ctx.Err()
		}
	}
}

// handle runs the handler on d and settles d.
func (c *Consumer) handle(ctx context.Context, d Delivery) {
	if !c.cfg.Unordered && c.isBlocked(d.Key) {
		_, err := c.cfg.DeadLetters.Park(ctx, nil, c.cfg.Source, d.Key, d.Event())
		switch {
		case err == nil:
			c.settle(d, d.Ack)
			return
		case errors.Is(err, deadletter.ErrNotBlocked):
			c.setBlocked(d.Key, false) // replayed or discarded since: deliver it
		default:
			c.cfg.Logger.Warn("transport: cannot park a message behind its key's dead letter", "id", d.ID, "key", d.Key, "error", err)
			c.settle(d, func(ctx context.Context) error { return d.Nack(ctx, c.cfg.Backoff.Delay(d.Attempt)) })
			return
		}
	}
	err := c.call(ctx, d.Message)
	for try := 1; err != nil && try <= c.cfg.Retries && resilience.Classify(err) != resilience.ClassPermanent && ctx.Err() == nil; try++ {
		t := time.NewTimer(c.cfg.RetryBackoff.Delay(try))
		select {
		case <-ctx.Done():
		case <-t.C:
			err = c.call(ctx, d.Message)
		}
		t.Stop()
	}
	switch {
	case err == nil:
		c.settle(d, d.Ack)
	case ctx.Err() != nil:
		// Stopped before the handler finished: deliver it again at once.
		c.settle(d, func(ctx context.Context) error { return d.Nack(ctx, 0) })
	case resilience.Classify(err) == resilience.ClassPermanent || d.Attempt >= c.cfg.MaxAttempts:
		c.deadLetter(ctx, d, err)
	default:
		delay := c.cfg.Backoff.Delay(d.Attempt)
		c.cfg.Logger.Info("transport: message will be delivered again", "id", d.ID, "attempt", d.Attempt, "in", delay, "error", err)
		c.settle(d, func(ctx context.Context) error { return d.Nack(ctx, delay) })
	}
}

// call runs the handler, turning a panic into an error so that the message
// is retried and dead-lettered like any failure instead of killing the
// process over and over.
func (c *Consumer) call(ctx context.Context, m Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("transport: handler panicked: %v", p)
		}
	}()
	return c.h(ctx, m)
}

func (c *Consumer) deadLetter(ctx context.Context, d Delivery, cause error) {
	f := deadletter.Failure{Source: c.cfg.Source, Message: d.Event(), Err: cause, Attempts: d.Attempt}
	if !c.cfg.Unordered {
		f.Key = d.Key
	}
	if _, err := c.cfg.DeadLetters.Add(ctx, nil, f); err != nil {
		// Not kept: the broker keeps it, and it comes back.
		c.cfg.Logger.Error("transport: cannot dead-letter a message", "id", d.ID, "error", err, "cause", cause)
		c.settle(d, func(ctx context.Context) error { return d.Nack(ctx, c.cfg.Backoff.Delay(d.Attempt)) })
		return
	}
	if f.Key != "" {
		c.setBlocked(f.Key, true)
	}
	c.cfg.Logger.Warn("transport: message dead-lettered", "id", d.ID, "source", c.cfg.Source, "attempts", d.Attempt, "error", cause)
	c.settle(d, d.Ack)
}

// settle acks or nacks, even when the handlers' context has ended: a
// settled delivery is not delivered again.
func (c *Consumer) settle(d Delivery, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fn(ctx); err != nil {
		c.cfg.Logger.Warn("transport: cannot settle a delivery; the broker will deliver it again", "id", d.ID, "error", err)
	}
}

func (c *Consumer) isBlocked(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blocked[key]
}

func (c *Consumer) setBlocked(key string, b bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b {
		c.blocked[key] = true
	} else {
		delete(c.blocked, key)
	}
}

// replayLoop carries out replay requests every ReplayInterval, as the
// lease holder when there are leases.
func (c *Consumer) replayLoop(ctx, hctx context.Context) {
	var held lease.Lease
	t := time.NewTicker(c.cfg.ReplayInterval)
	defer t.Stop()
	defer func() {
		if held.Token != 0 {
			_ = c.cfg.Leases.Release(context.WithoutCancel(ctx), held)
		}
	}()
	for {
		if c.cfg.Leases != nil {
			held = c.holdLease(ctx, held)
		}
		if c.cfg.Leases == nil || held.Token != 0 {
			if _, err := c.cfg.DeadLetters.Redeliver(ctx, c.cfg.Source, func(_ context.Context, l deadletter.Letter) error {
				return c.call(hctx, MessageOf(l.Message))
			}); err != nil && ctx.Err() == nil {
				c.cfg.Logger.Warn("transport: replay of dead letters stopped", "source", c.cfg.Source, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// holdLease renews the lease l, or acquires it if l is the zero Lease or
// lost; it returns the zero Lease when another consumer holds it.
func (c *Consumer) holdLease(ctx context.Context, l lease.Lease) lease.Lease {
	ttl := 3 * c.cfg.ReplayInterval
	var err error
	if l.Token != 0 {
		if l, err = c.cfg.Leases.Renew(ctx, l, ttl); err == nil {
			return l
		}
	}
	l, err = c.cfg.Leases.Acquire(ctx, c.cfg.Source, c.cfg.Holder, ttl)
	if err != nil {
		return lease.Lease{}
	}
	return l
}
