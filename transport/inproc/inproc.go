// Package inproc is a broker inside the process: the transport for tests,
// examples and the one-process shop, where every service runs in one binary
// and nothing needs to survive a restart. It keeps the whole contract of
// package transport (consumer groups, acks, nacks with a delay, redelivery
// of what a closing member had not settled) in memory.
//
// A group receives the messages published after its first Subscribe;
// messages published to a topic with no group are dropped. Nothing is kept
// across the process's life: use the event store as the outbox (the relay
// publishes again from its checkpoint) when messages must survive.
package inproc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/recado-dev/recado/transport"
)

// Broker holds topics and their groups. It is safe for concurrent use.
type Broker struct {
	mu     sync.Mutex
	topics map[string]map[string]*group // topic → group name → group
	closed bool
	down   bool
	seq    uint64
	subs   map[*subscription]bool
}

// New returns an empty broker.
func New() *Broker {
	return &Broker{topics: map[string]map[string]*group{}, subs: map[*subscription]bool{}}
}

// Publisher returns a publisher to b. Closing it leaves b open.
func (b *Broker) Publisher() transport.Publisher { return &publisher{b: b} }

// Subscriber returns a subscriber to b, as a connection of its own: closing
// it closes its subscriptions and leaves b open.
func (b *Broker) Subscriber() transport.Subscriber {
	return &subscriber{b: b, subs: map[*subscription]bool{}}
}

// Close closes b: publishers and subscriptions fail with
// transport.ErrClosed, and the messages b held are dropped.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	for _, groups := range b.topics {
		for _, g := range groups {
			g.stopTimers()
			g.wake()
		}
	}
	for s := range b.subs {
		s.closeLocked()
	}
	return nil
}

// SetDown takes b down (true) or brings it back (false), for outage tests:
// while down, Publish fails with transport.ErrUnavailable and Receive
// waits. Nothing held is lost.
func (b *Broker) SetDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = down
	for _, groups := range b.topics {
		for _, g := range groups {
			g.wake()
		}
	}
}

// entry is one message in one group.
type entry struct {
	m          transport.Message
	topic      string
	seq        uint64 // publication order
	deliveries int
	owner      *subscription // holding it, or nil
	timer      *time.Timer   // pending redelivery, or nil
}

type group struct {
	ready    []*entry // in delivery order
	inflight map[*entry]bool
	delayed  map[*entry]bool
	waiting  chan struct{} // closed and replaced when something becomes ready
}

func newGroup() *group {
	return &group{inflight: map[*entry]bool{}, delayed: map[*entry]bool{}, waiting: make(chan struct{})}
}

func (g *group) wake() {
	close(g.waiting)
	g.waiting = make(chan struct{})
}

func (g *group) stopTimers() {
	for e := range g.delayed {
		e.timer.Stop()
	}
}

type publisher struct {
	b      *Broker
	mu     sync.Mutex
	closed bool
}

func (p *publisher) Publish(ctx context.Context, topic string, msgs ...transport.Message) error {
	fail := func(err error) error { return &transport.Error{Op: "publish", Topic: topic, Err: err} }
	if err := transport.CheckName("topic", topic); err != nil {
		return fail(err)
	}
	for i := range msgs {
		if err := msgs[i].Validate(); err != nil {
			return fail(err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case closed || b.closed:
		return fail(transport.ErrClosed)
	case b.down:
		return fail(fmt.Errorf("%w: the in-process broker is down", transport.ErrUnavailable))
	}
	for _, g := range b.topics[topic] {
		for i := range msgs {
			b.seq++
			g.ready = append(g.ready, &entry{m: clone(msgs[i]), topic: topic, seq: b.seq})
		}
		g.wake()
	}
	return nil
}

func (p *publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

// clone returns m with its own Data and Fields, its time in UTC.
func clone(m transport.Message) transport.Message {
	m.Data = slices.Clone(m.Data)
	m.Metadata.Fields = maps.Clone(m.Metadata.Fields)
	if !m.Time.IsZero() {
		m.Time = m.Time.UTC()
	}
	return m
}

type subscriber struct {
	b      *Broker
	subs   map[*subscription]bool // guarded by b.mu
	closed bool                   // guarded by b.mu
}

func (s *subscriber) Subscribe(ctx context.Context, topic, groupName string) (transport.Subscription, error) {
	fail := func(err error) (transport.Subscription, error) {
		return nil, &transport.Error{Op: "subscribe", Topic: topic, Err: err}
	}
	if err := transport.CheckName("topic", topic); err != nil {
		return fail(err)
	}
	if err := transport.CheckName("group", groupName); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed || b.closed {
		return fail(transport.ErrClosed)
	}
	groups := b.topics[topic]
	if groups == nil {
		groups = map[string]*group{}
		b.topics[topic] = groups
	}
	g := groups[groupName]
	if g == nil {
		g = newGroup()
		groups[groupName] = g
	}
	sub := &subscription{b: b, owner: s, g: g, topic: topic, done: make(chan struct{})}
	s.subs[sub] = true
	b.subs[sub] = true
	return sub, nil
}

func (s *subscriber) Close() error {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	s.closed = true
	for sub := range s.subs {
		sub.closeLocked()
	}
	return nil
}

type subscription struct {
	b      *Broker
	owner  *subscriber
	g      *group
	topic  string
	closed bool // guarded by b.mu
	done   chan struct{}
}

func (s *subscription) Receive(ctx context.Context) (transport.Delivery, error) {
	fail := func(err error) (transport.Delivery, error) {
		return transport.Delivery{}, &transport.Error{Op: "receive", Topic: s.topic, Err: err}
	}
	b := s.b
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		b.mu.Lock()
		if s.closed {
			b.mu.Unlock()
			return fail(transport.ErrClosed)
		}
		g := s.g
		if !b.down && len(g.ready) > 0 {
			e := g.ready[0]
			g.ready[0] = nil
			g.ready = g.ready[1:]
			e.deliveries++
			e.owner = s
			g.inflight[e] = true
			d := transport.Delivery{Message: clone(e.m), Topic: e.topic, Attempt: e.deliveries, Acker: &acker{s: s, e: e}}
			b.mu.Unlock()
			return d, nil
		}
		wait := g.waiting
		b.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-s.done:
		case <-wait:
		}
	}
}

func (s *subscription) Close() error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.closeLocked()
	return nil
}

// closeLocked hands the subscription's unsettled deliveries back to the
// front of the group's queue, in the order they were first published.
func (s *subscription) closeLocked() {
	if s.closed {
		return
	}
	s.closed = true
	close(s.done)
	delete(s.b.subs, s)
	delete(s.owner.subs, s)
	g := s.g
	var back []*entry
	for e := range g.inflight {
		if e.owner == s {
			delete(g.inflight, e)
			e.owner = nil
			back = append(back, e)
		}
	}
	if len(back) == 0 {
		return
	}
	slices.SortFunc(back, func(x, y *entry) int { return cmp.Compare(x.seq, y.seq) })
	g.ready = append(back, g.ready...)
	g.wake()
}

var errSettled = errors.New("transport/inproc: the delivery was settled already or handed back")

type acker struct {
	s *subscription
	e *entry
}

func (a *acker) settle() (*group, error) {
	g := a.s.g
	if a.e.owner != a.s || !g.inflight[a.e] {
		return nil, errSettled
	}
	delete(g.inflight, a.e)
	a.e.owner = nil
	return g, nil
}

func (a *acker) Ack(ctx context.Context) error {
	b := a.s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return &transport.Error{Op: "ack", Topic: a.s.topic, Err: transport.ErrClosed}
	}
	if _, err := a.settle(); err != nil {
		return &transport.Error{Op: "ack", Topic: a.s.topic, Err: err}
	}
	return nil
}

func (a *acker) Nack(ctx context.Context, delay time.Duration) error {
	b := a.s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return &transport.Error{Op: "nack", Topic: a.s.topic, Err: transport.ErrClosed}
	}
	g, err := a.settle()
	if err != nil {
		return &transport.Error{Op: "nack", Topic: a.s.topic, Err: err}
	}
	e := a.e
	if delay <= 0 {
		g.ready = append(g.ready, e)
		g.wake()
		return nil
	}
	g.delayed[e] = true
	e.timer = time.AfterFunc(delay, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.closed || !g.delayed[e] {
			return
		}
		delete(g.delayed, e)
		e.timer = nil
		g.ready = append(g.ready, e)
		g.wake()
	})
	return nil
}
