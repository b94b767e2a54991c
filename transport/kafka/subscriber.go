package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/recado-dev/recado/transport"
)

// Subscriber joins groups: each subscription is a member of the group, with
// a client of its own. It implements transport.Subscriber.
type Subscriber struct {
	opts Options
	cl   *kgo.Client // for making topics
	adm  *kadm.Client

	mu     sync.Mutex
	subs   map[*subscription]bool
	closed bool
}

var _ transport.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns a subscriber to the brokers. It connects when it
// first subscribes.
func NewSubscriber(opts Options) (*Subscriber, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts.clientOpts()...)
	if err != nil {
		return nil, &transport.Error{Op: "subscribe", Err: err}
	}
	return &Subscriber{opts: opts, cl: cl, adm: kadm.NewClient(cl), subs: map[*subscription]bool{}}, nil
}

// Subscribe makes the topic and the group's retry topic if they do not
// exist, joins the group and returns once the group has given this member
// its partitions (possibly none, when the group has more members than
// partitions). See transport.Subscriber.
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
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fail(transport.ErrClosed)
	}
	main, retry := topicName(topic), retryTopicName(topic, group)
	n, err := ensureTopic(ctx, s.adm, main, s.opts.Partitions, s.opts.ReplicationFactor)
	if err != nil {
		return fail(brokerError(err))
	}
	rn, err := ensureTopic(ctx, s.adm, retry, n, s.opts.ReplicationFactor)
	if err != nil {
		return fail(brokerError(err))
	}
	if rn != n {
		return fail(fmt.Errorf("kafka: %s has %d partitions and its retry topic %s %d: they must be equal", main, n, retry, rn))
	}
	sub, err := s.newSubscription(topic, group)
	if err != nil {
		return fail(err)
	}
	select {
	case <-sub.joined:
	case <-ctx.Done():
		_ = sub.Close()
		return fail(fmt.Errorf("%w: kafka: the group was not joined: %v", transport.ErrUnavailable, ctx.Err()))
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

// Close closes every subscription made through s (handing back what they
// delivered and did not settle) and the client. It is safe to call twice.
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
	var wg sync.WaitGroup
	for sub := range subs {
		wg.Go(func() { _ = sub.Close() })
	}
	wg.Wait()
	s.cl.Close()
	return nil
}

type topicPartition struct {
	topic     string
	partition int32
}

// part is what a member knows of a partition it owns.
type part struct {
	topicPartition
	retry bool

	// Offsets fetched, in order, and those settled: the commit is the first
	// offset not settled.
	order     []int64
	settled   map[int64]bool
	next      int64 // after the last fetched
	committed int64
	out       map[*rec]bool // delivered, not settled
	gone      bool          // revoked or lost

	// Retry partitions only.
	waiting []*rec      // fetched, not due yet, in order
	timer   *time.Timer // for waiting[0]
	held    map[string]int
	expect  map[string]int // copies produced, not fetched yet
	catchUp int64          // the topic's partition waits until this offset is read; -1: it does not wait
}

func newPart(tp topicPartition, retry bool) *part {
	return &part{topicPartition: tp, retry: retry, settled: map[int64]bool{}, next: -1, committed: -1,
		out: map[*rec]bool{}, held: map[string]int{}, expect: map[string]int{}, catchUp: -1}
}

// commitOffset returns the offset to commit: the first one not settled.
func (p *part) commitOffset() int64 {
	for len(p.order) > 0 && p.settled[p.order[0]] {
		delete(p.settled, p.order[0])
		p.order = p.order[1:]
	}
	if len(p.order) > 0 {
		return p.order[0]
	}
	return p.next
}

// rec is a fetched record; its Acker once delivered.
type rec struct {
	s       *subscription
	p       *part
	offset  int64
	m       transport.Message
	attempt int
	due     time.Time

	// Guarded by s.mu.
	settled    bool
	busy       bool // a copy is being produced (nack, or sent behind its key's retries)
	handedBack bool
}

type subscription struct {
	owner                          *Subscriber
	topic, group, main, retry, gid string
	cl                             *kgo.Client     // set after the callbacks may run: they use their argument
	ctx                            context.Context // ends at Close
	cancel                         context.CancelFunc
	joined                         chan struct{}
	joinOnce                       sync.Once
	wg                             sync.WaitGroup
	log                            func(msg string, args ...any)

	mu     sync.Mutex
	parts  map[topicPartition]*part
	ready  []*rec        // to deliver, in order
	wake   chan struct{} // closed and replaced when ready grows
	room   chan struct{} // signalled when Receive takes from ready
	closed bool
	done   chan struct{}
}

func (s *Subscriber) newSubscription(topic, group string) (*subscription, error) {
	sub := &subscription{owner: s, topic: topic, group: group, main: topicName(topic), retry: retryTopicName(topic, group),
		gid: groupName(topic, group), joined: make(chan struct{}), parts: map[topicPartition]*part{},
		wake: make(chan struct{}), room: make(chan struct{}, 1), done: make(chan struct{}),
		log: s.opts.Logger.Warn}
	sub.ctx, sub.cancel = context.WithCancel(context.Background())
	o := &s.opts
	cl, err := kgo.NewClient(append(o.clientOpts(),
		kgo.ConsumerGroup(sub.gid), kgo.ConsumeTopics(sub.main, sub.retry), kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.RangeBalancer()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.BlockRebalanceOnPoll(), kgo.HeartbeatInterval(o.HeartbeatInterval), kgo.SessionTimeout(o.SessionTimeout),
		kgo.OnPartitionsAssigned(sub.assigned), kgo.OnPartitionsRevoked(sub.revoked), kgo.OnPartitionsLost(sub.lost),
	)...)
	if err != nil {
		sub.cancel()
		return nil, err
	}
	sub.cl = cl
	sub.wg.Go(sub.poll)
	sub.wg.Go(sub.commitLoop)
	return sub, nil
}

// poll fetches records into ready (and retry records into their
// partition's waiting queue) until Close.
func (s *subscription) poll() {
	for {
		s.mu.Lock()
		full := len(s.ready) >= s.owner.opts.Prefetch
		s.mu.Unlock()
		if full {
			select {
			case <-s.ctx.Done():
				return
			case <-s.room:
				continue
			}
		}
		fs := s.cl.PollRecords(s.ctx, s.owner.opts.Prefetch)
		if s.ctx.Err() != nil || fs.IsClientClosed() {
			s.cl.AllowRebalance()
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			s.log("transport/kafka: fetch failed", "topic", topic, "partition", p, "error", err)
		})
		var resume []int32
		s.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			if p := s.add(r); p >= 0 {
				resume = append(resume, p)
			}
		})
		s.mu.Unlock()
		if len(resume) > 0 {
			s.cl.ResumeFetchPartitions(map[string][]int32{s.main: resume})
		}
		s.cl.AllowRebalance()
	}
}

// add takes in a fetched record. It returns the partition of the topic
// that may be fetched again now that its retries were read, or -1.
func (s *subscription) add(r *kgo.Record) int32 {
	p := s.parts[topicPartition{r.Topic, r.Partition}]
	if p == nil || p.gone {
		return -1
	}
	p.order = append(p.order, r.Offset)
	p.next = r.Offset + 1
	resume := int32(-1)
	if p.catchUp >= 0 && r.Offset >= p.catchUp-1 {
		p.catchUp = -1
		resume = p.partition
	}
	m, attempts, due, err := message(r)
	if err != nil {
		s.log("transport/kafka: skipped a record that recado cannot read", "topic", r.Topic, "partition", r.Partition,
			"offset", r.Offset, "error", err)
		p.settled[r.Offset] = true
		return resume
	}
	rc := &rec{s: s, p: p, offset: r.Offset, m: m, attempt: attempts + 1, due: due}
	if !p.retry {
		s.ready = append(s.ready, rc)
		s.wakeLocked()
		return resume
	}
	if p.expect[m.Key] > 0 {
		p.expect[m.Key]--
	} else {
		p.held[m.Key]++
	}
	p.waiting = append(p.waiting, rc)
	s.release(p)
	return resume
}

// release moves the due records at the head of p's waiting queue to ready,
// and arms a timer for the next one.
func (s *subscription) release(p *part) {
	now := time.Now()
	n := 0
	for n < len(p.waiting) && !p.waiting[n].due.After(now) {
		n++
	}
	if n > 0 {
		s.ready = append(s.ready, p.waiting[:n]...)
		p.waiting = slices.Delete(p.waiting, 0, n)
		s.wakeLocked()
	}
	if len(p.waiting) > 0 && p.timer == nil {
		p.timer = time.AfterFunc(time.Until(p.waiting[0].due), func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			p.timer = nil
			if !p.gone {
				s.release(p)
			}
		})
	}
}

func (s *subscription) wakeLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
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
		if s.closed {
			s.mu.Unlock()
			return fail(transport.ErrClosed)
		}
		for len(s.ready) > 0 {
			rc := s.ready[0]
			s.ready[0] = nil
			s.ready = s.ready[1:]
			select {
			case s.room <- struct{}{}:
			default:
			}
			if rc.p.gone {
				continue
			}
			if rp := s.retryPart(rc.p); !rc.p.retry && rp != nil && rp.held[rc.m.Key] > 0 {
				s.sendBehind(rc, rp)
				continue
			}
			rc.p.out[rc] = true
			s.mu.Unlock()
			return transport.Delivery{Message: rc.m, Topic: s.topic, Attempt: rc.attempt, Acker: rc}, nil
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-s.done:
		case <-wake:
		}
	}
}

// retryPart returns the retry partition paired with p.
func (s *subscription) retryPart(p *part) *part {
	return s.parts[topicPartition{s.retry, p.partition}]
}

// sendBehind sends rc, a record of a key that has records in the retry
// topic, to the retry topic behind them, and settles it once stored.
func (s *subscription) sendBehind(rc *rec, rp *part) {
	rc.busy = true
	rp.held[rc.m.Key]++
	rp.expect[rc.m.Key]++
	s.cl.Produce(s.ctx, record(s.retry, &rc.m, rc.attempt-1, time.Time{}), func(_ *kgo.Record, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		rc.busy = false
		if err != nil {
			// Closing: the record stays unsettled, and the next owner reads it again.
			s.unhold(rp, rc.m.Key)
			return
		}
		s.settleLocked(rc)
	})
}

func (s *subscription) unhold(rp *part, key string) {
	for _, m := range []map[string]int{rp.held, rp.expect} {
		if m[key]--; m[key] <= 0 {
			delete(m, key)
		}
	}
}

func (s *subscription) settleLocked(rc *rec) {
	if rc.settled {
		return
	}
	rc.settled = true
	p := rc.p
	delete(p.out, rc)
	p.settled[rc.offset] = true
	if p.retry {
		if p.held[rc.m.Key]--; p.held[rc.m.Key] <= 0 {
			delete(p.held, rc.m.Key)
		}
	}
}

var errSettled = errors.New("kafka: the delivery was settled already")

// check reports why rc cannot be settled now, if it cannot.
func (rc *rec) check(op string) error {
	var err error
	switch {
	case rc.settled || rc.busy:
		err = errSettled
	case rc.handedBack || rc.p.gone:
		err = fmt.Errorf("%w: kafka: the partition was revoked and the delivery handed back", transport.ErrUnavailable)
	default:
		return nil
	}
	return &transport.Error{Op: op, Topic: rc.s.topic, Err: err}
}

// Ack marks the record settled; the member commits it with the next
// commit.
func (rc *rec) Ack(ctx context.Context) error {
	s := rc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := rc.check("ack"); err != nil {
		return err
	}
	s.settleLocked(rc)
	return nil
}

// Nack produces a copy of the record to the retry topic, due after delay,
// and marks the record settled once the copy is stored.
func (rc *rec) Nack(ctx context.Context, delay time.Duration) error {
	s := rc.s
	s.mu.Lock()
	if err := rc.check("nack"); err != nil {
		s.mu.Unlock()
		return err
	}
	rc.busy = true
	rp := s.retryPart(rc.p)
	if rp != nil {
		rp.held[rc.m.Key]++
		rp.expect[rc.m.Key]++
	}
	s.mu.Unlock()
	var due time.Time
	if delay > 0 {
		due = time.Now().Add(delay)
	}
	err := s.cl.ProduceSync(ctx, record(s.retry, &rc.m, rc.attempt, due)).FirstErr()
	s.mu.Lock()
	defer s.mu.Unlock()
	rc.busy = false
	if err != nil {
		if rp != nil {
			s.unhold(rp, rc.m.Key)
		}
		return &transport.Error{Op: "nack", Topic: s.topic, Err: brokerError(err)}
	}
	s.settleLocked(rc)
	return nil
}

// assigned sets up the partitions the group gave this member. Each topic
// partition whose retry partition holds records not yet committed is
// paused until they are read, so that they hold their keys back first.
func (s *subscription) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	defer s.joinOnce.Do(func() { close(s.joined) })
	s.mu.Lock()
	for topic, ps := range assigned {
		for _, p := range ps {
			tp := topicPartition{topic, p}
			s.parts[tp] = newPart(tp, topic == s.retry)
		}
	}
	s.mu.Unlock()
	retryPs := assigned[s.retry]
	if len(retryPs) == 0 {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(actx, s.retry)
	if err != nil {
		s.log("transport/kafka: cannot read the retry topic's end; keys may be delivered ahead of their retries",
			"topic", s.retry, "error", err)
		return
	}
	starts, _ := adm.ListStartOffsets(actx, s.retry)
	committed, _ := adm.FetchOffsets(actx, s.gid)
	var pause []int32
	s.mu.Lock()
	for _, p := range retryPs {
		end, ok := ends.Lookup(s.retry, p)
		if !ok || end.Err != nil {
			continue
		}
		from := int64(0)
		if st, ok := starts.Lookup(s.retry, p); ok && st.Err == nil && st.Offset > 0 {
			from = st.Offset
		}
		if c, ok := committed.Lookup(s.retry, p); ok && c.Err == nil && c.At > from {
			from = c.At
		}
		if from < end.Offset {
			s.parts[topicPartition{s.retry, p}].catchUp = end.Offset
			pause = append(pause, p)
		}
	}
	s.mu.Unlock()
	if len(pause) > 0 {
		cl.PauseFetchPartitions(map[string][]int32{s.main: pause})
	}
}

func (s *subscription) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	s.handBack(cl, revoked, true)
}

func (s *subscription) lost(ctx context.Context, cl *kgo.Client, lost map[string][]int32) {
	s.handBack(cl, lost, false)
}

// handBack gives up the partitions in which: if the member still owns them
// (a revocation), it re-publishes the records it delivered and did not
// settle to the retry topic with one more attempt, and commits. Records
// fetched and not delivered are left to the next owner.
func (s *subscription) handBack(cl *kgo.Client, which map[string][]int32, owned bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.mu.Lock()
	var parts []*part
	var back []*rec
	for topic, ps := range which {
		for _, p := range ps {
			pt := s.parts[topicPartition{topic, p}]
			if pt == nil {
				continue
			}
			parts = append(parts, pt)
			for rc := range pt.out {
				if !rc.busy {
					rc.handedBack = true
					back = append(back, rc)
				}
			}
		}
	}
	slices.SortFunc(back, func(a, b *rec) int {
		return cmp.Or(cmp.Compare(a.p.partition, b.p.partition), cmp.Compare(a.offset, b.offset))
	})
	s.mu.Unlock()
	if owned && len(back) > 0 {
		copies := make([]*kgo.Record, len(back))
		for i, rc := range back {
			copies[i] = record(s.retry, &rc.m, rc.attempt, time.Time{})
		}
		err := cl.ProduceSync(ctx, copies...).FirstErr()
		s.mu.Lock()
		if err == nil {
			for _, rc := range back {
				s.settleLocked(rc)
			}
		}
		s.mu.Unlock()
		if err != nil {
			s.log("transport/kafka: cannot hand deliveries back; the next owner reads them again", "group", s.gid, "error", err)
		}
	}
	offsets := map[string]map[int32]kgo.EpochOffset{}
	var paused []int32
	s.mu.Lock()
	for _, pt := range parts {
		pt.gone = true
		if pt.timer != nil {
			pt.timer.Stop()
			pt.timer = nil
		}
		delete(s.parts, pt.topicPartition)
		if !pt.retry {
			paused = append(paused, pt.partition)
		}
		if off := pt.commitOffset(); off >= 0 {
			if offsets[pt.topic] == nil {
				offsets[pt.topic] = map[int32]kgo.EpochOffset{}
			}
			offsets[pt.topic][pt.partition] = kgo.EpochOffset{Epoch: -1, Offset: off}
		}
	}
	s.ready = slices.DeleteFunc(s.ready, func(rc *rec) bool { return rc.p.gone })
	s.mu.Unlock()
	if owned && len(offsets) > 0 {
		cl.CommitOffsetsSync(ctx, offsets, s.onCommit)
	}
	if len(paused) > 0 {
		cl.ResumeFetchPartitions(map[string][]int32{s.main: paused})
	}
}

func (s *subscription) onCommit(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
	if err == nil {
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					err = fmt.Errorf("partition %d of %s: error code %d", p.Partition, t.Topic, p.ErrorCode)
				}
			}
		}
	}
	if err != nil && s.ctx.Err() == nil {
		s.log("transport/kafka: commit failed; the next owner reads settled records again", "group", s.gid, "error", err)
	}
}

// commitLoop commits settled offsets every CommitInterval until Close.
func (s *subscription) commitLoop() {
	t := time.NewTicker(s.owner.opts.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		offsets := map[string]map[int32]kgo.EpochOffset{}
		s.mu.Lock()
		for _, pt := range s.parts {
			if off := pt.commitOffset(); off > pt.committed && off >= 0 {
				if offsets[pt.topic] == nil {
					offsets[pt.topic] = map[int32]kgo.EpochOffset{}
				}
				offsets[pt.topic][pt.partition] = kgo.EpochOffset{Epoch: -1, Offset: off}
				pt.committed = off
			}
		}
		s.mu.Unlock()
		if len(offsets) > 0 {
			s.cl.CommitOffsetsSync(s.ctx, offsets, s.onCommit)
		}
	}
}

// Close stops fetching, hands back what was delivered and not settled,
// commits, and leaves the group. It is safe to call twice.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.cl.CloseAllowingRebalance() // leaving revokes every partition: handBack runs
	s.owner.mu.Lock()
	delete(s.owner.subs, s)
	s.owner.mu.Unlock()
	return nil
}
