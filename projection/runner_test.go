package projection_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func stores(db *memory.DB) projection.Stores {
	return projection.Stores{Events: db.Events(), Checkpoints: db.Checkpoints(checkpoint.Config{}),
		Leases: db.Leases(lease.Config{}), DeadLetters: db.DeadLetters(deadletter.Config{})}
}

func newDB(t *testing.T) *memory.DB {
	db := memory.New()
	t.Cleanup(func() { db.Close() })
	return db
}

func options(name string, h projection.Handler[*memory.Tx]) projection.Options[*memory.Tx] {
	return projection.Options[*memory.Tx]{Name: name, Handler: h, PollInterval: 5 * time.Millisecond,
		Retry: resilience.RetryConfig{MaxAttempts: 3}, Clock: resiliencetest.NewAutoClock(time.Now())}
}

func newRunner(t *testing.T, db *memory.DB, o projection.Options[*memory.Tx]) *projection.Runner[*memory.Tx] {
	t.Helper()
	r, err := projection.NewRunner(db, stores(db), o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs r until the test ends; the returned function stops it and
// returns Run's error.
func start(t *testing.T, r *projection.Runner[*memory.Tx]) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func appendTo(t *testing.T, db *memory.DB, stream string, types ...string) eventstore.AppendResult {
	t.Helper()
	events := make([]recado.Event, len(types))
	for i, typ := range types {
		events[i] = recado.NewEvent(typ, fmt.Appendf(nil, `{"i":%d}`, i))
	}
	res, err := db.Events().Append(t.Context(), stream, events)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewRunnerRefusesBadOptions(t *testing.T) {
	db := newDB(t)
	h := projection.HandlerFunc[*memory.Tx](func(context.Context, *memory.Tx, projection.Event) error { return nil })
	cases := []struct {
		name string
		mod  func(o *projection.Options[*memory.Tx])
	}{
		{"no name", func(o *projection.Options[*memory.Tx]) { o.Name = "" }},
		{"long name", func(o *projection.Options[*memory.Tx]) { o.Name = strings.Repeat("n", checkpoint.MaxNameLen+1) }},
		{"no handler", func(o *projection.Options[*memory.Tx]) { o.Handler = nil }},
		{"negative partitions", func(o *projection.Options[*memory.Tx]) { o.Partitions = -1 }},
		{"too many partitions", func(o *projection.Options[*memory.Tx]) { o.Partitions = checkpoint.MaxPartitions + 1 }},
		{"negative batch", func(o *projection.Options[*memory.Tx]) { o.Batch = -1 }},
		{"tiny lease", func(o *projection.Options[*memory.Tx]) { o.LeaseTTL = time.Millisecond }},
		{"negative poll", func(o *projection.Options[*memory.Tx]) { o.PollInterval = -1 }},
		{"long holder", func(o *projection.Options[*memory.Tx]) { o.Holder = strings.Repeat("h", lease.MaxHolderLen+1) }},
		{"bad retry", func(o *projection.Options[*memory.Tx]) { o.Retry.MaxAttempts = -1 }},
	}
	for _, c := range cases {
		o := options("orders", h)
		c.mod(&o)
		if _, err := projection.NewRunner(db, stores(db), o); !errors.Is(err, projection.ErrInvalid) {
			t.Errorf("NewRunner with %s = %v, want ErrInvalid", c.name, err)
		}
	}
	s := stores(db)
	s.Leases = nil
	if _, err := projection.NewRunner(db, s, options("orders", h)); !errors.Is(err, projection.ErrInvalid) {
		t.Errorf("NewRunner without a lease store = %v, want ErrInvalid", err)
	}
	if _, err := projection.NewMonitor(s, 0); !errors.Is(err, projection.ErrInvalid) {
		t.Errorf("NewMonitor without a lease store = %v, want ErrInvalid", err)
	}
	r := newRunner(t, db, options("orders", h))
	if _, err := r.Rebuild(t.Context()); !errors.Is(err, projection.ErrInvalid) {
		t.Errorf("Rebuild without Options.Swap = %v, want ErrInvalid", err)
	}
}

func TestPartitionOf(t *testing.T) {
	counts := make([]int, 8)
	for i := range 800 {
		stream := fmt.Sprintf("order-%d", i)
		p := projection.PartitionOf(stream, 8)
		if p != projection.PartitionOf(stream, 8) || p < 0 || p >= 8 {
			t.Fatalf("PartitionOf(%q, 8) = %d, want the same number in 0..7 every time", stream, p)
		}
		counts[p]++
		if q := projection.PartitionOf(stream, 1); q != 0 {
			t.Errorf("PartitionOf(%q, 1) = %d, want 0", stream, q)
		}
	}
	for p, n := range counts {
		if n < 50 || n > 150 {
			t.Errorf("partition %d of 8 got %d of 800 streams, want about 100", p, n)
		}
	}
	// FNV-1a: the same partitions in every version, process and backend.
	for _, c := range []struct {
		stream     string
		partitions int
		want       int
	}{{"order-42", 8, 4}, {"order-7", 4, 3}, {"order-1", 8, 5}} {
		if got := projection.PartitionOf(c.stream, c.partitions); got != c.want {
			t.Errorf("PartitionOf(%q, %d) = %d, want %d", c.stream, c.partitions, got, c.want)
		}
	}
}

// summaries is a read model in process memory, updated when the runner's
// unit of work commits.
type summaries struct {
	mu     sync.Mutex
	totals map[string]int
}

func (s *summaries) total(stream string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.totals[stream]
}

func (s *summaries) handler() projection.Handler[*memory.Tx] {
	return projection.HandlerFunc[*memory.Tx](func(_ context.Context, tx *memory.Tx, e projection.Event) error {
		tx.OnCommit(func() {
			s.mu.Lock()
			s.totals[e.Stream]++
			s.mu.Unlock()
		})
		return nil
	})
}

// The runner's WaitFor returns only once the units of work up to the
// position have run their OnCommit functions: a read model in process
// memory shows the caller's write at once.
func TestWaitForSeesInMemoryReadModel(t *testing.T) {
	db := newDB(t)
	model := &summaries{totals: map[string]int{}}
	o := options("summaries", model.handler())
	o.Partitions = 3
	r := newRunner(t, db, o)
	start(t, r)
	for i := range 200 {
		stream := fmt.Sprintf("order-%d", i%7)
		before := model.total(stream)
		res := appendTo(t, db, stream, "OrderPlaced")
		if err := r.WaitFor(waitCtx(t), res.LastPosition); err != nil {
			t.Fatal(err)
		}
		if got := model.total(stream); got != before+1 {
			t.Fatalf("after WaitFor, %s has %d events in the read model, want %d", stream, got, before+1)
		}
	}
}

func TestHooks(t *testing.T) {
	db := newDB(t)
	var mu sync.Mutex
	var batches []projection.Batch
	var letters []deadletter.Letter
	var changes []projection.PartitionChange
	o := options("hooked", projection.HandlerFunc[*memory.Tx](func(_ context.Context, _ *memory.Tx, e projection.Event) error {
		if e.Type == "Bad" {
			return resilience.MarkPermanent(errors.New("bad event"))
		}
		return nil
	}))
	o.Batch = 4
	o.Hooks = projection.Hooks{
		Committed:    func(b projection.Batch) { mu.Lock(); batches = append(batches, b); mu.Unlock() },
		DeadLettered: func(l deadletter.Letter) { mu.Lock(); letters = append(letters, l); mu.Unlock() },
		Partition:    func(c projection.PartitionChange) { mu.Lock(); changes = append(changes, c); mu.Unlock() },
	}
	appendTo(t, db, "order-1", "A", "A", "A", "A", "A", "A")
	appendTo(t, db, "order-2", "Bad", "A")
	res := appendTo(t, db, "order-3", "A")
	r := newRunner(t, db, o)
	stop := start(t, r)
	if err := r.WaitFor(waitCtx(t), res.LastPosition); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	applied, parked := 0, 0
	for _, b := range batches {
		applied, parked = applied+b.Applied, parked+b.Parked
		if b.Projection != "hooked" || b.Copy != 1 || b.Replay || b.Took < 0 || b.Delay < 0 || b.Applied+b.Parked > 4 {
			t.Errorf("batch %+v: want projection hooked, copy 1, no replay, at most 4 events", b)
		}
		if b.Applied == 0 && b.Delay != 0 {
			t.Errorf("batch %+v: a batch that applied nothing has a delay", b)
		}
	}
	if applied != 7 || parked != 1 {
		t.Errorf("batches applied %d and parked %d events, want 7 and 1", applied, parked)
	}
	if last := batches[len(batches)-1]; !last.CaughtUp || last.Position.Before(res.LastPosition) {
		t.Errorf("last batch = %+v, want caught up at %s", last, res.LastPosition)
	}
	if len(letters) != 1 || letters[0].Attempts != 1 || letters[0].Class != resilience.ClassPermanent || letters[0].Message.Type != "Bad" {
		t.Errorf("DeadLettered = %+v, want the Bad event after 1 attempt (its error is permanent)", letters)
	}
	if len(changes) != 2 || !changes[0].Running || changes[1].Running || changes[1].Err != nil {
		t.Errorf("Partition changes = %+v, want a start, then a stop without error", changes)
	}
}

func TestHandlerPanicIsDeadLettered(t *testing.T) {
	db := newDB(t)
	o := options("panicky", projection.HandlerFunc[*memory.Tx](func(_ context.Context, _ *memory.Tx, e projection.Event) error {
		if e.Type == "Boom" {
			panic("nil map")
		}
		return nil
	}))
	appendTo(t, db, "order-1", "Boom")
	res := appendTo(t, db, "order-2", "Fine")
	r := newRunner(t, db, o)
	start(t, r)
	if err := r.WaitFor(waitCtx(t), res.LastPosition); err != nil {
		t.Fatal(err)
	}
	letters, err := db.DeadLetters(deadletter.Config{}).List(t.Context(), deadletter.Query{Source: projection.Source("panicky", 1)})
	if err != nil || len(letters) != 1 || !strings.Contains(letters[0].Error, "panicked: nil map") || letters[0].Attempts != 3 {
		t.Errorf("letters = %+v, %v; want one for the panicking event after 3 attempts", letters, err)
	}
}

func TestRunFailsWhenTheStoresFail(t *testing.T) {
	db := memory.New()
	var applied atomic.Int64
	r := newRunner(t, db, options("closing", projection.HandlerFunc[*memory.Tx](
		func(context.Context, *memory.Tx, projection.Event) error { applied.Add(1); return nil })))
	res := appendTo(t, db, "order-1", "A")
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	if err := r.WaitFor(waitCtx(t), res.LastPosition); err != nil {
		t.Fatal(err)
	}
	db.Close()
	select {
	case err := <-done:
		var pe *projection.Error
		if !errors.As(err, &pe) || pe.Op != "run" || !strings.Contains(err.Error(), "closed") {
			t.Errorf("Run after the DB closed = %v, want a run error saying the store is closed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the DB closed")
	}
	if applied.Load() != 1 {
		t.Errorf("applied %d events, want 1", applied.Load())
	}
}

func TestRunTwice(t *testing.T) {
	db := newDB(t)
	r := newRunner(t, db, options("twice", projection.HandlerFunc[*memory.Tx](
		func(context.Context, *memory.Tx, projection.Event) error { return nil })))
	start(t, r)
	res := appendTo(t, db, "order-1", "A")
	if err := r.WaitFor(waitCtx(t), res.LastPosition); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(t.Context()); !errors.Is(err, projection.ErrRunning) {
		t.Errorf("a second Run = %v, want ErrRunning", err)
	}
}

// With an AtLeastOnce handler, a failing event is dead-lettered, the later
// events of its stream are parked, and a replay delivers them in order.
func TestAtLeastOnceDeadLetters(t *testing.T) {
	db := newDB(t)
	var mu sync.Mutex
	var got []string
	var broken atomic.Bool
	broken.Store(true)
	o := options("mailer", projection.AtLeastOnce[*memory.Tx](func(_ context.Context, e projection.Event) error {
		if broken.Load() && e.Type == "Bad" {
			return errors.New("mail server says no")
		}
		mu.Lock()
		got = append(got, fmt.Sprintf("%s/%d/%d", e.Stream, e.Version, e.Letter))
		mu.Unlock()
		return nil
	}))
	appendTo(t, db, "order-1", "Good", "Bad", "Good")
	res := appendTo(t, db, "order-2", "Good")
	r := newRunner(t, db, o)
	start(t, r)
	if err := r.WaitFor(waitCtx(t), res.LastPosition); err != nil {
		t.Fatal(err)
	}
	letters := db.DeadLetters(deadletter.Config{})
	open, err := letters.List(t.Context(), deadletter.Query{Source: projection.Source("mailer", 1)})
	if err != nil || len(open) != 2 || open[0].State != deadletter.Failed || open[1].State != deadletter.Parked {
		t.Fatalf("letters = %+v, %v; want the Bad event failed and the one after it parked", open, err)
	}
	broken.Store(false)
	if _, err := letters.Replay(t.Context(), open[0].ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the replay, applied %v", got)
		}
		time.Sleep(2 * time.Millisecond)
	}
	want := fmt.Sprintf("order-1/1/0 order-2/1/0 order-1/2/%d order-1/3/%d", open[0].ID, open[1].ID)
	if strings.Join(got, " ") != want {
		t.Errorf("applied %v, want %s", got, want)
	}
}

// batchModel is a BatchHandler over memory: its read model is the list of
// each stream's versions, updated when the unit of work commits. A batch
// that holds a Bad event fails as a multi-row insert would; Apply fails on
// it alone.
type batchModel struct {
	mu       sync.Mutex
	versions map[string][]uint64
	batches  []int // sizes of the ApplyBatch calls that succeeded
	singles  int   // Apply calls that succeeded
}

func (m *batchModel) record(tx *memory.Tx, events []projection.Event, batch bool) {
	tx.OnCommit(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, e := range events {
			m.versions[e.Stream] = append(m.versions[e.Stream], e.Version)
		}
		if batch {
			m.batches = append(m.batches, len(events))
		} else {
			m.singles++
		}
	})
}

func (m *batchModel) Apply(_ context.Context, tx *memory.Tx, e projection.Event) error {
	if e.Type == "Bad" {
		return resilience.MarkPermanent(errors.New("bad event"))
	}
	m.record(tx, []projection.Event{e}, false)
	return nil
}

func (m *batchModel) ApplyBatch(_ context.Context, tx *memory.Tx, events []projection.Event) error {
	for _, e := range events {
		if e.Type == "Bad" {
			return errors.New("the batch holds a bad event")
		}
		if e.Type == "Panic" {
			panic("batch panicked")
		}
	}
	m.record(tx, slices.Clone(events), true)
	return nil
}

// TestBatchHandler: a BatchHandler gets each unit's events at once; when a
// batch fails (or panics), its events are applied one at a time, so the
// bad event alone is dead-lettered, its stream's later events are parked,
// and every other event is applied once, in order.
func TestBatchHandler(t *testing.T) {
	db := newDB(t)
	m := &batchModel{versions: map[string][]uint64{}}
	o := options("batched", m)
	o.Batch = 8
	for i := range 3 {
		appendTo(t, db, fmt.Sprintf("order-%d", i), "A", "A", "A", "A", "A", "A", "A", "A", "A", "A")
	}
	r := newRunner(t, db, o)
	start(t, r)
	res := appendTo(t, db, "order-3", "A")
	if err := r.WaitFor(waitCtx(t), res.LastPosition); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	batches, singles := slices.Clone(m.batches), m.singles
	m.mu.Unlock()
	if singles != 0 || slices.Max(batches) != 8 {
		t.Errorf("good events: ApplyBatch of %v events, %d Apply calls; want batches of up to 8 and no Apply", batches, singles)
	}

	appendTo(t, db, "order-1", "A", "Bad", "A")
	appendTo(t, db, "order-2", "A", "Panic", "A")
	res = appendTo(t, db, "order-0", "A")
	err := r.WaitFor(waitCtx(t), res.LastPosition)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string][]uint64{
		"order-0": {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},
		"order-1": {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},         // 12 is dead-lettered, 13 parked behind it
		"order-2": {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}, // Panic panics in a batch only
		"order-3": {1},
	}
	for stream, versions := range want {
		if got := m.versions[stream]; !slices.Equal(got, versions) {
			t.Errorf("%s: applied versions %v, want %v", stream, got, versions)
		}
	}
	if m.singles == 0 {
		t.Error("no event was applied alone after a batch failed")
	}
	letters, err := db.DeadLetters(deadletter.Config{}).List(t.Context(), deadletter.Query{Source: projection.Source("batched", 1)})
	if err != nil || len(letters) != 2 || letters[0].Message.Type != "Bad" || letters[1].State != deadletter.Parked {
		t.Errorf("letters = %+v, %v; want the Bad event failed and order-1's next event parked", letters, err)
	}
}
