package eventstore

import (
	"context"
	"iter"
	"strings"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

// Filter selects events by stream and type. The zero Filter matches every
// event. An event matches when its stream is one of Streams or starts with one of
// StreamPrefixes (if either is set), and its type is one of Types (if set).
type Filter struct {
	// Streams are exact stream names.
	Streams []string
	// StreamPrefixes select categories: "order-" matches "order-42".
	StreamPrefixes []string
	// Types are event type names.
	Types []string
}

// IsZero reports whether f matches every event.
func (f Filter) IsZero() bool {
	return len(f.Streams) == 0 && len(f.StreamPrefixes) == 0 && len(f.Types) == 0
}

// Match reports whether e passes f.
func (f Filter) Match(e *recado.Event) bool {
	if len(f.Streams) > 0 || len(f.StreamPrefixes) > 0 {
		ok := false
		for _, s := range f.Streams {
			if e.Stream == s {
				ok = true
				break
			}
		}
		for _, p := range f.StreamPrefixes {
			if ok {
				break
			}
			ok = strings.HasPrefix(e.Stream, p)
		}
		if !ok {
			return false
		}
	}
	if len(f.Types) == 0 {
		return true
	}
	for _, t := range f.Types {
		if e.Type == t {
			return true
		}
	}
	return false
}

// MessageKind says what a subscription [Message] carries.
type MessageKind uint8

const (
	// KindEvent: an event that passed the filter.
	KindEvent MessageKind = iota + 1
	// KindProgress: the subscription has read up to Position and found nothing
	// more that passes the filter. Store Position as the checkpoint.
	KindProgress
	// KindCaughtUp: the subscription has delivered everything committed up to
	// Position and now waits for new events.
	KindCaughtUp
)

func (k MessageKind) String() string {
	switch k {
	case KindEvent:
		return "event"
	case KindProgress:
		return "progress"
	case KindCaughtUp:
		return "caught up"
	}
	return "invalid"
}

// Message is one item of a subscription.
type Message struct {
	Kind MessageKind
	// Event is set when Kind is KindEvent.
	Event recado.Event
	// Position is how far the subscription has read: the event's position for
	// KindEvent. Resuming a subscription after Position continues just after this
	// message.
	Position recado.Position
}

// subscribeOptions are the settings of a subscription.
type subscribeOptions struct {
	filter       Filter
	batchSize    int
	pollInterval time.Duration
}

// SubscribeOption sets an option of a subscription.
type SubscribeOption func(*subscribeOptions)

// WithFilter delivers only the events that pass f; the others are skipped,
// with KindProgress messages so checkpoints still move.
func WithFilter(f Filter) SubscribeOption { return func(o *subscribeOptions) { o.filter = f } }

// WithBatchSize sets how often a subscription takes stock while it reads
// (default 256): after every n events read it checks ctx, and if the filter
// passed none of the last events, reports how far it has read with a
// KindProgress message. The log itself is read in the backend's own pages,
// which this does not change.
func WithBatchSize(n int) SubscribeOption { return func(o *subscribeOptions) { o.batchSize = n } }

// WithPollInterval sets how often an idle subscription reads the log again in
// case a commit was not notified (another process wrote to the same SQLite
// file, say). Default 1s. Commits made through the same store, and on
// PostgreSQL by any process, wake subscriptions at once.
func WithPollInterval(d time.Duration) SubscribeOption {
	return func(o *subscribeOptions) { o.pollInterval = d }
}

// Subscribe reads the global log after position after, then waits for new
// events and delivers them as they commit, until ctx ends or the loop stops
// iterating. The sequence yields a [Message] with a nil error for each event
// that passes the filter, a KindProgress message after a stretch with nothing
// that passes, and a KindCaughtUp message each time it has delivered
// everything and starts waiting. It ends after yielding an error: the store's,
// or ctx's.
//
// Before each KindCaughtUp, the subscription's Position has reached the
// position in the KindCaughtUp message through the KindEvent or KindProgress
// message just before it, so a subscriber that stores positions has stored the
// head when it is told it caught up.
//
// A subscriber that stores the Position of each message it has handled, and
// subscribes again after it, sees every event exactly once and each stream in
// order: events are read as [Store.ReadAll] reads them.
func (s *Store) Subscribe(ctx context.Context, after recado.Position, opts ...SubscribeOption) iter.Seq2[Message, error] {
	o := subscribeOptions{batchSize: 256, pollInterval: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	return func(yield func(Message, error) bool) {
		fail := func(err error) { yield(Message{}, &Error{Op: "subscribe", Err: err}) }
		if o.batchSize <= 0 || o.pollInterval <= 0 {
			fail(invalid("batch size %d and poll interval %v must be positive", o.batchSize, o.pollInterval))
			return
		}
		timer := time.NewTimer(o.pollInterval)
		defer timer.Stop()
		pos := after      // how far the log has been read
		reported := after // the last position told to the subscriber
		caughtUp := false // whether KindCaughtUp was sent for pos
		// stock ends a batch of events read: it reports progress past
		// events the filter skipped, and checks ctx.
		stock := func() bool {
			if reported != pos {
				if !yield(Message{Kind: KindProgress, Position: pos}, nil) {
					return false
				}
				reported = pos
			}
			if err := ctx.Err(); err != nil {
				fail(err)
				return false
			}
			return true
		}
		for {
			committed := s.d.Committed()
			if err := ctx.Err(); err != nil {
				fail(err)
				return
			}
			// One read to the end of the log, without a limit: the driver
			// reads it in pages as large as it likes, as for ReadAll, instead
			// of starting a new read every batch.
			n, inBatch := 0, 0
			for e, err := range s.d.ReadAll(ctx, pos, driver.Read{}) {
				if err != nil {
					fail(err)
					return
				}
				n++
				pos = e.Position
				if o.filter.Match(&e) {
					if !yield(Message{Kind: KindEvent, Event: e, Position: pos}, nil) {
						return
					}
					reported = pos
				}
				if inBatch++; inBatch == o.batchSize {
					if !stock() {
						return
					}
					inBatch = 0
				}
			}
			if n > 0 {
				caughtUp = false
				if inBatch > 0 && !stock() {
					return
				}
			}
			if !caughtUp {
				if !yield(Message{Kind: KindCaughtUp, Position: pos}, nil) {
					return
				}
				caughtUp = true
			}
			timer.Reset(o.pollInterval)
			select {
			case <-ctx.Done():
				fail(ctx.Err())
				return
			case <-committed:
			case <-timer.C:
			}
		}
	}
}
