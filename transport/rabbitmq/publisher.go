package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/recado-dev/recado/transport"
)

// Publisher publishes to the topics' exchanges, on one channel in confirm
// mode, so that concurrent publishes share the connection and their
// confirms. It implements transport.Publisher.
type Publisher struct {
	conn *conn

	mu       sync.Mutex
	ch       *amqp.Channel   // in confirm mode; nil until opened
	declared map[string]bool // exchanges declared on ch
	closed   bool
	wg       sync.WaitGroup
}

var _ transport.Publisher = (*Publisher)(nil)

// NewPublisher connects to the broker (ctx bounds the first connection;
// later ones are made by themselves).
func NewPublisher(ctx context.Context, opts Options) (*Publisher, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	c, err := dial(ctx, opts)
	if err != nil {
		return nil, &transport.Error{Op: "publish", Err: err}
	}
	return &Publisher{conn: c}, nil
}

// Publish sends msgs to topic's exchange, in order, and returns once the
// broker confirmed each one. See transport.Publisher.
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
	p.mu.Unlock()
	defer p.wg.Done()
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	ch, err := p.channel(topic)
	if err != nil {
		return fail(err)
	}
	ex := exchangeName(topic)
	confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	for i := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, ex, "", false, false, publishing(&msgs[i], 0))
		if err != nil {
			return fail(brokerError(err))
		}
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		acked, err := dc.WaitContext(ctx)
		switch {
		case err != nil:
			return fail(fmt.Errorf("%w: rabbitmq: no confirm: %v", transport.ErrUnavailable, err))
		case !acked && ch.IsClosed():
			return fail(fmt.Errorf("%w: rabbitmq: the channel closed before the broker confirmed", transport.ErrUnavailable))
		case !acked:
			return fail(errors.New("rabbitmq: the broker refused a message (basic.nack)"))
		}
	}
	return nil
}

// channel returns the confirm-mode channel, opened on the current
// connection if need be, with topic's exchange declared on it.
func (p *Publisher) channel(topic string) (*amqp.Channel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == nil || p.ch.IsClosed() {
		ac := p.conn.current()
		if ac == nil || ac.IsClosed() {
			return nil, fmt.Errorf("%w: rabbitmq: not connected", transport.ErrUnavailable)
		}
		ch, err := ac.Channel()
		if err != nil {
			return nil, brokerError(err)
		}
		if err := ch.Confirm(false); err != nil {
			_ = ch.Close()
			return nil, brokerError(err)
		}
		p.ch, p.declared = ch, map[string]bool{}
	}
	if !p.declared[topic] {
		if err := p.ch.ExchangeDeclare(exchangeName(topic), amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
			p.ch = nil // a refused declare closes the channel
			return nil, brokerError(err)
		}
		p.declared[topic] = true
	}
	return p.ch, nil
}

// Close waits for the publishes under way and closes the connection. It is
// safe to call twice.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	ch := p.ch
	p.ch = nil
	p.mu.Unlock()
	if ch != nil {
		_ = ch.Close()
	}
	p.conn.close()
	return nil
}
