// Package kafka is the transport over Apache Kafka (and brokers that speak
// its protocol), with franz-go:
//
//   - a topic is a Kafka topic, "recado.<topic>", made with
//     [Options.Partitions] partitions when it does not exist; a message's
//     key is its record's key, so a key always lands on one partition, in
//     order (idempotent producer, acks from all in-sync replicas);
//   - a group is a Kafka consumer group, "recado.<topic>.<group>": its
//     members split the partitions (competing consumers) and each member
//     commits, per partition, the offset below which every record is
//     settled. A new group starts at the oldest retained record;
//   - Kafka has no nack: a nack re-publishes the record, with its attempt
//     count and the time it is due, to the group's retry topic,
//     "recado.<topic>.<group>.retry", which has as many partitions as the
//     topic and is consumed by the same group. The member holds a retry
//     record until it is due (a retry partition is served in order: a
//     record waits for those before it). Partitions of the two topics are
//     assigned together (range balancer), so the member that owns a key's
//     partition owns its retries too;
//   - ordering per key is kept through retries: while a key has a record
//     in the retry topic, its later records are sent there behind it
//     rather than delivered. A member that takes over a partition reads the
//     retry partition's pending records before it delivers from the topic.
//
// A member that closes or loses a partition to a rebalance hands the
// records it delivered and did not settle back by re-publishing them to the
// retry topic, due at once, with one more attempt; records it fetched but
// did not deliver are read again by the next owner. Delivery.Attempt counts
// deliveries this way (a member that dies without closing has its records
// read again from the last commit, with the same attempt count).
//
// Acks are committed every [Options.CommitInterval] and when partitions are
// revoked: a member that dies receives again, in its successor, what it
// acked since the last commit (at least once; see transport.Inbox).
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/recado-dev/recado/transport"
)

// Options configures a [Publisher] or [Subscriber]. Only Brokers is required.
type Options struct {
	// Brokers are the seed brokers, "host:port".
	Brokers []string
	// Partitions is the number of partitions of a topic made by this
	// package (a retry topic takes its topic's number). Default 4.
	Partitions int
	// ReplicationFactor of the topics made by this package. Default: the
	// broker's default.
	ReplicationFactor int
	// CommitInterval is how often a member commits its settled offsets.
	// Default 1 s.
	CommitInterval time.Duration
	// HeartbeatInterval and SessionTimeout are the group's: a member that
	// does not heartbeat within SessionTimeout is taken out of the group
	// (its partitions go to the others). Defaults 3 s and 45 s.
	HeartbeatInterval time.Duration
	SessionTimeout    time.Duration
	// FetchMaxWait is how long the broker may hold a fetch that has nothing
	// to return. Default 500 ms.
	FetchMaxWait time.Duration
	// Prefetch is how many fetched records a subscription holds before it
	// stops fetching until Receive takes some. Default 1024.
	Prefetch int
	// Name is the client ID the brokers see. Default "recado".
	Name string
	// Logger reports what cannot be returned: failed commits, records that
	// could not be handed back. Default: none.
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if len(o.Brokers) == 0 {
		return fmt.Errorf("%w: kafka: Options.Brokers is required", transport.ErrInvalid)
	}
	if o.Partitions <= 0 {
		o.Partitions = 4
	}
	if o.ReplicationFactor <= 0 {
		o.ReplicationFactor = -1
	}
	if o.CommitInterval <= 0 {
		o.CommitInterval = time.Second
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 3 * time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 45 * time.Second
	}
	if o.FetchMaxWait <= 0 {
		o.FetchMaxWait = 500 * time.Millisecond
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 1024
	}
	if o.Name == "" {
		o.Name = "recado"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func (o *Options) clientOpts() []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(o.Brokers...), kgo.ClientID(o.Name),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.FetchMaxWait(o.FetchMaxWait),
		kgo.RetryTimeout(10 * time.Second)}
}

func topicName(topic string) string        { return "recado." + topic }
func groupName(topic, group string) string { return "recado." + topic + "." + group }
func retryTopicName(topic, group string) string {
	return groupName(topic, group) + ".retry"
}

// Headers a retry record carries besides the message's.
const (
	headerAttempt = "Recado-Attempt" // deliveries before this copy
	headerDue     = "Recado-Due"     // not to be delivered before, in Unix milliseconds
)

// record returns the Kafka record that carries m to topic, after attempts
// deliveries, due at due (zero: at once).
func record(topic string, m *transport.Message, attempts int, due time.Time) *kgo.Record {
	r := &kgo.Record{Topic: topic, Key: []byte(m.Key), Value: m.Data, Headers: make([]kgo.RecordHeader, 0, 8)}
	m.WriteHeaders(func(k, v string) { r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) })
	if attempts > 0 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: headerAttempt, Value: strconv.AppendInt(nil, int64(attempts), 10)})
	}
	if !due.IsZero() {
		ms := due.UnixMilli()
		if due.After(time.UnixMilli(ms)) {
			ms++ // not a moment before due
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: headerDue, Value: strconv.AppendInt(nil, ms, 10)})
	}
	if r.Key == nil {
		r.Key = []byte{} // hashed like any key, not spread at random
	}
	return r
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// message reads r back: its message, earlier deliveries and due time.
func message(r *kgo.Record) (m transport.Message, attempts int, due time.Time, err error) {
	m, err = transport.ReadHeaders(func(k string) string { return header(r, k) }, r.Value)
	if err != nil {
		return m, 0, due, err
	}
	m.Key = string(r.Key)
	if v := header(r, headerAttempt); v != "" {
		if attempts, err = strconv.Atoi(v); err != nil {
			return m, 0, due, fmt.Errorf("%w: header %s %q", transport.ErrInvalid, headerAttempt, v)
		}
	}
	if v := header(r, headerDue); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return m, 0, due, fmt.Errorf("%w: header %s %q", transport.ErrInvalid, headerDue, v)
		}
		due = time.UnixMilli(ms)
	}
	return m, attempts, due, nil
}

// ensureTopic makes topic with partitions partitions if it does not exist,
// and returns its number of partitions.
func ensureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions, rf int) (int, error) {
	res, err := adm.CreateTopic(ctx, int32(partitions), int16(rf), nil, topic)
	if err == nil {
		err = res.Err
	}
	if err == nil {
		return partitions, nil
	}
	if !errors.Is(err, kerr.TopicAlreadyExists) {
		return 0, err
	}
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, err
	}
	d, ok := details[topic]
	if !ok || d.Err != nil || len(d.Partitions) == 0 {
		return 0, fmt.Errorf("kafka: topic %s exists but cannot be described: %v", topic, d.Err)
	}
	return len(d.Partitions), nil
}

// brokerError says what a franz-go error means: the client was closed
// (ErrClosed), the brokers cannot be reached in time (ErrUnavailable), or
// the broker refused.
func brokerError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("%w: kafka: %v", transport.ErrClosed, err)
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, context.DeadlineExceeded) || kerr.IsRetriable(err) || kgo.IsRetryableBrokerErr(err):
		return fmt.Errorf("%w: kafka: %v", transport.ErrUnavailable, err)
	}
	return fmt.Errorf("kafka: %w", err)
}
