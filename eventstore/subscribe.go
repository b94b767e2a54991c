package eventstore

import (
	"context"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/recado-dev/recado"
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

// SubscribeOptions are the settings of a subscription, resolved from
// [SubscribeOption]s.
type SubscribeOptions struct {
	// Filter selects the events delivered; others are skipped, with
	// KindProgress messages so checkpoints still move.
	Filter Filter
	// BatchSize is how many events each read of the log asks for. Default 256.
	BatchSize int
	// PollInterval is how often the log is read again while idle, in case a
	// commit was not notified (another process wrote, or the store is not a
	// [Notifier]). Default: 1s for a Notifier, 100ms otherwise.
	PollInterval time.Duration
}

// SubscribeOption sets an option of a subscription.
type SubscribeOption func(*SubscribeOptions)

// WithFilter delivers only the events that pass f.
func WithFilter(f Filter) SubscribeOption { return func(o *SubscribeOptions) { o.Filter = f } }

// WithBatchSize sets how many events each read of the log asks for.
func WithBatchSize(n int) SubscribeOption { return func(o *SubscribeOptions) { o.BatchSize = n } }

// WithPollInterval sets how often an idle subscription reads the log again.
func WithPollInterval(d time.Duration) SubscribeOption {
	return func(o *SubscribeOptions) { o.PollInterval = d }
}

// NewSubscribeOptions resolves opts and fills in defaults, for backends.
func NewSubscribeOptions(s Store, opts ...SubscribeOption) SubscribeOptions {
	var o SubscribeOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 256
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 100 * time.Millisecond
		if _, ok := s.(Notifier); ok {
			o.PollInterval = time.Second
		}
	}
	return o
}

// Subscribe reads the global log after position after, then waits for new
// events and delivers them as they commit, until ctx ends or the loop stops
// iterating. The sequence yields a [Message] with a nil error for each event
// that passes the filter, a KindProgress message after a stretch with nothing that
// passes, and a KindCaughtUp message each time it has delivered everything and
// starts waiting. It ends after yielding an error: the store's, or ctx's.
//
// Before each KindCaughtUp, the subscription's Position has reached the position
// in the KindCaughtUp message through the KindEvent or KindProgress message just
// before it, so a subscriber that stores positions has stored the head when it is
// told it caught up. A store's own [Subscriber] must keep the same promise.
//
// A subscriber that stores the Position of each message it has handled, and
// subscribes again after it, sees every event exactly once and each stream in
// order. Events are read with [Store.ReadAll], so this holds for every store that
// passes eventstoretest; the store's own [Subscriber] is used if it has one.
func Subscribe(ctx context.Context, s Store, after recado.Position, opts ...SubscribeOption) iter.Seq2[Message, error] {
	if sub, ok := s.(Subscriber); ok {
		return sub.Subscribe(ctx, after, opts...)
	}
	return Poll(ctx, s, after, opts...)
}

// Poll is the subscription [Subscribe] runs for stores without a [Subscriber]:
// it reads the log in batches and, once caught up, waits for the store's
// [Notifier] or the poll interval. Backends with a Subscriber of their own may
// use it as their fallback.
func Poll(ctx context.Context, s Store, after recado.Position, opts ...SubscribeOption) iter.Seq2[Message, error] {
	o := NewSubscribeOptions(s, opts...)
	notifier, _ := s.(Notifier)
	return func(yield func(Message, error) bool) {
		timer := time.NewTimer(o.PollInterval)
		defer timer.Stop()
		pos := after      // how far the log has been read
		reported := after // the last position told to the subscriber
		caughtUp := false // whether KindCaughtUp was sent for pos
		for {
			var committed <-chan struct{}
			if notifier != nil {
				committed = notifier.Committed()
			}
			if err := ctx.Err(); err != nil {
				yield(Message{}, err)
				return
			}
			n := 0
			for e, err := range s.ReadAll(ctx, pos, Limit(o.BatchSize)) {
				if err != nil {
					yield(Message{}, err)
					return
				}
				n++
				pos = e.Position
				if o.Filter.Match(&e) {
					if !yield(Message{Kind: KindEvent, Event: e, Position: pos}, nil) {
						return
					}
					reported = pos
				}
			}
			if n > 0 {
				caughtUp = false
				if reported != pos {
					if !yield(Message{Kind: KindProgress, Position: pos}, nil) {
						return
					}
					reported = pos
				}
			}
			if n == o.BatchSize {
				continue // more may be waiting
			}
			if !caughtUp {
				if !yield(Message{Kind: KindCaughtUp, Position: pos}, nil) {
					return
				}
				caughtUp = true
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(o.PollInterval)
			select {
			case <-ctx.Done():
				yield(Message{}, ctx.Err())
				return
			case <-committed:
			case <-timer.C:
			}
		}
	}
}

// Signal broadcasts "events were committed" to any number of waiters. Backends
// embed one to implement [Notifier]. The zero value is ready to use.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// Committed returns a channel closed by the next [Signal.Notify].
func (s *Signal) Committed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes every waiter. It is cheap when nobody waits.
func (s *Signal) Notify() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}
