// Package transport carries messages between services through a broker, at
// least once, and makes their effects happen once: a small
// publish/subscribe contract that each broker package implements
// (transport/inproc in the process, transport/nats for NATS JetStream, and
// RabbitMQ and Kafka packages), and what every broker shares, written once
// here:
//
//   - [Guard]: validation, a timeout and a circuit breaker in front of any
//     [Publisher], so that publishes fail fast while the broker is down;
//   - [Consumer]: runs a handler on a consumer group, acks, nacks with
//     back-off, dead-letters a message after its attempts into a
//     resilience/deadletter store (the same store, operators' handler and
//     replay for every broker), keeps each key's order behind a dead letter,
//     and resubscribes by itself;
//   - [Inbox]: a handler that records (consumer, message ID) in the unit of
//     work of its effect, so a redelivered message has no second effect;
//   - [Relay]: the outbox relay, which publishes the events committed to an
//     event store, checkpointed and confirmed, with one active relay at a
//     time through a lease.
//
// Package transporttest is the conformance suite every broker passes.
// docs/transports.md tells how to choose a broker.
package transport
