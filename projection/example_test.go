package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// OrderSummary is a read model: one line per order, for the orders screen.
type OrderSummary struct {
	Items int
	Total int // cents
	Paid  bool
}

// Summaries keeps the summaries in process memory. Its handler changes
// them when the runner's unit of work commits (tx.OnCommit), so a unit
// that rolls back leaves them as they were: each event counts once.
type Summaries struct {
	mu     sync.Mutex
	orders map[string]OrderSummary
}

func (s *Summaries) Apply(_ context.Context, tx *memory.Tx, e projection.Event) error {
	var change func(*OrderSummary)
	switch e.Type {
	case "ItemAdded":
		var item struct{ Price int }
		if err := json.Unmarshal(e.Data, &item); err != nil || item.Price <= 0 {
			// Retrying cannot fix bad data: dead-letter it at once.
			return resilience.MarkPermanent(fmt.Errorf("item without a positive price: %s", e.Data))
		}
		change = func(o *OrderSummary) { o.Items++; o.Total += item.Price }
	case "OrderPaid":
		change = func(o *OrderSummary) { o.Paid = true }
	default:
		return nil
	}
	tx.OnCommit(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		o := s.orders[e.Stream]
		change(&o)
		s.orders[e.Stream] = o
	})
	return nil
}

func (s *Summaries) Get(order string) OrderSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.orders[order]
}

func memoryStores(db *memory.DB) projection.Stores {
	return projection.Stores{
		Events:      db.Events(),
		Checkpoints: db.Checkpoints(checkpoint.Config{}),
		Leases:      db.Leases(lease.Config{}),
		DeadLetters: db.DeadLetters(deadletter.Config{}),
	}
}

func appendEvents(ctx context.Context, db *memory.DB, order string, events ...recado.Event) recado.Position {
	res, err := db.Events().Append(ctx, order, events)
	if err != nil {
		panic(err)
	}
	return res.LastPosition
}

func item(price int) recado.Event {
	return recado.NewEvent("ItemAdded", fmt.Appendf(nil, `{"price":%d}`, price))
}

// A projection keeps an order-summary read model up to date: the runner
// catches up with the log, follows it, and WaitFor tells when an append is
// in the read model (read-your-writes).
func Example() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()
	summaries := &Summaries{orders: map[string]OrderSummary{}}

	appendEvents(ctx, db, "order-1", item(1250), item(399))
	runner, err := projection.NewRunner(db, memoryStores(db), projection.Options[*memory.Tx]{
		Name:    "order-summaries",
		Handler: projection.HandlerFunc[*memory.Tx](summaries.Apply),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()

	pos := appendEvents(ctx, db, "order-1", recado.NewEvent("OrderPaid", nil))
	if err := runner.WaitFor(ctx, pos); err != nil {
		fmt.Println(err)
		stop()
		<-done
		return
	}
	fmt.Printf("order-1: %+v\n", summaries.Get("order-1"))

	st, _ := runner.Status(ctx)
	fmt.Println("state:", st.State, "lag:", st.LagEvents, "events")
	stop()
	fmt.Println("run:", <-done)
	// Output:
	// order-1: {Items:2 Total:1649 Paid:true}
	// state: live lag: 0 events
	// run: <nil>
}

// An event the handler cannot apply goes to the dead-letter queue, and the
// later events of its order wait behind it; other orders flow. Waiting for
// a parked position fails at once, naming the letter. Once the handler is
// fixed, a replay delivers the order's events in order.
func ExampleRunner_WaitFor_parked() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()
	summaries := &Summaries{orders: map[string]OrderSummary{}}
	fixed := false
	handler := projection.HandlerFunc[*memory.Tx](func(ctx context.Context, tx *memory.Tx, e projection.Event) error {
		if fixed && string(e.Data) == `{"price":-5}` { // the fix: a refund line
			e.Data = []byte(`{"price":5}`)
		}
		return summaries.Apply(ctx, tx, e)
	})
	runner, _ := projection.NewRunner(db, memoryStores(db), projection.Options[*memory.Tx]{
		Name:         "order-summaries",
		Handler:      handler,
		PollInterval: 10 * time.Millisecond, // look for replay requests often
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	defer func() { stop(); <-done }()

	bad := appendEvents(ctx, db, "order-1", item(100), item(-5))
	behind := appendEvents(ctx, db, "order-1", recado.NewEvent("OrderPaid", nil))
	other := appendEvents(ctx, db, "order-2", item(700))

	_ = runner.WaitFor(ctx, other) // order-2 flows
	fmt.Printf("order-2: %+v\n", summaries.Get("order-2"))
	err := runner.WaitFor(ctx, bad)
	fmt.Println(err)
	var parked *projection.ParkedError
	if errors.As(runner.WaitFor(ctx, behind), &parked) {
		fmt.Println("OrderPaid is letter", parked.Letter.ID, "behind letter", parked.Head.ID)
	}
	fmt.Printf("order-1: %+v\n", summaries.Get("order-1"))

	fixed = true
	letters := db.DeadLetters(deadletter.Config{})
	if _, err := letters.Replay(ctx, parked.Head.ID); err != nil {
		fmt.Println(err)
		return
	}
	for runner.WaitFor(ctx, behind) != nil { // the runner carries the replay out
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Printf("order-1: %+v\n", summaries.Get("order-1"))
	// Output:
	// order-2: {Items:1 Total:700 Paid:false}
	// projection "order-summaries": the event at position 2 (stream "order-1", version 2) is dead letter 1 (failed): item without a positive price: {"price":-5}
	// OrderPaid is letter 2 behind letter 1
	// order-1: {Items:1 Total:100 Paid:false}
	// order-1: {Items:2 Total:105 Paid:true}
}

// A rebuild builds a new copy of the read model from the start of the log
// beside the one queries read, and swaps it in when it has caught up.
func ExampleRunner_Rebuild() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()
	var mu sync.Mutex
	copies := map[uint64]*Summaries{1: {orders: map[string]OrderSummary{}}}
	active := uint64(1)
	current := func() *Summaries { mu.Lock(); defer mu.Unlock(); return copies[active] }

	runner, _ := projection.NewRunner(db, memoryStores(db), projection.Options[*memory.Tx]{
		Name: "order-summaries",
		Handler: projection.HandlerFunc[*memory.Tx](func(ctx context.Context, tx *memory.Tx, e projection.Event) error {
			mu.Lock()
			s, ok := copies[e.Copy] // each copy apart
			if !ok {
				s = &Summaries{orders: map[string]OrderSummary{}}
				copies[e.Copy] = s
			}
			mu.Unlock()
			return s.Apply(ctx, tx, e)
		}),
		Swap: func(ctx context.Context, tx *memory.Tx, old, new uint64) error {
			tx.OnCommit(func() { // queries switch over when the swap commits
				mu.Lock()
				active = new
				delete(copies, old)
				mu.Unlock()
			})
			return nil
		},
		PollInterval: 10 * time.Millisecond,
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	defer func() { stop(); <-done }()

	pos := appendEvents(ctx, db, "order-1", item(1250), item(399))
	_ = runner.WaitFor(ctx, pos)
	n, _ := runner.Rebuild(ctx)
	fmt.Println("building copy", n)
	for {
		mu.Lock()
		a := active
		mu.Unlock()
		if a == n {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Printf("copy %d: %+v\n", n, current().Get("order-1"))
	// Output:
	// building copy 2
	// copy 2: {Items:2 Total:1649 Paid:false}
}
