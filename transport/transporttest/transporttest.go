// Package transporttest is the conformance suite every broker package runs:
// at-least-once delivery across a consumer's restart, redelivery delays,
// per-key order, competing consumers, dead-lettering without blocking other
// keys, publish confirms, fan-out to groups, close semantics and, where the
// broker offers them, de-duplication and an outage.
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(tb testing.TB) transporttest.Transport {
//			b := inproc.New()
//			tb.Cleanup(func() { b.Close() })
//			return transporttest.Transport{Publisher: b, NewSubscriber: func(testing.TB) transport.Subscriber { return b.Subscriber() }}
//		})
//	}
package transporttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/transport"
)

// Transport is one broker, fresh for one test.
type Transport struct {
	// Publisher publishes to the broker. The suite closes it.
	Publisher transport.Publisher
	// NewSubscriber returns a new Subscriber of the broker: a connection of
	// its own, as a process that starts would open. The suite closes it.
	NewSubscriber func(tb testing.TB) transport.Subscriber
	// Features says what the broker offers beyond the contract.
	Features Features
	// Outage, if set, cuts every connection to the broker off (or stops
	// it) until the function it returns is called; the Publisher and
	// Subscribers must then work again by themselves.
	Outage func(tb testing.TB) (restore func())
	// Wait is how long the suite waits for a delivery it expects.
	// Default 15 s.
	Wait time.Duration
}

// Features are what a broker offers beyond the contract.
type Features struct {
	// Dedup: the broker drops a message published again with the ID of one
	// it stored recently (NATS JetStream's Nats-Msg-Id).
	Dedup bool
}

// Run runs the suite, calling newTransport for a fresh broker in each test.
func Run(t *testing.T, newTransport func(tb testing.TB) Transport) {
	tests := []struct {
		name string
		fn   func(t *testing.T, tr Transport)
	}{
		{"PublishConfirms", testPublishConfirms},
		{"FieldsRoundTrip", testFieldsRoundTrip},
		{"AtLeastOnceAcrossRestart", testAtLeastOnce},
		{"NackDelay", testNackDelay},
		{"KeyOrder", testKeyOrder},
		{"CompetingConsumers", testCompeting},
		{"GroupsFanOut", testFanOut},
		{"PoisonDeadLettered", testPoison},
		{"CloseSubscription", testCloseSubscription},
		{"CloseSubscriber", testCloseSubscriber},
		{"ClosePublisher", testClosePublisher},
		{"ReceiveContext", testReceiveContext},
		{"InvalidInput", testInvalid},
		{"Dedup", testDedup},
		{"Outage", testOutage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTransport(t)
			if tr.Publisher == nil || tr.NewSubscriber == nil {
				t.Fatal("transporttest: Transport needs a Publisher and NewSubscriber")
			}
			if tr.Wait <= 0 {
				tr.Wait = 15 * time.Second
			}
			t.Cleanup(func() { _ = tr.Publisher.Close() })
			tc.fn(t, tr)
		})
	}
}

// Name returns a topic or group name no other test uses.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func subscriber(t *testing.T, tr Transport) transport.Subscriber {
	t.Helper()
	s := tr.NewSubscriber(t)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func subscribe(t *testing.T, s transport.Subscriber, topic, group string) transport.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := s.Subscribe(ctx, topic, group)
	if err != nil {
		t.Fatalf("Subscribe(%s, %s): %v", topic, group, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

func publish(t *testing.T, tr Transport, topic string, msgs ...transport.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tr.Publisher.Publish(ctx, topic, msgs...); err != nil {
		t.Fatalf("Publish(%s, %d messages): %v", topic, len(msgs), err)
	}
}

func receive(t *testing.T, tr Transport, sub transport.Subscription) transport.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), tr.Wait)
	defer cancel()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return d
}

func ack(t *testing.T, d transport.Delivery) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack %s: %v", d.ID, err)
	}
}

func msg(id, key string) transport.Message {
	return transport.Message{ID: id, Key: key, Type: "Tested", Data: []byte(`{"id":"` + id + `"}`)}
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// A message whose Publish returned nil is delivered to a group that
// existed, even when the publisher is closed next and the group's members
// are all new.
func testPublishConfirms(t *testing.T, tr Transport) {
	topic, group := Name("t"), Name("g")
	s1 := subscriber(t, tr)
	sub := subscribe(t, s1, topic, group)
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	want := ids(Name("m"), 10)
	for i, id := range want {
		publish(t, tr, topic, msg(id, fmt.Sprint("k", i%3)))
	}
	if err := tr.Publisher.Close(); err != nil {
		t.Fatalf("Publisher.Close: %v", err)
	}
	if err := s1.Close(); err != nil {
		t.Fatalf("Subscriber.Close: %v", err)
	}
	sub = subscribe(t, subscriber(t, tr), topic, group)
	got := map[string]bool{}
	for len(got) < len(want) {
		d := receive(t, tr, sub)
		if d.Attempt < 1 {
			t.Errorf("%s: Attempt %d, want >= 1", d.ID, d.Attempt)
		}
		if d.Topic != topic {
			t.Errorf("%s: Topic %q, want %q", d.ID, d.Topic, topic)
		}
		got[d.ID] = true
		ack(t, d)
	}
	for _, id := range want {
		if !got[id] {
			t.Errorf("%s confirmed but never delivered", id)
		}
	}
}

// Every field of a message arrives as it was sent.
func testFieldsRoundTrip(t *testing.T, tr Transport) {
	topic, group := Name("t"), Name("g")
	sub := subscribe(t, subscriber(t, tr), topic, group)
	sent := transport.Message{
		ID: recado.NewID(), Key: "order-42", Type: "OrderPlaced", Version: 7,
		Data: []byte(`{"total":1999,"note":"é \u0000 \"q\""}`),
		Metadata: recado.Metadata{CorrelationID: "c-1", CausationID: "cause-1", IdempotencyKey: "idem",
			TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "k=v",
			Fields: map[string]string{"tenant": "acme", "with space": "ü", "empty": ""}},
		Time: time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC),
	}
	bare := transport.Message{ID: recado.NewID()} // nothing but an ID
	publish(t, tr, topic, sent, bare)
	for _, want := range []transport.Message{sent, bare} {
		d := receive(t, tr, sub)
		ack(t, d)
		got := d.Message
		if got.ID != want.ID || got.Key != want.Key || got.Type != want.Type || got.Version != want.Version ||
			string(got.Data) != string(want.Data) || !got.Time.Equal(want.Time) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
		if string(got.Metadata.AppendJSON(nil)) != string(want.Metadata.AppendJSON(nil)) {
			t.Errorf("%s: metadata %s, want %s", want.ID, got.Metadata.AppendJSON(nil), want.Metadata.AppendJSON(nil))
		}
	}
}

// Deliveries a member received and did not ack are delivered to the next
// member after it closes; the acked one is not.
func testAtLeastOnce(t *testing.T, tr Transport) {
	topic, group := Name("t"), Name("g")
	s1 := subscriber(t, tr)
	sub := subscribe(t, s1, topic, group)
	all := ids(Name("m"), 6)
	for _, id := range all {
		publish(t, tr, topic, msg(id, "k"))
	}
	first := receive(t, tr, sub)
	ack(t, first)
	unacked := []transport.Delivery{receive(t, tr, sub), receive(t, tr, sub)}
	if err := sub.Close(); err != nil {
		t.Fatalf("Subscription.Close: %v", err)
	}
	if err := s1.Close(); err != nil {
		t.Fatalf("Subscriber.Close: %v", err)
	}

	sub = subscribe(t, subscriber(t, tr), topic, group)
	got := map[string]transport.Delivery{}
	for len(got) < len(all)-1 {
		d := receive(t, tr, sub)
		if d.ID == first.ID {
			t.Fatalf("%s was acked and delivered again", d.ID)
		}
		got[d.ID] = d
		ack(t, d)
	}
	for _, u := range unacked {
		d, ok := got[u.ID]
		switch {
		case !ok:
			t.Errorf("%s was received, not acked, and not delivered again", u.ID)
		case d.Attempt < u.Attempt:
			t.Errorf("%s: Attempt %d on redelivery, want at least %d", u.ID, d.Attempt, u.Attempt)
		}
	}
}

// A nacked delivery comes back no sooner than its delay, with the next
// attempt number.
func testNackDelay(t *testing.T, tr Transport) {
	topic, group := Name("t"), Name("g")
	sub := subscribe(t, subscriber(t, tr), topic, group)
	id := recado.NewID()
	publish(t, tr, topic, msg(id, "k"))
	d := receive(t, tr, sub)
	if d.ID != id || d.Attempt != 1 {
		t.Fatalf("got %s attempt %d, want %s attempt 1", d.ID, d.Attempt, id)
	}
	for attempt, delay := range []time.Duration{700 * time.Millisecond, 0} {
		start := time.Now()
		if err := d.Nack(context.Background(), delay); err != nil {
			t.Fatalf("Nack: %v", err)
		}
		d = receive(t, tr, sub)
		if elapsed := time.Since(start); elapsed < delay {
			t.Errorf("redelivered after %v, before the delay of %v", elapsed, delay)
		}
		if d.ID != id || d.Attempt != attempt+2 {
			t.Errorf("got %s attempt %d, want %s attempt %d", d.ID, d.Attempt, id, attempt+2)
		}
	}
	ack(t, d)
}

// One member receives each key's messages in the order they were
// published, whether one at a time or in batches.
func testKeyOrder(t *testing.T, tr Transport) {
	topic, group := Name("t"), Name("g")
	sub := subscribe(t, subscriber(t, tr), topic, group)
	keys := []string{"a", "b", "c"}
	want := map[string][]string{}
	var batch []transport.Message
	prefix := Name("m")
	for i := range 60 {
		k := keys[i%len(keys)]
		id := fmt.Sprintf("%s-%s-%02d", prefix, k, i)
		want[k] = append(want[k], id)
		batch = append(batch, msg(id, k))
		if i%7 == 0 || i == 59 {
			publish(t, tr, topic, batch...)
			batch = nil
		}
	}
	got := map[string][]string{}
	for n := 0; n < 60; n++ {
		d := receive(t, tr, sub)
		got[d.Key] = append(got[d.Key], d.ID)
		ack(t, d)
	}
	for _, k := range keys {
		if !slices.Equal(got[k], want[k]) {
			t.Errorf("key %s: got %v\nwant %v", k, got[k], want[k])
		}
	}
}

// Two members of a group share its messages: each is delivered to one of
// them (again only after a redelivery), and both get some, even when one
// member holds its first delivery (and whatever it fetched ahead) until the
// other has one.
func testCompeting(t *testing.T, tr Transport) {
	topic, group := Name("t"), Name("g")
	subs := []transport.Subscription{
		subscribe(t, subscriber(t, tr), topic, group),
		subscribe(t, subscriber(t, tr), topic, group),
	}
	const n = 40
	prefix := Name("m")
	for i := range n {
		publish(t, tr, topic, msg(fmt.Sprintf("%s-%02d", prefix, i), fmt.Sprint("k", i)))
	}
	var (
		mu      sync.Mutex
		acked   = map[string]int{}
		retried = map[string]bool{} // delivered with Attempt > 1
		counts  [2]int
		started = [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	)
	ctx, cancel := context.WithTimeout(context.Background(), tr.Wait)
	defer cancel()
	var wg sync.WaitGroup
	for i, sub := range subs {
		wg.Go(func() {
			for first := true; ; first = false {
				d, err := sub.Receive(ctx)
				if err != nil {
					return
				}
				if first {
					// Hold the first delivery until the other member has one,
					// so that one member cannot take everything.
					close(started[i])
					select {
					case <-started[1-i]:
					case <-ctx.Done():
					}
				}
				if err := d.Ack(context.Background()); err != nil {
					t.Errorf("Ack: %v", err)
				}
				mu.Lock()
				acked[d.ID]++
				retried[d.ID] = retried[d.ID] || d.Attempt > 1
				counts[i]++
				if len(acked) == n {
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(acked) != n {
		t.Fatalf("%d of %d messages delivered within %v", len(acked), n, tr.Wait)
	}
	for id, c := range acked {
		// A member that holds a delivery past the broker's ack timeout has
		// it delivered again (to the other member): at least once.
		if c != 1 && !retried[id] {
			t.Errorf("%s acked %d times, never redelivered", id, c)
		}
	}
	if counts[0] == 0 || counts[1] == 0 {
		t.Errorf("members received %d and %d messages: the work was not shared", counts[0], counts[1])
	}
}

// Each group receives every message.
func testFanOut(t *testing.T, tr Transport) {
	topic := Name("t")
	s := subscriber(t, tr)
	subs := []transport.Subscription{subscribe(t, s, topic, Name("g")), subscribe(t, s, topic, Name("g"))}
	want := ids(Name("m"), 5)
	for _, id := range want {
		publish(t, tr, topic, msg(id, "k"))
	}
	for i, sub := range subs {
		var got []string
		for range want {
			d := receive(t, tr, sub)
			got = append(got, d.ID)
			ack(t, d)
		}
		if !slices.Equal(got, want) {
			t.Errorf("group %d: got %v, want %v", i, got, want)
		}
	}
}

// A message that keeps failing is dead-lettered after MaxAttempts while
// other keys flow; its key's next message is parked behind it, and a replay
// delivers both, in order.
func testPoison(t *testing.T, tr Transport) {
	topic, group := Name("t"), Name("g")
	db := memory.New()
	t.Cleanup(func() { _ = db.Close() })
	letters := db.DeadLetters(deadletter.Config{})

	var (
		mu      sync.Mutex
		log     []string // "id#attempt" of each call, in order
		fixed   bool
		handled = map[string]int{}
		done    = make(chan struct{}, 100)
	)
	prefix := Name("m")
	poison, after := prefix+"-a1", prefix+"-a2"
	h := func(ctx context.Context, m transport.Message) error {
		mu.Lock()
		defer mu.Unlock()
		log = append(log, m.ID)
		if m.ID == poison && !fixed {
			return errors.New("poison")
		}
		handled[m.ID]++
		done <- struct{}{}
		return nil
	}
	c, err := transport.NewConsumer(subscriber(t, tr), topic, group, h, transport.ConsumerConfig{
		DeadLetters: letters, MaxAttempts: 3, Retries: -1, ReplayInterval: 50 * time.Millisecond,
		Backoff: resilience.Backoff{Initial: time.Second, Max: time.Second, Multiplier: 1, Jitter: resilience.NoJitter},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Create the group before publishing.
	subscribe(t, subscriber(t, tr), topic, group).Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	bs := ids(prefix+"-b", 5)
	publish(t, tr, topic, msg(poison, "a"))
	for _, id := range bs {
		publish(t, tr, topic, msg(id, "b"))
	}
	waitFor(t, tr, done, len(bs))
	mu.Lock()
	// Other keys were not held back by the poison message's redeliveries:
	// every b message was handled before its second attempt.
	first := slices.Index(log, poison)
	for _, id := range bs {
		if i := slices.Index(log, id); slices.Contains(log[first+1:max(i, first+1)], poison) {
			t.Errorf("%s was handled after the poison message's second attempt: %v", id, log)
		}
	}
	mu.Unlock()

	var letter deadletter.Letter
	waitLetters := func(n int) []deadletter.Letter {
		deadline := time.Now().Add(tr.Wait + 5*time.Second)
		for {
			ls, err := letters.List(context.Background(), deadletter.Query{Source: c.Source()})
			if err != nil {
				t.Fatal(err)
			}
			if len(ls) >= n || time.Now().After(deadline) {
				return ls
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ls := waitLetters(1)
	if len(ls) != 1 || ls[0].Message.ID != poison || ls[0].State != deadletter.Failed || ls[0].Attempts != 3 || ls[0].Key != "a" {
		t.Fatalf("letters %+v, want %s failed after 3 attempts with key a", ls, poison)
	}
	letter = ls[0]
	// The key is blocked: its next message is parked, other keys flow.
	other := prefix + "-c1"
	publish(t, tr, topic, msg(after, "a"), msg(other, "c"))
	waitFor(t, tr, done, 1)
	ls = waitLetters(2)
	if len(ls) != 2 || ls[1].Message.ID != after || ls[1].State != deadletter.Parked {
		t.Fatalf("letters %+v, want %s parked behind %s", ls, after, poison)
	}
	mu.Lock()
	fixed = true
	mu.Unlock()

	if _, err := letters.Replay(context.Background(), letter.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tr, done, 2)
	mu.Lock()
	defer mu.Unlock()
	if i, j := slices.Index(log, after), slices.Index(log, poison); i < 0 || j < 0 || i < j {
		t.Errorf("after the replay: calls %v, want %s, then %s", log, poison, after)
	}
	for _, id := range append(bs, poison, after, other) {
		if handled[id] != 1 {
			t.Errorf("%s handled %d times, want 1", id, handled[id])
		}
	}
}

func waitFor(t *testing.T, tr Transport, done chan struct{}, n int) {
	t.Helper()
	timer := time.NewTimer(tr.Wait)
	defer timer.Stop()
	for range n {
		select {
		case <-done:
		case <-timer.C:
			t.Fatalf("not handled within %v", tr.Wait)
		}
	}
}

func testCloseSubscription(t *testing.T, tr Transport) {
	topic, group := Name("t"), Name("g")
	sub := subscribe(t, subscriber(t, tr), topic, group)
	errc := make(chan error, 1)
	go func() {
		_, err := sub.Receive(context.Background())
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Receive start waiting (if it has not, the check below holds all the same)
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Receive under way at Close: %v, want ErrClosed", err)
		}
	case <-time.After(tr.Wait):
		t.Fatal("Receive under way did not return after Close")
	}
	if _, err := sub.Receive(context.Background()); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Receive after Close: %v, want ErrClosed", err)
	}
	if err := sub.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func testCloseSubscriber(t *testing.T, tr Transport) {
	topic, group := Name("t"), Name("g")
	s := tr.NewSubscriber(t)
	sub := subscribe(t, s, topic, group)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := sub.Receive(context.Background()); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Receive after the Subscriber closed: %v, want ErrClosed", err)
	}
	if _, err := s.Subscribe(context.Background(), topic, group); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func testClosePublisher(t *testing.T, tr Transport) {
	if err := tr.Publisher.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tr.Publisher.Publish(context.Background(), Name("t"), msg(recado.NewID(), "k")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := tr.Publisher.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func testReceiveContext(t *testing.T, tr Transport) {
	sub := subscribe(t, subscriber(t, tr), Name("t"), Name("g"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := sub.Receive(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Receive with nothing to receive: %v, want the context's deadline", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := sub.Receive(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Receive with a cancelled context: %v, want context.Canceled", err)
	}
}

// The broker refuses what the contract rules out, through Guard or on its
// own, with ErrInvalid.
func testInvalid(t *testing.T, tr Transport) {
	p := transport.Guard(tr.Publisher, transport.GuardConfig{})
	ctx := context.Background()
	for _, tc := range []struct {
		topic string
		m     transport.Message
	}{
		{"", msg("x", "k")},
		{"a.b", msg("x", "k")},
		{Name("t"), transport.Message{}},
		{Name("t"), msg("bad\x00id", "k")},
	} {
		if err := p.Publish(ctx, tc.topic, tc.m); !errors.Is(err, transport.ErrInvalid) {
			t.Errorf("Publish(%q, ID %q): %v, want ErrInvalid", tc.topic, tc.m.ID, err)
		}
	}
	s := subscriber(t, tr)
	for _, names := range [][2]string{{"", "g"}, {"t", ""}, {"t.x", "g"}, {"t", "g*"}} {
		if _, err := s.Subscribe(ctx, names[0], names[1]); !errors.Is(err, transport.ErrInvalid) {
			t.Errorf("Subscribe(%q, %q): %v, want ErrInvalid", names[0], names[1], err)
		}
	}
}

// A message published twice with one ID is delivered once.
func testDedup(t *testing.T, tr Transport) {
	if !tr.Features.Dedup {
		t.Skip("the broker does not de-duplicate")
	}
	topic, group := Name("t"), Name("g")
	sub := subscribe(t, subscriber(t, tr), topic, group)
	m1, m2 := msg(recado.NewID(), "k"), msg(recado.NewID(), "k")
	publish(t, tr, topic, m1)
	publish(t, tr, topic, m1, m2)
	for _, want := range []string{m1.ID, m2.ID} {
		d := receive(t, tr, sub)
		ack(t, d)
		if d.ID != want {
			t.Fatalf("got %s, want %s (%s was published twice)", d.ID, want, m1.ID)
		}
	}
}

// While the broker is down, a guarded publisher fails fast with
// ErrUnavailable; once it is back, publishes succeed again and a
// subscription made before the outage receives them without being made
// again.
func testOutage(t *testing.T, tr Transport) {
	if tr.Outage == nil {
		t.Skip("no outage to make")
	}
	topic, group := Name("t"), Name("g")
	sub := subscribe(t, subscriber(t, tr), topic, group)
	breaker, err := resilience.NewBreaker(resilience.BreakerConfig{WindowSize: 4, MinCalls: 2,
		OpenPeriod: resilience.Backoff{Initial: 200 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: resilience.NoJitter}})
	if err != nil {
		t.Fatal(err)
	}
	p := transport.Guard(tr.Publisher, transport.GuardConfig{Breaker: breaker, Timeout: 2 * time.Second})
	restore := tr.Outage(t)
	restored := false
	defer func() {
		if !restored {
			restore()
		}
	}()
	var last error
	for range 10 {
		last = p.Publish(context.Background(), topic, msg(recado.NewID(), "k"))
		if errors.Is(last, resilience.ErrOpen) {
			break
		}
	}
	if !errors.Is(last, resilience.ErrOpen) || !errors.Is(last, transport.ErrUnavailable) {
		t.Fatalf("Publish during the outage: %v, want an open breaker's ErrUnavailable", last)
	}
	restore()
	restored = true
	m := msg(recado.NewID(), "k")
	deadline := time.Now().Add(tr.Wait + 10*time.Second)
	for {
		err := p.Publish(context.Background(), topic, m)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish after the outage: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		// Messages published during the outage may arrive too (a publish
		// that failed may have been stored): skip them.
		d := receive(t, tr, sub)
		ack(t, d)
		if d.ID == m.ID {
			return
		}
	}
}
