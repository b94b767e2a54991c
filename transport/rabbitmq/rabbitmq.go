// Package rabbitmq is the transport over RabbitMQ (AMQP 0-9-1, with
// amqp091-go), built from plain exchanges and queues, without plugins:
//
//   - a topic is a durable fanout exchange, "recado.<topic>";
//   - a group is a durable queue bound to it, "recado.<topic>.<group>"
//     (a quorum queue by default, see [Options.QueueType]), so every group
//     receives every message and the group's members share its queue;
//   - a publish returns once the broker confirmed each message (publisher
//     confirms): the message is on disk in every group's queue;
//   - a nack with a delay re-publishes the message, with its attempt count,
//     to the group's delay queue for that delay,
//     "recado.<topic>.<group>.delay.<ms>": a queue with a message TTL whose
//     dead-letter exchange (the default exchange) routes expired messages
//     back to the group's queue. Delays are rounded up to one of about ten
//     steps per decade (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8), so a group has
//     a handful of delay queues; a delay queue nothing uses expires;
//   - the group's queue has the dead-letter exchange "recado.dead" (direct),
//     which routes what the broker refuses to deliver (a message without
//     recado's headers, which another publisher sent) to
//     "recado.<topic>.<group>.dead". Messages that keep failing in a
//     handler go to recado's dead-letter store, through transport.Consumer,
//     as on every broker.
//
// Delivery.Attempt counts deliveries: re-published copies carry the count
// in a header, and a delivery the broker hands back (a member closed or
// died) counts as one more.
//
// A group with one member receives the messages of a key in the order they
// were published (one queue, one consumer). With several members, the
// queue's messages are shared round-robin, whatever their key.
//
// Every Publisher and Subscriber is a connection of its own, which
// reconnects by itself: while the broker is away, publishes fail at once
// with transport.ErrUnavailable (put transport.Guard in front for a
// breaker), and Receive waits; after the connection is back, a
// subscription consumes again.
package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/recado-dev/recado/transport"
)

// Options configures a [Publisher] or [Subscriber]. Only URL is required.
type Options struct {
	// URL is the broker: "amqp://user:password@host:5672/vhost".
	URL string
	// QueueType is the type of the groups' queues: "quorum" (the default;
	// replicated, counts deliveries) or "classic". A queue keeps the type
	// it was made with: Subscribe fails if it exists with another type.
	QueueType string
	// Prefetch is how many unsettled deliveries a subscription holds at
	// once. Default 256.
	Prefetch int
	// ReconnectWait is the first pause between reconnection attempts; it
	// doubles up to 5 s while the broker stays away. Default 200 ms.
	ReconnectWait time.Duration
	// Name names the connections (shown in the broker's management UI).
	// Default "recado".
	Name string
	// Logger reports reconnections. Default: none.
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.URL == "" {
		return fmt.Errorf("%w: rabbitmq: Options.URL is required", transport.ErrInvalid)
	}
	switch o.QueueType {
	case "":
		o.QueueType = "quorum"
	case "quorum", "classic":
	default:
		return fmt.Errorf("%w: rabbitmq: QueueType %q is neither quorum nor classic", transport.ErrInvalid, o.QueueType)
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 256
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = 200 * time.Millisecond
	}
	if o.Name == "" {
		o.Name = "recado"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Names of what the package declares on the broker.
const deadExchange = "recado.dead"

func exchangeName(topic string) string     { return "recado." + topic }
func queueName(topic, group string) string { return "recado." + topic + "." + group }
func deadQueueName(queue string) string    { return queue + ".dead" }
func delayQueueName(queue string, ms int64) string {
	return queue + ".delay." + strconv.FormatInt(ms, 10)
}

// delaySteps are the delays, in milliseconds, that delay queues hold: about
// ten per decade from 1 ms to 4e9 ms (46 days, under the broker's limit on
// a TTL of 2^32-1 ms).
var delaySteps = func() []int64 {
	var steps []int64
	for d := int64(1); d <= 1e9; d *= 10 {
		for _, m := range []int64{10, 12, 15, 20, 25, 30, 40, 50, 60, 80} {
			if v := m * d; v%10 == 0 && v/10 <= 4e9 && (len(steps) == 0 || v/10 > steps[len(steps)-1]) {
				steps = append(steps, v/10)
			}
		}
	}
	return steps
}()

// delayStep returns the smallest step not shorter than d (the longest step
// for a longer d).
func delayStep(d time.Duration) int64 {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	for _, s := range delaySteps {
		if s >= ms {
			return s
		}
	}
	return delaySteps[len(delaySteps)-1]
}

// conn is a connection to the broker that comes back by itself after it is
// lost, until closed.
type conn struct {
	opts Options

	mu     sync.Mutex
	c      *amqp.Connection // nil while away
	up     chan struct{}    // closed while c is set
	closed bool
	done   chan struct{} // closed by close
	wg     sync.WaitGroup
}

func dial(ctx context.Context, opts Options) (*conn, error) {
	c := &conn{opts: opts, up: make(chan struct{}), done: make(chan struct{})}
	type result struct {
		ac  *amqp.Connection
		err error
	}
	res := make(chan result, 1)
	go func() {
		ac, err := c.dialOnce()
		res <- result{ac, err}
	}()
	select {
	case <-ctx.Done():
		go func() { // the dial goes on: close what it made
			if r := <-res; r.ac != nil {
				_ = r.ac.Close()
			}
		}()
		return nil, fmt.Errorf("%w: rabbitmq: %v", transport.ErrUnavailable, ctx.Err())
	case r := <-res:
		if r.err != nil {
			return nil, r.err
		}
		c.set(r.ac)
	}
	c.wg.Go(c.keep)
	return c, nil
}

func (c *conn) dialOnce() (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(c.opts.Name)
	ac, err := amqp.DialConfig(c.opts.URL, amqp.Config{Properties: props, Heartbeat: 10 * time.Second,
		Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return nil, fmt.Errorf("%w: rabbitmq: %v", transport.ErrUnavailable, err)
	}
	return ac, nil
}

func (c *conn) set(ac *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c = ac
	close(c.up)
}

// keep waits for the connection to be lost and dials again, until close.
func (c *conn) keep() {
	for {
		c.mu.Lock()
		ac := c.c
		c.mu.Unlock()
		lost := ac.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-c.done:
			return
		case err := <-lost:
			c.opts.Logger.Warn("transport/rabbitmq: connection lost", "name", c.opts.Name, "error", err)
		}
		c.mu.Lock()
		c.c = nil
		c.up = make(chan struct{})
		c.mu.Unlock()
		wait := c.opts.ReconnectWait
		for {
			ac, err := c.dialOnce()
			if err == nil {
				c.mu.Lock()
				if c.closed {
					c.mu.Unlock()
					_ = ac.Close()
					return
				}
				c.mu.Unlock()
				c.set(ac)
				c.opts.Logger.Info("transport/rabbitmq: connection back", "name", c.opts.Name)
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-c.done:
				t.Stop()
				return
			case <-t.C:
			}
			wait = min(2*wait, 5*time.Second)
		}
	}
}

// current returns the connection, or nil while it is away.
func (c *conn) current() *amqp.Connection {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c
}

// wait returns the connection once it is up, or nil when ctx ends or stop
// is closed.
func (c *conn) wait(ctx context.Context, stop <-chan struct{}) *amqp.Connection {
	for {
		c.mu.Lock()
		ac, up, closed := c.c, c.up, c.closed
		c.mu.Unlock()
		if closed {
			return nil
		}
		if ac != nil && !ac.IsClosed() {
			return ac
		}
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		case <-c.done:
			return nil
		case <-up:
			if ac != nil { // closed, and keep has not noticed yet
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}

func (c *conn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	ac := c.c
	close(c.done)
	c.mu.Unlock()
	c.wg.Wait()
	if ac != nil {
		_ = ac.Close()
	}
}

// brokerError says what a failure of an AMQP call means: the broker is
// away (ErrUnavailable), or it refused the call.
func brokerError(err error) error {
	var ae *amqp.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, amqp.ErrClosed):
		return fmt.Errorf("%w: rabbitmq: %v", transport.ErrUnavailable, err)
	case errors.As(err, &ae) && (ae.Code == amqp.ConnectionForced || ae.Code == amqp.ChannelError):
		return fmt.Errorf("%w: rabbitmq: %v", transport.ErrUnavailable, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: rabbitmq: %v", transport.ErrUnavailable, err)
	}
	return fmt.Errorf("rabbitmq: %w", err)
}

// The header with the number of deliveries a re-published copy had before.
const headerAttempt = "Recado-Attempt"

// publishing returns the AMQP message that carries m, with attempts earlier
// deliveries.
func publishing(m *transport.Message, attempts int) amqp.Publishing {
	h := make(amqp.Table, 8)
	m.WriteHeaders(func(k, v string) { h[k] = v })
	if attempts > 0 {
		h[headerAttempt] = int64(attempts)
	}
	p := amqp.Publishing{Headers: h, DeliveryMode: amqp.Persistent, MessageId: m.ID, Type: m.Type, Body: m.Data}
	if !m.Time.IsZero() {
		p.Timestamp = m.Time
	}
	return p
}

func headerString(h amqp.Table, k string) string {
	switch v := h[k].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func headerInt(h amqp.Table, k string) int64 {
	switch v := h[k].(type) {
	case int64:
		return v
	case int32:
		return int64(v)
	case int16:
		return int64(v)
	case int8:
		return int64(v)
	case int:
		return int64(v)
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	}
	return 0
}
