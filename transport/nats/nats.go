// Package nats is the transport over NATS JetStream: a topic is a stream
// (named "recado_<topic>", subject "recado.<topic>", kept until every group
// has acked a message), a group is a durable pull consumer, a message's ID
// is its Nats-Msg-Id so the server drops a second publish of it within
// [Options.Duplicates], and a nack with a delay is a NAK with that delay.
//
// On one machine, [Open] without a URL runs a NATS server inside the
// process, on a free port of 127.0.0.1 (never the well-known 4222, which
// another server may own), storing its streams in [Options.Dir]; other
// processes reach it at [Broker.URL]. With a URL it connects to an external
// server or cluster, which must have JetStream enabled.
//
// Every Publisher and every Subscription is a connection of its own, which
// reconnects by itself: while the server is away, publishes fail at once
// with transport.ErrUnavailable (put transport.Guard in front for a
// breaker), and Receive waits.
package nats

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/transport"
)

// Options configures a [Broker]. The zero value runs an embedded server
// with its streams in a temporary directory.
type Options struct {
	// URL is the external server (or a comma-separated list of a cluster's
	// servers): "nats://127.0.0.1:4222". Empty runs an embedded server.
	URL string
	// Dir is where the embedded server keeps its streams. Empty means a new
	// temporary directory, removed by Close.
	Dir string
	// Memory keeps streams in memory rather than on disk: faster, lost when
	// the server stops.
	Memory bool
	// AckWait is how long a delivery may stay unsettled before the server
	// delivers it again (its member died without closing). Default 30 s.
	AckWait time.Duration
	// Prefetch is how many messages a subscription asks for at once.
	// Default 256.
	Prefetch int
	// Duplicates is the window in which a second publish of a message ID is
	// dropped. Default 2 min.
	Duplicates time.Duration
	// ReconnectWait is the pause between reconnection attempts. Default 200 ms.
	ReconnectWait time.Duration
	// Name names the connections to the server (shown in its monitoring).
	Name string
}

func (o *Options) setDefaults() {
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 256
	}
	if o.Duplicates <= 0 {
		o.Duplicates = 2 * time.Minute
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = 200 * time.Millisecond
	}
	if o.Name == "" {
		o.Name = "recado"
	}
}

// Broker is a NATS server (embedded or external) that hands out publishers
// and subscribers.
type Broker struct {
	opts Options
	url  string

	mu      sync.Mutex
	srv     *server.Server // embedded, or nil
	srvOpts *server.Options
	tempDir string
}

// Open starts the embedded server (no URL) or checks that the external one
// answers with JetStream enabled.
func Open(ctx context.Context, opts Options) (*Broker, error) {
	opts.setDefaults()
	b := &Broker{opts: opts, url: opts.URL}
	if opts.URL == "" {
		dir := opts.Dir
		if dir == "" {
			d, err := os.MkdirTemp("", "recado-nats-")
			if err != nil {
				return nil, err
			}
			dir, b.tempDir = d, d
		}
		b.srvOpts = &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
			StoreDir: dir, NoSigs: true, NoLog: true, ServerName: "recado-embedded"}
		if err := b.startServer(); err != nil {
			b.removeTemp()
			return nil, err
		}
		return b, nil
	}
	nc, err := b.connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.AccountInfo(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("transport/nats: %s has no JetStream: %w", opts.URL, err)
	}
	return b, nil
}

func (b *Broker) startServer() error {
	s, err := server.NewServer(b.srvOpts)
	if err != nil {
		return fmt.Errorf("transport/nats: embedded server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return errors.New("transport/nats: the embedded server did not start within 10 s")
	}
	b.mu.Lock()
	b.srv = s
	if a, ok := s.Addr().(*net.TCPAddr); ok {
		b.srvOpts.Port = a.Port // a restart (tests of outages) takes the same port
	}
	b.url = s.ClientURL()
	b.mu.Unlock()
	return nil
}

// URL returns the server's client URL: the embedded server's address for
// other processes, or Options.URL.
func (b *Broker) URL() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.url
}

// Close stops the embedded server (connections made through b see it go)
// and removes its temporary directory. Close the publishers and subscribers
// first. It is safe to call twice.
func (b *Broker) Close() error {
	b.mu.Lock()
	s := b.srv
	b.srv = nil
	b.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
	b.removeTemp()
	return nil
}

func (b *Broker) removeTemp() {
	if b.tempDir != "" {
		_ = os.RemoveAll(b.tempDir)
		b.tempDir = ""
	}
}

func (b *Broker) connect() (*nats.Conn, error) {
	nc, err := nats.Connect(b.URL(), nats.Name(b.opts.Name), nats.MaxReconnects(-1),
		nats.ReconnectWait(b.opts.ReconnectWait), nats.ReconnectJitter(50*time.Millisecond, 0),
		nats.RetryOnFailedConnect(false), nats.ReconnectBufSize(-1), nats.Timeout(5*time.Second),
		// Quiet: the client's default handler prints each asynchronous error;
		// what matters reaches the caller as a failed call.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", transport.ErrUnavailable, b.URL(), err)
	}
	return nc, nil
}

// Publisher opens a connection for publishing.
func (b *Broker) Publisher() (transport.Publisher, error) {
	nc, err := b.connect()
	if err != nil {
		return nil, &transport.Error{Op: "publish", Err: err}
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &publisher{b: b, nc: nc, js: js, streams: map[string]bool{}}, nil
}

// Subscriber returns a subscriber. Each of its subscriptions is a
// connection of its own, so that closing one withdraws its pull requests
// from the server at once (a pull request left behind would take messages
// that then wait out the ack timeout).
func (b *Broker) Subscriber() (transport.Subscriber, error) {
	return &subscriber{b: b, subs: map[*subscription]bool{}}, nil
}

func streamName(topic string) string { return "recado_" + topic }
func subject(topic string) string    { return "recado." + topic }

// ensureStream creates the topic's stream if it does not exist.
func (b *Broker) ensureStream(ctx context.Context, js jetstream.JetStream, topic string) error {
	storage := jetstream.FileStorage
	if b.opts.Memory {
		storage = jetstream.MemoryStorage
	}
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: streamName(topic), Subjects: []string{subject(topic)},
		Retention: jetstream.InterestPolicy, Storage: storage, Duplicates: b.opts.Duplicates})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil
	}
	return err
}

// unavailable says what a failure of nc means: the server is away, or the
// connection was closed by its owner.
func unavailable(nc *nats.Conn, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return err
	case nc.IsClosed():
		return fmt.Errorf("%w: %v", transport.ErrClosed, err)
	case !nc.IsConnected() || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %v", transport.ErrUnavailable, err)
	}
	return err
}

type publisher struct {
	b  *Broker
	nc *nats.Conn
	js jetstream.JetStream

	mu      sync.Mutex
	streams map[string]bool // topics whose stream exists
	closed  bool
	wg      sync.WaitGroup
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
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fail(transport.ErrClosed)
	}
	p.wg.Add(1)
	known := p.streams[topic]
	p.mu.Unlock()
	defer p.wg.Done()
	if !p.nc.IsConnected() {
		return fail(unavailable(p.nc, nats.ErrDisconnected))
	}
	if !known {
		if err := p.b.ensureStream(ctx, p.js, topic); err != nil {
			return fail(unavailable(p.nc, err))
		}
		p.mu.Lock()
		p.streams[topic] = true
		p.mu.Unlock()
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for i := range msgs {
		nm := &nats.Msg{Subject: subject(topic), Data: msgs[i].Data, Header: nats.Header{}}
		msgs[i].WriteHeaders(func(k, v string) { nm.Header[k] = []string{v} })
		f, err := p.js.PublishMsgAsync(nm, jetstream.WithMsgID(msgs[i].ID))
		if err != nil {
			return fail(unavailable(p.nc, err))
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if errors.Is(err, nats.ErrNoResponders) {
				// The stream is gone (deleted, or the server lost it): make it again next time.
				p.mu.Lock()
				delete(p.streams, topic)
				p.mu.Unlock()
			}
			return fail(unavailable(p.nc, err))
		case <-ctx.Done():
			return fail(unavailable(p.nc, ctx.Err()))
		}
	}
	return nil
}

func (p *publisher) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if already {
		return nil
	}
	p.wg.Wait()
	p.nc.Close()
	return nil
}

type subscriber struct {
	b *Broker

	mu     sync.Mutex
	subs   map[*subscription]bool
	closed bool
}

func (s *subscriber) Subscribe(ctx context.Context, topic, group string) (transport.Subscription, error) {
	fail := func(err error) (transport.Subscription, error) {
		return nil, &transport.Error{Op: "subscribe", Topic: topic, Err: err}
	}
	if err := transport.CheckName("topic", topic); err != nil {
		return fail(err)
	}
	if err := transport.CheckName("group", group); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fail(transport.ErrClosed)
	}
	nc, err := s.b.connect()
	if err != nil {
		return fail(err)
	}
	js, err := jetstream.New(nc)
	if err == nil {
		err = s.b.ensureStream(ctx, js, topic)
	}
	if err != nil {
		err = unavailable(nc, err)
		nc.Close()
		return fail(err)
	}
	sub := &subscription{owner: s, nc: nc, js: js, topic: topic, unsettled: map[*acker]bool{}, cfg: jetstream.ConsumerConfig{
		Durable: group, AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.b.opts.AckWait,
		DeliverPolicy: jetstream.DeliverAllPolicy, MaxDeliver: -1, MaxAckPending: max(1000, 4*s.b.opts.Prefetch),
		FilterSubject: subject(topic),
	}}
	sub.ctx, sub.cancel = context.WithCancel(context.Background())
	if err := sub.start(ctx); err != nil {
		err = unavailable(nc, err)
		nc.Close()
		return fail(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		sub.close()
		return fail(transport.ErrClosed)
	}
	s.subs[sub] = true
	return sub, nil
}

func (s *subscriber) Close() error {
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
		sub.close()
	}
	return nil
}

type subscription struct {
	owner  *subscriber
	nc     *nats.Conn
	js     jetstream.JetStream
	cfg    jetstream.ConsumerConfig
	topic  string
	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu        sync.Mutex
	iter      jetstream.MessagesContext
	unsettled map[*acker]bool
	closed    bool
}

// start makes the group's durable consumer (if it does not exist) and
// starts fetching from it.
func (s *subscription) start(ctx context.Context) error {
	cons, err := s.js.CreateOrUpdateConsumer(ctx, streamName(s.topic), s.cfg)
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(s.owner.b.opts.Prefetch))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.iter = it
	s.mu.Unlock()
	return nil
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
		closed, it := s.closed, s.iter
		s.mu.Unlock()
		if closed {
			return fail(transport.ErrClosed)
		}
		nctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(s.ctx, cancel)
		m, err := it.Next(jetstream.NextContext(nctx))
		stop()
		cancel()
		if err == nil {
			return s.delivery(m), nil
		}
		switch {
		case s.ctx.Err() != nil:
			return fail(transport.ErrClosed)
		case ctx.Err() != nil:
			return fail(ctx.Err())
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			if s.nc.IsClosed() {
				return fail(transport.ErrClosed)
			}
			// The iterator gave up (the consumer vanished with the server):
			// make the consumer again and go on.
			if err := s.restart(ctx); err != nil {
				return fail(unavailable(s.nc, err))
			}
		default:
			// A missed heartbeat while the server is away: wait and go on.
			select {
			case <-ctx.Done():
			case <-s.ctx.Done():
			case <-time.After(s.owner.b.opts.ReconnectWait):
			}
		}
	}
}

func (s *subscription) restart(ctx context.Context) error {
	s.mu.Lock()
	old := s.iter
	s.mu.Unlock()
	old.Stop()
	if err := s.owner.b.ensureStream(ctx, s.js, s.topic); err != nil {
		return err
	}
	return s.start(ctx)
}

// delivery reads m. A message that recado's headers do not describe (sent
// by another publisher, or damaged) is delivered all the same, with the
// error in its metadata's field "header_error" and an ID made of its stream
// sequence if it has none, so that the handler fails on it and it ends in
// the dead-letter queue rather than vanishing.
func (s *subscription) delivery(m jetstream.Msg) transport.Delivery {
	h := m.Headers()
	md, mdErr := m.Metadata()
	msg, err := transport.ReadHeaders(func(k string) string { return h.Get(k) }, m.Data())
	if err != nil {
		id := h.Get(jetstream.MsgIDHeader)
		if id == "" && mdErr == nil {
			id = fmt.Sprintf("nats-%s-%d", md.Stream, md.Sequence.Stream)
		}
		msg = transport.Message{ID: id, Data: m.Data(), Metadata: recado.Metadata{Fields: map[string]string{"header_error": err.Error()}}}
	}
	attempt := 1
	if mdErr == nil {
		attempt = int(md.NumDelivered)
	}
	a := &acker{s: s, m: m}
	s.mu.Lock()
	s.unsettled[a] = true
	s.mu.Unlock()
	return transport.Delivery{Message: msg, Topic: s.topic, Attempt: attempt, Acker: a}
}

func (s *subscription) Close() error {
	s.close()
	return nil
}

// close stops fetching, and naks what was fetched and not settled, so that
// it is delivered again at once.
func (s *subscription) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	it := s.iter
	s.mu.Unlock()
	s.cancel()
	// Drain: unsubscribe, and NAK what was fetched ahead, until the
	// subscription has gone from the server; a pull request of a
	// subscription still known to the server would take messages that then
	// wait out the ack timeout.
	it.Drain()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		m, err := it.Next(jetstream.NextMaxWait(20 * time.Millisecond))
		if err == nil {
			_ = m.Nak()
			continue
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break
		}
	}
	s.mu.Lock()
	unsettled := s.unsettled
	s.unsettled = map[*acker]bool{}
	s.mu.Unlock()
	for a := range unsettled {
		_ = a.m.Nak()
	}
	_ = s.nc.Flush()
	s.nc.Close()
	s.owner.mu.Lock()
	delete(s.owner.subs, s)
	s.owner.mu.Unlock()
}

type acker struct {
	s *subscription
	m jetstream.Msg
}

func (a *acker) settle(op string) error {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	if !a.s.unsettled[a] {
		return &transport.Error{Op: op, Topic: a.s.topic, Err: errors.New("the delivery was settled already or handed back")}
	}
	delete(a.s.unsettled, a)
	return nil
}

func (a *acker) Ack(ctx context.Context) error {
	if err := a.settle("ack"); err != nil {
		return err
	}
	if err := a.m.Ack(); err != nil {
		return &transport.Error{Op: "ack", Topic: a.s.topic, Err: unavailable(a.s.nc, err)}
	}
	return nil
}

func (a *acker) Nack(ctx context.Context, delay time.Duration) error {
	if err := a.settle("nack"); err != nil {
		return err
	}
	var err error
	if delay > 0 {
		err = a.m.NakWithDelay(delay)
	} else {
		err = a.m.Nak()
	}
	if err != nil {
		return &transport.Error{Op: "nack", Topic: a.s.topic, Err: unavailable(a.s.nc, err)}
	}
	return nil
}
