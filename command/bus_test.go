package command_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	ct "github.com/recado-dev/recado/command/commandtest"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience"
)

// orders returns a memory DB and a bus with the sample order commands.
func orders(t testing.TB) (*memory.DB, *command.Bus) {
	t.Helper()
	db := memory.New()
	t.Cleanup(func() { _ = db.Close() })
	repo, err := ct.NewOrderRepository(db.Events(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	bus := command.NewBus(command.BusConfig{Events: db.Events()})
	if err := ct.RouteOrders(bus, repo); err != nil {
		t.Fatal(err)
	}
	return db, bus
}

func readAll(t *testing.T, s *eventstore.Store, stream string) []recado.Event {
	t.Helper()
	var out []recado.Event
	for e, err := range s.ReadStream(t.Context(), stream) {
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestDispatch(t *testing.T) {
	db, bus := orders(t)
	md := recado.Metadata{CorrelationID: "checkout-7", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	out, err := bus.Dispatch(t.Context(), ct.PlaceOrder{OrderID: "1", Items: []string{"tea"}, Total: 450},
		command.WithID("cmd-1"), command.WithMetadata(md))
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != "cmd-1" || out.Stream != "order-1" || out.FirstVersion != 1 || out.LastVersion != 1 ||
		out.Position.IsZero() || out.Location != "/orders/1" || out.Duplicate {
		t.Errorf("Dispatch = %+v", out)
	}
	evs := readAll(t, db.Events(), "order-1")
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	e := evs[0]
	if e.ID != command.EventID("cmd-1", 0) || e.Metadata.CausationID != "cmd-1" || e.Metadata.CorrelationID != "checkout-7" ||
		e.Metadata.TraceParent != md.TraceParent {
		t.Errorf("event %s with %+v: want the derived ID, the command as cause, its correlation and trace", e.ID, e.Metadata)
	}
	// A refusal is the decider's error, as it is.
	if _, err := bus.Dispatch(t.Context(), ct.PlaceOrder{OrderID: "1", Items: []string{"pot"}}); !errors.Is(err, ct.ErrPlaced) {
		t.Errorf("Dispatch of a refused command = %v, want ErrPlaced", err)
	}
	if !resilience.IsPermanent(func() error {
		_, err := bus.Dispatch(t.Context(), ct.CancelOrder{OrderID: "2"})
		return err
	}()) {
		t.Errorf("a decider's refusal is not permanent")
	}
}

func TestDispatchRefused(t *testing.T) {
	_, bus := orders(t)
	type stray struct{}
	var unknown *command.UnknownCommandError
	if _, err := bus.Dispatch(t.Context(), stray{}); !errors.Is(err, command.ErrUnknownCommand) || !errors.As(err, &unknown) {
		t.Errorf("Dispatch of an unknown type = %v, want ErrUnknownCommand", err)
	}
	// Validate methods refuse invalid commands before any handler runs.
	_, err := bus.Dispatch(t.Context(), ct.PlaceOrder{OrderID: "1"})
	if !errors.Is(err, command.ErrInvalid) || !strings.Contains(err.Error(), "no items") {
		t.Errorf("Dispatch of an invalid command = %v, want ErrInvalid saying why", err)
	}
	if _, err := bus.Dispatch(t.Context(), ct.PlaceOrder{OrderID: "1", Items: []string{"a"}},
		command.WithIdempotencyKey("me", "k")); !errors.Is(err, command.ErrInvalid) {
		t.Errorf("Dispatch with an idempotency key = %v, want ErrInvalid", err)
	}
}

type note struct {
	Stream, Text string
}

// notes returns a bus with one command, Note, that appends a note to a
// stream at the version it read.
func notes(t *testing.T, db *memory.DB, cfg command.BusConfig) *command.Bus {
	t.Helper()
	cfg.Events = db.Events()
	bus := command.NewBus(cfg)
	err := command.Handle(bus, command.Route[note]{
		Name: "Note",
		Key:  func(n note) string { return n.Stream },
		Validate: func(n note) error {
			if n.Text == "" {
				return errors.New("empty note")
			}
			return nil
		},
		Handle: func(ctx context.Context, c *command.Command, n note) (command.Result, error) {
			st, err := db.Events().State(ctx, n.Stream)
			if err != nil {
				return command.Result{}, err
			}
			return command.Result{Stream: n.Stream, Expected: eventstore.Exact(st.Version),
				Events: []recado.Event{{Type: "Noted", Data: []byte(`"` + n.Text + `"`)}}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return bus
}

// interfere returns middleware that, the first n times, appends another
// event to the stream the handler decided on, after it decided: its append
// then conflicts.
func interfere(t *testing.T, db *memory.DB, n int) (command.Middleware, *int) {
	calls := 0
	return func(next command.Handler) command.Handler {
		return command.HandlerFunc(func(ctx context.Context, c *command.Command) (command.Result, error) {
			res, err := next.Handle(ctx, c)
			if calls++; calls <= n {
				if _, err := db.Events().Append(ctx, res.Stream, []recado.Event{recado.NewEvent("Other", nil)}); err != nil {
					t.Error(err)
				}
			}
			return res, err
		})
	}, &calls
}

func TestDispatchConflict(t *testing.T) {
	db := memory.New()
	defer db.Close()
	bus := notes(t, db, command.BusConfig{ConflictRetries: 2})
	mw, calls := interfere(t, db, 2)
	bus.Use(mw)
	out, err := bus.Dispatch(t.Context(), note{Stream: "log", Text: "hi"})
	if err != nil {
		t.Fatalf("Dispatch after two conflicts, with two retries = %v", err)
	}
	if *calls != 3 || out.LastVersion != 3 {
		t.Errorf("handler ran %d times, note at version %d; want 3 runs, version 3", *calls, out.LastVersion)
	}
	mw, calls = interfere(t, db, 3)
	bus = notes(t, db, command.BusConfig{ConflictRetries: 2})
	bus.Use(mw)
	_, err = bus.Dispatch(t.Context(), note{Stream: "log", Text: "again"})
	var conflict *eventstore.ConflictError
	if !errors.Is(err, eventstore.ErrConflict) || !errors.As(err, &conflict) || *calls != 3 {
		t.Errorf("Dispatch after three conflicts, with two retries = %v after %d runs; want the conflict after 3", err, *calls)
	}
	// In the caller's unit of work, a conflict is the caller's to retry.
	runs := 0
	bus = notes(t, db, command.BusConfig{})
	bus.Use(func(next command.Handler) command.Handler {
		return command.HandlerFunc(func(ctx context.Context, c *command.Command) (command.Result, error) {
			runs++
			res, err := next.Handle(ctx, c)
			res.Expected = eventstore.Exact(99)
			return res, err
		})
	})
	calls = &runs
	err = db.Tx(t.Context(), func(tx *memory.Tx) error {
		_, err := bus.Dispatch(t.Context(), note{Stream: "other", Text: "x"}, command.InTx(tx))
		return err
	})
	if !errors.Is(err, eventstore.ErrConflict) || *calls != 1 {
		t.Errorf("Dispatch in a unit of work = %v after %d runs; want the conflict at once", err, *calls)
	}
}

func TestDispatchIdempotent(t *testing.T) {
	db := memory.New()
	defer db.Close()
	bus := command.NewBus(command.BusConfig{Events: db.Events()})
	err := command.Handle(bus, command.Route[note]{Name: "Note", Handle: func(ctx context.Context, c *command.Command, n note) (command.Result, error) {
		return command.Result{Stream: n.Stream, Events: []recado.Event{{Type: "Noted", Data: []byte(`"` + n.Text + `"`)}}}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := bus.Dispatch(t.Context(), note{"log", "hi"}, command.WithID("note-1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := bus.Dispatch(t.Context(), note{"log", "hi"}, command.WithID("note-1"))
	if err != nil || !again.Duplicate || again.Position != first.Position {
		t.Errorf("the same dispatch again = %+v, %v; want a duplicate at %v", again, err, first.Position)
	}
	if n := len(readAll(t, db.Events(), "log")); n != 1 {
		t.Errorf("%d events, want 1", n)
	}
}

func TestDispatchInTx(t *testing.T) {
	db := memory.New()
	defer db.Close()
	bus := notes(t, db, command.BusConfig{})
	errRollback := errors.New("roll back")
	err := db.Tx(t.Context(), func(tx *memory.Tx) error {
		if _, err := bus.Dispatch(t.Context(), note{"log", "hi"}, command.InTx(tx)); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	if n := len(readAll(t, db.Events(), "log")); n != 0 {
		t.Errorf("%d events after a rollback, want 0", n)
	}
}

func TestHandleErrors(t *testing.T) {
	bus := command.NewBus(command.BusConfig{})
	h := func(ctx context.Context, c *command.Command, n note) (command.Result, error) {
		return command.Result{}, nil
	}
	if err := command.Handle(bus, command.Route[note]{Name: "Note", Handle: h}); err != nil {
		t.Fatal(err)
	}
	type other struct{}
	for name, err := range map[string]error{
		"name twice":   command.Handle(bus, command.Route[other]{Name: "Note", Handle: func(context.Context, *command.Command, other) (command.Result, error) { return command.Result{}, nil }}),
		"type twice":   command.Handle(bus, command.Route[note]{Name: "Note2", Handle: h}),
		"no name":      command.Handle(bus, command.Route[other]{Handle: func(context.Context, *command.Command, other) (command.Result, error) { return command.Result{}, nil }}),
		"no handler":   command.Handle(bus, command.Route[other]{Name: "Other"}),
		"pointer type": command.Handle(bus, command.Route[*other]{Name: "Other", Handle: func(context.Context, *command.Command, *other) (command.Result, error) { return command.Result{}, nil }}),
	} {
		if err == nil {
			t.Errorf("%s: Handle = nil, want an error", name)
		}
	}
	if got := bus.Types(); !slices.Equal(got, []string{"Note"}) {
		t.Errorf("Types = %v, want [Note]", got)
	}
	// A handler that returns events needs an event store.
	if _, err := bus.Dispatch(t.Context(), note{"s", "x"}); err != nil {
		t.Errorf("Dispatch of a command that writes nothing = %v", err)
	}
	bus2 := command.NewBus(command.BusConfig{})
	_ = command.Handle(bus2, command.Route[note]{Name: "Note", Handle: func(ctx context.Context, c *command.Command, n note) (command.Result, error) {
		return command.Result{Stream: "s", Events: []recado.Event{{Type: "T"}}}, nil
	}})
	if _, err := bus2.Dispatch(t.Context(), note{"s", "x"}); !errors.Is(err, command.ErrInvalid) {
		t.Errorf("Dispatch of events with no event store = %v, want ErrInvalid", err)
	}
}

func TestMiddleware(t *testing.T) {
	db := memory.New()
	defer db.Close()
	bus := notes(t, db, command.BusConfig{})
	var mu sync.Mutex
	var trail []string
	mark := func(name string) command.Middleware {
		return func(next command.Handler) command.Handler {
			return command.HandlerFunc(func(ctx context.Context, c *command.Command) (command.Result, error) {
				mu.Lock()
				trail = append(trail, name)
				mu.Unlock()
				return next.Handle(ctx, c)
			})
		}
	}
	var logs bytes.Buffer
	var metrics []string
	bus.Use(mark("a"), mark("b"))
	bus.Use(command.Logging(slog.New(slog.NewTextHandler(&logs, nil))))
	bus.Use(command.Metrics(func(c *command.Command, elapsed time.Duration, err error) {
		metrics = append(metrics, c.Type+":"+strings.TrimPrefix(errString(err), "command: "))
	}))
	bus.Use(command.Validate(func(ctx context.Context, c *command.Command) error {
		if c.Value.(note).Text == "forbidden" {
			return errors.New("forbidden word")
		}
		return nil
	}))
	if _, err := bus.Dispatch(t.Context(), note{"log", "hi"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(trail, []string{"a", "b"}) {
		t.Errorf("middleware ran %v, want a then b", trail)
	}
	_, err := bus.Dispatch(t.Context(), note{"log", "forbidden"})
	if !errors.Is(err, command.ErrInvalid) || !resilience.IsPermanent(err) || !strings.Contains(err.Error(), "forbidden word") {
		t.Errorf("Validate middleware = %v, want a permanent ErrInvalid saying why", err)
	}
	if !slices.Equal(metrics, []string{"Note:", "Note:invalid: forbidden word"}) {
		t.Errorf("metrics = %q", metrics)
	}
	if out := logs.String(); !strings.Contains(out, `level=INFO msg="command handled" type=Note`) ||
		!strings.Contains(out, `level=WARN msg="command refused or failed" type=Note`) {
		t.Errorf("logs = %s", out)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestPoliciesMiddleware(t *testing.T) {
	db := memory.New()
	defer db.Close()
	bus := notes(t, db, command.BusConfig{})
	calls := 0
	bus.Use(command.Policies(&resilience.Pipeline{Retry: mustRetry(t)}), func(next command.Handler) command.Handler {
		return command.HandlerFunc(func(ctx context.Context, c *command.Command) (command.Result, error) {
			if calls++; calls == 1 {
				return command.Result{}, errors.New("blip")
			}
			return next.Handle(ctx, c)
		})
	})
	if _, err := bus.Dispatch(t.Context(), note{"log", "hi"}); err != nil || calls != 2 {
		t.Errorf("Dispatch through a retry policy = %v after %d calls; want success after 2", err, calls)
	}
}

func mustRetry(t *testing.T) *resilience.Retry {
	r, err := resilience.NewRetry(resilience.RetryConfig{MaxAttempts: 2, Backoff: resilience.Backoff{Initial: time.Microsecond, Max: time.Microsecond}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestEventID(t *testing.T) {
	a, b := command.EventID("cmd-1", 0), command.EventID("cmd-1", 1)
	if a != command.EventID("cmd-1", 0) {
		t.Errorf("EventID is not deterministic")
	}
	if a == b || a == command.EventID("cmd-2", 0) || command.EventID("cmd-1", 10) == command.EventID("cmd-11", 0) {
		t.Errorf("EventIDs collide")
	}
	if len(a) != 36 || a[14] != '5' || !strings.ContainsAny(a[19:20], "89ab") {
		t.Errorf("EventID %s is not a UUID of version 5", a)
	}
}
