package kafka

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/recado-dev/recado/transport"
)

// Publisher produces to the topics with an idempotent producer that waits
// for all in-sync replicas. It implements transport.Publisher.
type Publisher struct {
	opts Options
	cl   *kgo.Client
	adm  *kadm.Client

	mu     sync.Mutex
	topics map[string]bool // made or found
	closed bool
	wg     sync.WaitGroup
}

var _ transport.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher to the brokers. It connects when it
// first publishes.
func NewPublisher(opts Options) (*Publisher, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts.clientOpts()...)
	if err != nil {
		return nil, &transport.Error{Op: "publish", Err: err}
	}
	return &Publisher{opts: opts, cl: cl, adm: kadm.NewClient(cl), topics: map[string]bool{}}, nil
}

// Publish produces msgs to topic, in order, and returns once every broker
// in sync has each. See transport.Publisher.
func (p *Publisher) Publish(ctx context.Context, topic string, msgs ...transport.Message) error {
	fail := func(err error) error { return &transport.Error{Op: "publish", Topic: topic, Err: err} }
	if err := transport.CheckName("topic", topic); err != nil {
		return fail(err)
	}
	for i := range msgs {
		if err := msgs[i].Validate(); err != nil {
			return fail(err)
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fail(transport.ErrClosed)
	}
	p.wg.Add(1)
	known := p.topics[topic]
	p.mu.Unlock()
	defer p.wg.Done()
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if !known {
		if _, err := ensureTopic(ctx, p.adm, topicName(topic), p.opts.Partitions, p.opts.ReplicationFactor); err != nil {
			return fail(brokerError(err))
		}
		p.mu.Lock()
		p.topics[topic] = true
		p.mu.Unlock()
	}
	rs := make([]*kgo.Record, len(msgs))
	for i := range msgs {
		rs[i] = record(topicName(topic), &msgs[i], 0, time.Time{})
	}
	if err := p.cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return fail(brokerError(err))
	}
	return nil
}

// Close waits for publishes under way and closes the client. It is safe to
// call twice.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
	p.cl.Close()
	return nil
}
