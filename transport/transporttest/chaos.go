package transporttest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/recado-dev/recado/transport"
)

// Chaos sets how often a chaos wrapper misbehaves: each field is a
// probability in [0, 1].
type Chaos struct {
	// Seed makes a run repeatable; 0 picks one at random.
	Seed uint64
	// FailPublish: a publish fails before the broker sees it.
	FailPublish float64
	// LostConfirm: a publish reaches the broker, then fails as if its
	// confirm was lost, so the publisher sends it again.
	LostConfirm float64
	// Drop: a Receive drops the connection: the subscription is closed
	// under the consumer (its unsettled deliveries go back to the broker),
	// and this and later Receives fail with transport.ErrUnavailable, so
	// the consumer must subscribe again.
	Drop float64
	// Duplicate: a delivery is handed out twice (the copy's Ack and Nack do
	// nothing), as a broker does after a lost ack.
	Duplicate float64
	// Reorder: a delivery is held back and handed out after the next one.
	Reorder float64
}

type chaos struct {
	cfg   Chaos
	mu    sync.Mutex
	rnd   *rand.Rand
	count map[*float64]int // faults made, by the field that made them
}

// made reports how many faults of each kind c made.
func (c *chaos) made() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := &c.cfg
	return fmt.Sprintf("%d failed publishes, %d lost confirms, %d dropped connections, %d duplicates, %d reorders",
		c.count[&f.FailPublish], c.count[&f.LostConfirm], c.count[&f.Drop], c.count[&f.Duplicate], c.count[&f.Reorder])
}

func newChaos(cfg Chaos) *chaos {
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &chaos{cfg: cfg, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), count: map[*float64]int{}}
}

// roll reports whether the fault whose probability *p is happens now.
func (c *chaos) roll(p *float64) bool {
	if *p <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rnd.Float64() < *p {
		c.count[p]++
		return true
	}
	return false
}

var errChaos = fmt.Errorf("%w: chaos: connection dropped", transport.ErrUnavailable)

// ChaosPublisher returns p with the publish faults of cfg.
func ChaosPublisher(p transport.Publisher, cfg Chaos) transport.Publisher {
	return &chaosPublisher{p: p, c: newChaos(cfg)}
}

type chaosPublisher struct {
	p transport.Publisher
	c *chaos
}

func (p *chaosPublisher) Publish(ctx context.Context, topic string, msgs ...transport.Message) error {
	if p.c.roll(&p.c.cfg.FailPublish) {
		return &transport.Error{Op: "publish", Topic: topic, Err: errChaos}
	}
	if err := p.p.Publish(ctx, topic, msgs...); err != nil {
		return err
	}
	if p.c.roll(&p.c.cfg.LostConfirm) {
		return &transport.Error{Op: "publish", Topic: topic, Err: fmt.Errorf("%w: chaos: confirm lost", transport.ErrUnavailable)}
	}
	return nil
}

func (p *chaosPublisher) Close() error { return p.p.Close() }

// ChaosSubscriber returns s with the delivery faults of cfg.
func ChaosSubscriber(s transport.Subscriber, cfg Chaos) transport.Subscriber {
	return &chaosSubscriber{s: s, c: newChaos(cfg)}
}

type chaosSubscriber struct {
	s transport.Subscriber
	c *chaos
}

func (s *chaosSubscriber) Subscribe(ctx context.Context, topic, group string) (transport.Subscription, error) {
	sub, err := s.s.Subscribe(ctx, topic, group)
	if err != nil {
		return nil, err
	}
	return &chaosSubscription{sub: sub, c: s.c}, nil
}

func (s *chaosSubscriber) Close() error { return s.s.Close() }

type chaosSubscription struct {
	sub transport.Subscription
	c   *chaos

	mu      sync.Mutex
	dropped bool
	pending []transport.Delivery // handed out next: copies and held-back deliveries
}

func (s *chaosSubscription) Receive(ctx context.Context) (transport.Delivery, error) {
	s.mu.Lock()
	if s.dropped {
		s.mu.Unlock()
		return transport.Delivery{}, &transport.Error{Op: "receive", Err: errChaos}
	}
	if len(s.pending) > 0 {
		d := s.pending[0]
		s.pending = s.pending[1:]
		s.mu.Unlock()
		return d, nil
	}
	s.mu.Unlock()
	if s.c.roll(&s.c.cfg.Drop) {
		s.mu.Lock()
		s.dropped = true
		s.mu.Unlock()
		_ = s.sub.Close()
		return transport.Delivery{}, &transport.Error{Op: "receive", Err: errChaos}
	}
	d, err := s.sub.Receive(ctx)
	if err != nil {
		return d, err
	}
	if s.c.roll(&s.c.cfg.Duplicate) {
		dup := d
		dup.Acker = nopAcker{}
		s.mu.Lock()
		s.pending = append(s.pending, dup)
		s.mu.Unlock()
	}
	if s.c.roll(&s.c.cfg.Reorder) {
		// Hand out the next delivery first, if one comes soon.
		nctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		next, err := s.sub.Receive(nctx)
		cancel()
		if err == nil {
			s.mu.Lock()
			s.pending = append(s.pending, d)
			s.mu.Unlock()
			return next, nil
		}
		if errors.Is(err, transport.ErrClosed) {
			return transport.Delivery{}, err
		}
	}
	return d, nil
}

func (s *chaosSubscription) Close() error { return s.sub.Close() }

type nopAcker struct{}

func (nopAcker) Ack(context.Context) error                 { return nil }
func (nopAcker) Nack(context.Context, time.Duration) error { return nil }
