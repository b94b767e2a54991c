package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/recado-dev/recado/transport"
)

// Subscriber joins groups: each subscription is a consumer, on a channel of
// its own, of the group's queue. It implements transport.Subscriber.
type Subscriber struct {
	conn *conn
	opts Options

	mu     sync.Mutex
	subs   map[*subscription]bool
	closed bool
}

var _ transport.Subscriber = (*Subscriber)(nil)

// NewSubscriber connects to the broker (ctx bounds the first connection;
// later ones are made by themselves).
func NewSubscriber(ctx context.Context, opts Options) (*Subscriber, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	c, err := dial(ctx, opts)
	if err != nil {
		return nil, &transport.Error{Op: "subscribe", Err: err}
	}
	return &Subscriber{conn: c, opts: opts, subs: map[*subscription]bool{}}, nil
}

// Subscribe declares topic's exchange and group's queue (with its
// dead-letter queue) and starts consuming it. While the broker is away it
// fails at once with transport.ErrUnavailable. See transport.Subscriber.
func (s *Subscriber) Subscribe(ctx context.Context, topic, group string) (transport.Subscription, error) {
	fail := func(err error) (transport.Subscription, error) {
		return nil, &transport.Error{Op: "subscribe", Topic: topic, Err: err}
	}
	if err := transport.CheckName("topic", topic); err != nil {
		return fail(err)
	}
	if err := transport.CheckName("group", group); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fail(transport.ErrClosed)
	}
	ac := s.conn.current()
	if ac == nil {
		return fail(fmt.Errorf("%w: rabbitmq: not connected", transport.ErrUnavailable))
	}
	sub := &subscription{s: s, topic: topic, queue: queueName(topic, group), done: make(chan struct{})}
	if err := sub.open(ac); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = sub.Close()
		return fail(transport.ErrClosed)
	}
	s.subs[sub] = true
	s.mu.Unlock()
	return sub, nil
}

// declare makes topic's exchange, the dead-letter exchange, and group's
// queue with its dead-letter queue, if they do not exist.
func (s *Subscriber) declare(ch *amqp.Channel, topic, queue string) error {
	typ := amqp.Table{amqp.QueueTypeArg: s.opts.QueueType}
	dead := deadQueueName(queue)
	if err := ch.ExchangeDeclare(exchangeName(topic), amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return err
	}
	if err := ch.ExchangeDeclare(deadExchange, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(dead, true, false, false, false, typ); err != nil {
		return err
	}
	if err := ch.QueueBind(dead, queue, deadExchange, false, nil); err != nil {
		return err
	}
	args := amqp.Table{amqp.QueueTypeArg: s.opts.QueueType, "x-dead-letter-exchange": deadExchange,
		"x-dead-letter-routing-key": queue}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		return err
	}
	return ch.QueueBind(queue, "", exchangeName(topic), false, nil)
}

// Close closes every subscription made through s (their unsettled
// deliveries go back to the queue) and the connection. It is safe to call
// twice.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	for sub := range subs {
		_ = sub.Close()
	}
	s.conn.close()
	return nil
}

// DeleteGroup deletes group's queue on topic, its dead-letter queue and its
// delay queues, with the messages they hold. The group's members stop
// receiving (a subscription declares the queue again when it reconnects).
func (s *Subscriber) DeleteGroup(ctx context.Context, topic, group string) error {
	queue := queueName(topic, group)
	names := []string{queue, deadQueueName(queue)}
	for _, ms := range delaySteps {
		names = append(names, delayQueueName(queue, ms))
	}
	return s.admin(ctx, func(ch *amqp.Channel, name string) error {
		_, err := ch.QueueDelete(name, false, false, false)
		return err
	}, names)
}

// DeleteTopic deletes topic's exchange. Its groups' queues stay.
func (s *Subscriber) DeleteTopic(ctx context.Context, topic string) error {
	return s.admin(ctx, func(ch *amqp.Channel, name string) error {
		return ch.ExchangeDelete(name, false, false)
	}, []string{exchangeName(topic)})
}

// admin calls fn for each name on a channel of its own, which it opens
// again after the broker closed it over a name that did not exist.
func (s *Subscriber) admin(ctx context.Context, fn func(ch *amqp.Channel, name string) error, names []string) error {
	fail := func(err error) error { return &transport.Error{Op: "delete", Err: err} }
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		if ch == nil || ch.IsClosed() {
			ac := s.conn.current()
			if ac == nil {
				return fail(fmt.Errorf("%w: rabbitmq: not connected", transport.ErrUnavailable))
			}
			var err error
			if ch, err = ac.Channel(); err != nil {
				return fail(brokerError(err))
			}
		}
		var ae *amqp.Error
		if err := fn(ch, name); err != nil && !(errors.As(err, &ae) && ae.Code == amqp.NotFound) {
			return fail(brokerError(err))
		}
	}
	return nil
}

// subscription consumes a group's queue on a channel of its own, which it
// opens again after it is lost.
type subscription struct {
	s     *Subscriber
	topic string
	queue string
	done  chan struct{} // closed by Close

	reopening sync.Mutex // one reopening at a time

	mu     sync.Mutex
	ch     *amqp.Channel
	dels   <-chan amqp.Delivery // nil once lost
	closed bool
}

// open declares the group on a new channel of ac and consumes it.
func (s *subscription) open(ac *amqp.Connection) error {
	ch, err := ac.Channel()
	if err != nil {
		return brokerError(err)
	}
	dels, err := s.consume(ch)
	if err != nil {
		_ = ch.Close()
		return brokerError(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = ch.Close()
		return transport.ErrClosed
	}
	s.ch, s.dels = ch, dels
	return nil
}

func (s *subscription) consume(ch *amqp.Channel) (<-chan amqp.Delivery, error) {
	if err := ch.Confirm(false); err != nil { // for the copies Nack publishes
		return nil, err
	}
	if err := ch.Qos(s.s.opts.Prefetch, 0, false); err != nil {
		return nil, err
	}
	if err := s.s.declare(ch, s.topic, s.queue); err != nil {
		return nil, err
	}
	return ch.Consume(s.queue, "", false, false, false, false, nil)
}

func (s *subscription) Receive(ctx context.Context) (transport.Delivery, error) {
	fail := func(err error) (transport.Delivery, error) {
		return transport.Delivery{}, &transport.Error{Op: "receive", Topic: s.topic, Err: err}
	}
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		s.mu.Lock()
		closed, ch, dels := s.closed, s.ch, s.dels
		s.mu.Unlock()
		if closed {
			return fail(transport.ErrClosed)
		}
		if dels == nil {
			s.reopen(ctx, ch)
			continue
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-s.done:
			return fail(transport.ErrClosed)
		case d, ok := <-dels:
			if !ok {
				s.lost(ch)
				continue
			}
			del, err := s.delivery(ch, d)
			if err != nil {
				// Not recado's: the group's dead-letter exchange keeps it.
				_ = d.Reject(false)
				continue
			}
			return del, nil
		}
	}
}

// lost records that ch stopped delivering (closed with its connection, or
// the broker cancelled the consumer).
func (s *subscription) lost(ch *amqp.Channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == ch {
		s.dels = nil
	}
}

// reopen consumes again on a new channel once the connection is up,
// unless another Receive did it since old was lost. It returns when ctx
// ends or the subscription closes too.
func (s *subscription) reopen(ctx context.Context, old *amqp.Channel) {
	s.reopening.Lock()
	defer s.reopening.Unlock()
	if old != nil {
		_ = old.Close() // hands back what it held, if it is still open
	}
	wait := s.s.opts.ReconnectWait
	for {
		s.mu.Lock()
		current := s.ch == old && s.dels == nil && !s.closed
		s.mu.Unlock()
		if !current {
			return
		}
		ac := s.s.conn.wait(ctx, s.done)
		if ac == nil {
			return
		}
		err := s.open(ac)
		if err == nil {
			return
		}
		s.s.opts.Logger.Warn("transport/rabbitmq: cannot consume again", "queue", s.queue, "error", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-s.done:
		case <-t.C:
		}
		t.Stop()
		wait = min(2*wait, 5*time.Second)
		if ctx.Err() != nil {
			return
		}
	}
}

func (s *subscription) delivery(ch *amqp.Channel, d amqp.Delivery) (transport.Delivery, error) {
	m, err := transport.ReadHeaders(func(k string) string { return headerString(d.Headers, k) }, d.Body)
	if err != nil {
		return transport.Delivery{}, err
	}
	// The broker hands a delivery back when its member closed or died:
	// quorum queues count those returns, classic queues only flag them.
	returns := headerInt(d.Headers, "x-delivery-count")
	if d.Redelivered && returns == 0 {
		returns = 1
	}
	attempt := 1 + int(headerInt(d.Headers, headerAttempt)+returns)
	a := &acker{s: s, ch: ch, tag: d.DeliveryTag, m: m, attempt: attempt}
	return transport.Delivery{Message: m, Topic: s.topic, Attempt: attempt, Acker: a}, nil
}

// Close stops consuming and closes the channel: the broker hands the
// deliveries not settled back to the queue. It is safe to call twice.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	ch := s.ch
	s.ch, s.dels = nil, nil
	s.mu.Unlock()
	if ch != nil {
		_ = ch.Close()
	}
	s.s.mu.Lock()
	delete(s.s.subs, s)
	s.s.mu.Unlock()
	return nil
}

var errSettled = errors.New("rabbitmq: the delivery was settled already")

// acker settles a delivery on the channel it came from; once that channel
// is gone, the broker has handed the delivery back already.
type acker struct {
	s       *subscription
	ch      *amqp.Channel
	tag     uint64
	m       transport.Message
	attempt int
	settled atomic.Bool
}

func (a *acker) fail(op string, err error) error {
	if a.ch.IsClosed() {
		err = fmt.Errorf("%w: rabbitmq: the channel closed and the broker handed the delivery back: %v", transport.ErrUnavailable, err)
	} else {
		err = brokerError(err)
	}
	return &transport.Error{Op: op, Topic: a.s.topic, Err: err}
}

func (a *acker) Ack(ctx context.Context) error {
	if a.settled.Swap(true) {
		return &transport.Error{Op: "ack", Topic: a.s.topic, Err: errSettled}
	}
	if err := a.ch.Ack(a.tag, false); err != nil {
		return a.fail("ack", err)
	}
	return nil
}

// Nack publishes a copy of the message, with its attempt count, to the
// group's queue (no delay) or to the delay queue for delay, waits for the
// broker's confirm, and then acks the delivery.
func (a *acker) Nack(ctx context.Context, delay time.Duration) error {
	if a.settled.Swap(true) {
		return &transport.Error{Op: "nack", Topic: a.s.topic, Err: errSettled}
	}
	target := a.s.queue
	if delay > 0 {
		ms := delayStep(delay)
		target = delayQueueName(a.s.queue, ms)
		args := amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeClassic, amqp.QueueMessageTTLArg: ms,
			"x-dead-letter-exchange": "", "x-dead-letter-routing-key": a.s.queue,
			// Unused for ten minutes past its TTL (each Nack declares it
			// again), the delay queue goes.
			amqp.QueueTTLArg: ms + 10*60*1000}
		if _, err := a.ch.QueueDeclare(target, true, false, false, false, args); err != nil {
			return a.fail("nack", err)
		}
	}
	dc, err := a.ch.PublishWithDeferredConfirmWithContext(ctx, "", target, false, false, publishing(&a.m, a.attempt))
	if err != nil {
		return a.fail("nack", err)
	}
	acked, err := dc.WaitContext(ctx)
	switch {
	case err != nil:
		return &transport.Error{Op: "nack", Topic: a.s.topic, Err: fmt.Errorf("%w: rabbitmq: no confirm: %v", transport.ErrUnavailable, err)}
	case !acked:
		return a.fail("nack", errors.New("the broker did not confirm the copy"))
	}
	if err := a.ch.Ack(a.tag, false); err != nil {
		return a.fail("nack", err)
	}
	return nil
}
