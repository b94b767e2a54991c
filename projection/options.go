package projection

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// Event is an event as a handler receives it: the stored event, and where
// it goes.
type Event struct {
	recado.Event
	// Projection is the projection's name.
	Projection string
	// Copy is the copy of the read model to write to: 1 for the first, one
	// more for each rebuild. A handler of a projection that is rebuilt keeps
	// each copy apart (a table per copy, or a copy column).
	Copy uint64
	// Partition is the partition that applies the event (see [PartitionOf]).
	Partition int
	// Replay reports that the copy is being rebuilt: queries do not read it
	// yet, and the active copy has applied the event or will. A handler must
	// not repeat effects outside its read model (a mail, a call) for it.
	Replay bool
	// Letter is, for an event delivered again from the dead-letter queue
	// because someone asked for its replay, the letter's ID; 0 otherwise.
	Letter uint64
}

// Handler applies events to a read model. In the default, transactional
// mode, Apply runs inside the unit of work tx that also moves the
// projection's checkpoint: what it writes in tx commits together with the
// checkpoint, or not at all, so each event has its effect exactly once.
// Apply runs for one partition at a time, in the order of the partition's
// events; the partitions of a projection run side by side.
//
// An error from Apply (or a panic, which the runner recovers) rolls tx
// back; the runner tries the event again with back-off and, when it keeps
// failing, sends it to the dead-letter queue. Apply must honour ctx.
type Handler[T recado.Tx] interface {
	Apply(ctx context.Context, tx T, e Event) error
}

// BatchHandler is a Handler that can also apply several events at once, to
// write its read model in fewer statements (a multi-row insert, a COPY).
// In transactional mode the runner calls ApplyBatch once per unit of work,
// with the unit's events to apply in the partition's order (those parked
// behind a dead letter left out), instead of Apply for each.
//
// If ApplyBatch fails (or panics), the unit rolls back and the runner
// applies the same events again one at a time with Apply, which finds the
// failing event: it is retried and dead-lettered as with any Handler, and
// the others are applied. Apply and ApplyBatch must therefore have the same
// effect. Events delivered again from the dead-letter queue, and events
// retried alone, go to Apply. The slice is the runner's: do not keep it
// after ApplyBatch returns.
type BatchHandler[T recado.Tx] interface {
	Handler[T]
	ApplyBatch(ctx context.Context, tx T, events []Event) error
}

// HandlerFunc is a function that is a [Handler].
type HandlerFunc[T recado.Tx] func(ctx context.Context, tx T, e Event) error

// Apply calls f.
func (f HandlerFunc[T]) Apply(ctx context.Context, tx T, e Event) error { return f(ctx, tx, e) }

// AtLeastOnce returns a Handler whose effects live outside the runner's
// database (a search index, another service, a cache): fn runs outside any
// unit of work, and the checkpoint is saved after it, so an event whose
// effect was made just before a crash is applied again after the restart.
// Make fn idempotent: an upsert keyed by the event's ID or its stream and
// version, or an inbox (package resilience/inbox) claimed in the unit of
// work that makes the effect in the other database.
func AtLeastOnce[T recado.Tx](fn func(ctx context.Context, e Event) error) Handler[T] {
	return outside[T](fn)
}

// outside is a Handler made by AtLeastOnce; the runner recognises it.
type outside[T recado.Tx] func(ctx context.Context, e Event) error

func (f outside[T]) Apply(ctx context.Context, _ T, e Event) error { return f(ctx, e) }

// Stores are the stores a runner works with. They must all be stores of
// the DB whose units of work the runner is given (memory.DB's Events,
// Checkpoints, Leases and DeadLetters, say), so that a lease check, a
// checkpoint, a dead letter and the handler's writes commit together.
type Stores struct {
	Events      *eventstore.Store
	Checkpoints *checkpoint.Store
	Leases      *lease.Store
	DeadLetters *deadletter.Store
}

func (s Stores) check() error {
	if s.Events == nil || s.Checkpoints == nil || s.Leases == nil || s.DeadLetters == nil {
		return errors.New("Stores needs Events, Checkpoints, Leases and DeadLetters")
	}
	return nil
}

// Defaults of [Options].
const (
	DefaultBatch        = 256
	DefaultLeaseTTL     = 30 * time.Second
	DefaultPollInterval = time.Second
)

// Options configure a [Runner]. Name and Handler are required; the zero
// value of every other field is a sensible default.
type Options[T recado.Tx] struct {
	// Name names the projection: its checkpoints, leases and dead letters
	// are kept under it. 1 to checkpoint.MaxNameLen bytes.
	Name string
	// Handler applies the events. See [Handler] and [AtLeastOnce].
	Handler Handler[T]
	// Filter selects the events the projection reads (by stream, category
	// and type); the zero Filter selects all. The checkpoint moves past the
	// others too.
	Filter eventstore.Filter
	// Partitions spreads the streams over this many partitions (default 1),
	// which run side by side, each with its own checkpoint, lease and order:
	// the events of one stream are always applied in order, by one
	// partition. To change it for a projection that exists, rebuild it.
	Partitions int
	// Batch is the most events applied in one unit of work (default 256):
	// larger batches catch up faster, smaller ones hold the database's
	// writer for less time.
	Batch int
	// Retry is how a failing event is tried again before it goes to the
	// dead-letter queue: by default 3 attempts in all (the first included),
	// with full-jitter exponential back-off from 100 ms up to 10 s. A
	// permanent error (resilience.MarkPermanent) is not tried again.
	Retry resilience.RetryConfig
	// Clock drives the retry's back-off; nil means the system clock. Tests
	// pass a fake one (package resilience/resiliencetest).
	Clock resilience.Clock
	// LeaseTTL is how long a partition's lease lasts unless renewed
	// (default 30 s). The runner renews it every third of it; a runner that
	// dies holds its partitions until the lease expires, then a standby
	// takes them over.
	LeaseTTL time.Duration
	// PollInterval is how often a standby runner tries to take partitions
	// over, a partition with dead letters looks for replay requests, and an
	// idle subscription reads the log in case a commit went unnotified
	// (default 1 s).
	PollInterval time.Duration
	// Holder names this runner in the leases it holds; default the host
	// name, the process ID and a random suffix. Holders must be unique.
	Holder string
	// Swap is called in the unit of work that makes a rebuilt copy (new)
	// the active one in place of old: switch the queries over there (flip a
	// pointer in tx.OnCommit, rename a table) and drop the old copy. A
	// runner without Swap does not build copies: Rebuild fails.
	Swap func(ctx context.Context, tx T, old, new uint64) error
	// Hooks report what the runner does, for metrics. They are called on
	// the runner's goroutines and must not block.
	Hooks Hooks
	// Logger receives the runner's warnings and errors; nil means none.
	Logger *slog.Logger
}

// Hooks are functions a runner calls as it works, each optional.
type Hooks struct {
	// Committed is called after each unit of work that moved a checkpoint
	// has committed.
	Committed func(Batch)
	// DeadLettered is called after an event that kept failing went to the
	// dead-letter queue.
	DeadLettered func(deadletter.Letter)
	// Partition is called when the runner starts running a partition (it
	// took its lease) and when it stops.
	Partition func(PartitionChange)
}

// Batch describes one committed unit of work of a partition.
type Batch struct {
	Projection string
	Copy       uint64
	Partition  int
	// Applied and Parked count the events applied and the events parked
	// behind a dead letter of their stream.
	Applied, Parked int
	// Position is the checkpoint saved.
	Position recado.Position
	// CaughtUp reports that the partition reached the end of the log.
	CaughtUp bool
	// Replay reports that the copy is being rebuilt.
	Replay bool
	// Took is how long the unit of work took, handlers included.
	Took time.Duration
	// Delay is the time from the last applied event's append to the commit:
	// the projection's lag at that moment. Zero when nothing was applied.
	Delay time.Duration
}

// PartitionChange reports that a runner started or stopped running a
// partition of a copy.
type PartitionChange struct {
	Projection string
	Copy       uint64
	Partition  int
	// Running is true when the runner took the partition's lease, false
	// when it stopped.
	Running bool
	// Err is why it stopped: nil when Run ended, an error wrapping
	// lease.ErrLost when another runner took the lease over, or
	// checkpoint.ErrRetired when a rebuild replaced the copy.
	Err error
}

// withDefaults returns o with its zero fields set.
func (o Options[T]) withDefaults() Options[T] {
	if o.Partitions == 0 {
		o.Partitions = 1
	}
	if o.Batch == 0 {
		o.Batch = DefaultBatch
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Holder == "" {
		o.Holder = defaultHolder()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports options that cannot work.
func (o Options[T]) Validate() error {
	switch {
	case o.Name == "" || len(o.Name) > checkpoint.MaxNameLen:
		return fmt.Errorf("Name must be 1 to %d bytes", checkpoint.MaxNameLen)
	case o.Handler == nil:
		return errors.New("Handler is required")
	case o.Partitions < 0 || o.Partitions > checkpoint.MaxPartitions:
		return fmt.Errorf("Partitions must be in 0..%d", checkpoint.MaxPartitions)
	case o.Batch < 0:
		return errors.New("Batch must not be negative")
	case o.LeaseTTL < 0 || (o.LeaseTTL > 0 && o.LeaseTTL < 3*time.Millisecond):
		return errors.New("LeaseTTL must be 0 (the default) or at least 3 ms")
	case o.PollInterval < 0:
		return errors.New("PollInterval must not be negative")
	case len(o.Holder) > lease.MaxHolderLen:
		return fmt.Errorf("Holder must be at most %d bytes", lease.MaxHolderLen)
	}
	return o.Retry.Validate()
}

func defaultHolder() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// PartitionOf returns the partition, of partitions, that applies the events
// of stream: the FNV-1a hash of the stream's name modulo partitions.
func PartitionOf(stream string, partitions int) int {
	if partitions <= 1 {
		return 0
	}
	h := uint32(2166136261) // FNV-1a, without allocating
	for i := 0; i < len(stream); i++ {
		h ^= uint32(stream[i])
		h *= 16777619
	}
	return int(h % uint32(partitions))
}

// Source returns the dead-letter source of copy of the projection name:
// "projection:orders/1". Operators see it on the projection's letters.
func Source(name string, copy uint64) string {
	return "projection:" + name + "/" + strconv.FormatUint(copy, 10)
}

// LeaseName returns the name of the lease of one partition of copy of the
// projection name: "projection:orders/1/0".
func LeaseName(name string, copy uint64, partition int) string {
	return Source(name, copy) + "/" + strconv.Itoa(partition)
}
