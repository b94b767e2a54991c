package command_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// A small domain for the examples: tables in a restaurant. Booking a table
// that is booked already is refused.
type (
	BookTable struct {
		Table  string
		Guests int
	}
	TableBooked struct {
		Table  string
		Guests int
	}
	Table struct{ Booked bool }
)

func (c BookTable) Validate() error {
	if c.Guests < 1 {
		return errors.New("nobody to seat")
	}
	return nil
}

var tables = command.Decider[Table, BookTable, any]{
	Decide: func(t Table, c BookTable) ([]any, error) {
		if t.Booked {
			return nil, errors.New("table " + c.Table + " is booked already")
		}
		return []any{TableBooked(c)}, nil
	},
	Evolve: func(t Table, e any) Table {
		if _, ok := e.(TableBooked); ok {
			t.Booked = true
		}
		return t
	},
}

// restaurant wires the domain to a memory DB: a registry of its events, a
// repository of tables and a bus with the BookTable command.
func restaurant(db *memory.DB) *command.Bus {
	reg := recado.NewRegistry(nil)
	if err := recado.Register[TableBooked](reg, "TableBooked"); err != nil {
		panic(err)
	}
	repo, err := command.NewRepository(command.RepositoryConfig[Table, any]{
		Events: db.Events(), Registry: reg, Evolve: tables.Evolve,
	})
	if err != nil {
		panic(err)
	}
	bus := command.NewBus(command.BusConfig{Events: db.Events()})
	err = command.Handle(bus, command.Route[BookTable]{
		Name:   "BookTable",
		Key:    func(c BookTable) string { return "table-" + c.Table },
		Handle: command.Decide(repo, tables.Decide),
	})
	if err != nil {
		panic(err)
	}
	return bus
}

// A decider is tested as given/when/then, with no store.
func ExampleDecider() {
	events, err := tables.Run(nil, BookTable{Table: "7", Guests: 2})
	fmt.Println(events, err)
	_, err = tables.Run([]any{TableBooked{Table: "7", Guests: 2}}, BookTable{Table: "7", Guests: 4})
	fmt.Println(err)
	// Output:
	// [{7 2}] <nil>
	// table 7 is booked already
}

// Dispatch runs a command now: the handler loads the aggregate, decides,
// and the bus appends the events with the version the handler loaded.
func ExampleBus_Dispatch() {
	db := memory.New()
	defer db.Close()
	bus := restaurant(db)
	ctx := context.Background()

	out, err := bus.Dispatch(ctx, BookTable{Table: "7", Guests: 2})
	fmt.Println(out.Stream, out.LastVersion, err)

	_, err = bus.Dispatch(ctx, BookTable{Table: "7", Guests: 4})
	fmt.Println(err)
	_, err = bus.Dispatch(ctx, BookTable{Table: "8"})
	fmt.Println(errors.Is(err, command.ErrInvalid))
	// Output:
	// table-7 1 <nil>
	// table 7 is booked already
	// true
}

// Accept records a command and answers at once; a worker runs it in the
// background; Wait follows it to its end. Accepting again with the same
// idempotency key returns the same receipt.
func ExampleQueue_Accept() {
	db := memory.New()
	defer db.Close()
	queue, err := command.NewQueue(restaurant(db), db.Commands(command.StoreConfig{}), command.QueueConfig{})
	if err != nil {
		panic(err)
	}
	worker, err := command.NewWorker(db, queue, command.WorkerConfig{
		Events: db.Events(), Leases: db.Leases(lease.Config{}), DeadLetters: db.DeadLetters(deadletter.Config{}),
	})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- worker.Run(ctx) }()
	defer func() { stop(); <-done }()

	key := command.WithIdempotencyKey("guest-42", "booking-1")
	receipt, err := queue.Accept(ctx, BookTable{Table: "7", Guests: 2}, key)
	if err != nil {
		panic(err)
	}
	fmt.Println("accepted:", receipt.State, strings.HasPrefix(receipt.Location, "/commands/BookTable/"))

	st, err := queue.Wait(ctx, receipt.ID, 5*time.Second)
	fmt.Println("then:", st.State, st.Stream, st.Version, err)

	again, _ := queue.Accept(ctx, BookTable{Table: "7", Guests: 2}, key)
	fmt.Println("again:", again.ID == receipt.ID, again.Existing, again.State)

	_, err = queue.Accept(ctx, BookTable{Table: "7", Guests: 9}, key)
	fmt.Println(errors.Is(err, command.ErrMismatch))
	// Output:
	// accepted: accepted true
	// then: succeeded table-7 1 <nil>
	// again: true true succeeded
	// true
}

// The HTTP adapter takes commands as JSON: 202 Accepted with the status
// resource in Location, and the status at that location.
func ExampleNewHTTPHandler() {
	db := memory.New()
	defer db.Close()
	queue, err := command.NewQueue(restaurant(db), db.Commands(command.StoreConfig{}), command.QueueConfig{})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(command.NewHTTPHandler(queue, command.HTTPConfig{}))
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/commands/BookTable", strings.NewReader(`{"Table":"7","Guests":2}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", `"booking-1"`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status, resp.Header.Get("Retry-After"))

	st, err := http.Get(srv.URL + resp.Header.Get("Location"))
	if err != nil {
		panic(err)
	}
	st.Body.Close()
	fmt.Println(st.Status, st.Header.Get("Content-Type"))
	// Output:
	// 202 Accepted 1
	// 200 OK application/json
}
