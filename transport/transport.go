package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/recado-dev/recado"
)

// Limits every broker holds; a message or name beyond them fails with
// [ErrInvalid] before it reaches the broker.
const (
	// MaxIDLen is the longest message ID, in bytes (an event ID fits).
	MaxIDLen = 255
	// MaxKeyLen is the longest key, in bytes (a stream name fits).
	MaxKeyLen = 1024
	// MaxTypeLen is the longest message type, in bytes.
	MaxTypeLen = 255
	// MaxNameLen is the longest topic or group name, in bytes.
	MaxNameLen = 100
)

var (
	// ErrInvalid: a message, topic or group that no broker may accept (an
	// empty ID, a topic with a dot in it). Nothing was sent.
	ErrInvalid = errors.New("transport: invalid argument")
	// ErrClosed: the publisher, subscriber or subscription was closed.
	ErrClosed = errors.New("transport: closed")
	// ErrUnavailable: the broker cannot be reached, or a breaker in front of
	// it is open. Nothing is known to have been stored: publish again (with
	// the same message IDs) later.
	ErrUnavailable = errors.New("transport: broker unavailable")
)

// Error is the error the functions of this package return around a broker's
// error or a validation error.
type Error struct {
	// Op is "publish", "subscribe", "receive", "ack", "nack", "consume" or
	// "relay".
	Op    string
	Topic string
	Err   error
}

func (e *Error) Error() string {
	if e.Topic == "" {
		return "transport: " + e.Op + ": " + e.Err.Error()
	}
	return "transport: " + e.Op + " " + e.Topic + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Message is what travels through a broker: one event, usually.
type Message struct {
	// ID identifies the message: 1 to MaxIDLen bytes of UTF-8 without
	// control characters (the same holds for Key and Type, which travel as
	// headers too).
	// A message published twice carries the same ID (the outbox relay uses
	// the event's ID), so brokers that de-duplicate drop the second copy,
	// and consumers recognise it (package resilience/inbox; see [Inbox]).
	ID string
	// Key orders messages: a subscription with one member receives the
	// messages of one key in the order they were published. The outbox relay
	// sets it to the event's stream. Empty is a key like any other.
	Key string
	// Type is the message's type name, as recado.Registry maps it.
	Type string
	// Data is the encoded message.
	Data []byte
	// Metadata travels as headers: correlation, causation, trace context and
	// user-defined fields.
	Metadata recado.Metadata
	// Version is, for an event the relay published, the event's version in
	// its stream (Key); 0 otherwise.
	Version uint64
	// Time is when the message was created (for an event, when it was
	// recorded). It arrives in UTC, to the nanosecond or to the precision
	// of the broker's headers if less.
	Time time.Time
}

// MessageOf returns the message that carries e: its ID, type, data,
// metadata, version and time, keyed by its stream.
func MessageOf(e recado.Event) Message {
	return Message{ID: e.ID, Key: e.Stream, Type: e.Type, Data: e.Data, Metadata: e.Metadata,
		Version: e.Version, Time: e.Time}
}

// Event returns m as an event of stream m.Key, with no position: what a
// dead-letter store keeps.
func (m Message) Event() recado.Event {
	return recado.Event{ID: m.ID, Stream: m.Key, Version: m.Version, Type: m.Type, Data: m.Data,
		Metadata: m.Metadata, Time: m.Time}
}

// Validate reports whether every broker can carry m.
func (m *Message) Validate() error {
	if err := checkText("message ID", m.ID, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkText("message key", m.Key, MaxKeyLen, false); err != nil {
		return err
	}
	if err := checkText("message type", m.Type, MaxTypeLen, false); err != nil {
		return err
	}
	if err := m.Metadata.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// CheckName reports whether name can be a topic or a group on every broker:
// 1 to MaxNameLen bytes of ASCII letters, digits, '-' and '_'. (NATS forbids
// dots, spaces and wildcards in stream and consumer names; Kafka topics and
// RabbitMQ queues take this set too.)
func CheckName(what, name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s %q must be 1 to %d bytes", ErrInvalid, what, name, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %s %q may hold only ASCII letters, digits, '-' and '_'", ErrInvalid, what, name)
		}
	}
	return nil
}

func checkText(what, s string, max int, required bool) error {
	switch {
	case required && s == "":
		return fmt.Errorf("%w: empty %s", ErrInvalid, what)
	case len(s) > max:
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalid, what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: %s contains a control character (headers cannot carry one)", ErrInvalid, what)
	}
	return nil
}

// Publisher sends messages to a broker. Each broker package implements it;
// [Guard] puts a breaker and validation in front of any of them.
//
// Implementations are safe for concurrent use.
type Publisher interface {
	// Publish sends msgs to topic, in order, and returns nil only once the
	// broker has stored every one of them (a publisher confirm): a message
	// whose Publish returned nil is delivered to every group of the topic
	// that existed when it was published, even if the publisher's process
	// dies next. An error means any of them may or may not be stored:
	// publish them again, with the same IDs.
	//
	// An unreachable broker fails with an error that Is [ErrUnavailable],
	// after at most the publisher's timeout. After Close, Publish fails with
	// [ErrClosed].
	Publish(ctx context.Context, topic string, msgs ...Message) error
	// Close waits for publishes under way and releases the connection. It
	// is safe to call twice.
	Close() error
}

// Subscriber joins consumer groups. Each broker package implements it.
// Implementations are safe for concurrent use.
type Subscriber interface {
	// Subscribe joins group on topic and returns once the group exists on
	// the broker (names that [CheckName] refuses fail with [ErrInvalid]): every message published to topic after Subscribe returned
	// is delivered to the group (to one of its members at a time) until it
	// is acked, however many members come and go. Whether messages published
	// before the group's first Subscribe reach it depends on the broker.
	Subscribe(ctx context.Context, topic, group string) (Subscription, error)
	// Close closes every subscription made through the Subscriber (their
	// unsettled deliveries go back to the broker) and releases the
	// connection. It is safe to call twice.
	Close() error
}

// Subscription is one member of a consumer group. The broker hands each
// message of the topic to one member of the group, and delivers it again
// (possibly to another member) until a member acks it:
//
//   - Nack(delay) delivers it again no sooner than delay later;
//   - a subscription that closes hands its unsettled deliveries back, to be
//     delivered again at once;
//   - a member that dies without closing loses its deliveries to the
//     broker's acknowledgement timeout, after which they are delivered again.
//
// A group with one member receives each key's messages in the order they
// were published (a message being redelivered after a nack may be overtaken
// by later ones: see [Consumer] for keeping a key's order across failures).
type Subscription interface {
	// Receive returns the next delivery, waiting for one until ctx ends (its
	// error) or the subscription is closed ([ErrClosed]). Receive may be
	// called from several goroutines at once. While the broker cannot be
	// reached, Receive waits: the subscription reconnects by itself.
	Receive(ctx context.Context) (Delivery, error)
	// Close leaves the group: deliveries not settled yet go back to the
	// broker, Receive calls under way return [ErrClosed]. Safe to call twice.
	Close() error
}

// Delivery is a message received from a broker, to be settled once with
// Ack or Nack.
type Delivery struct {
	Message
	// Topic is where the message was published.
	Topic string
	// Attempt is 1 the first time the message is delivered to the group, 2
	// the next time, and so on: the broker counts deliveries. A nack always
	// counts; a delivery handed back by a member that closed or died counts
	// where the broker keeps a count (NATS, RabbitMQ) and may not where it
	// cannot (a Kafka consumer that restarts from its committed offset).
	Attempt int
	// Acker settles the delivery with its broker.
	Acker Acker
}

// Acker settles a delivery with its broker. Brokers implement it.
type Acker interface {
	// Ack tells the broker the message was handled: it is not delivered to
	// the group again. Ack returns once the broker has the ack, where the
	// broker confirms acks.
	Ack(ctx context.Context) error
	// Nack tells the broker the message was not handled: it is delivered to
	// the group again, no sooner than delay from now (0: as soon as it can),
	// with Attempt one higher.
	Nack(ctx context.Context, delay time.Duration) error
}

// Ack acks d; see [Acker].
func (d Delivery) Ack(ctx context.Context) error { return d.Acker.Ack(ctx) }

// Nack nacks d; see [Acker].
func (d Delivery) Nack(ctx context.Context, delay time.Duration) error {
	if delay < 0 {
		delay = 0
	}
	return d.Acker.Nack(ctx, delay)
}
