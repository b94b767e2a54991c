// Command orders is a small order service that takes commands over HTTP, the
// way recado's command side is meant to be used: placing an order answers
// "202 Accepted, I will work on it" at once, a worker runs it in the
// background, and the client follows its status until it is done.
//
//	go run ./examples/orders          # serve on localhost:8080 and print curl examples
//	go run ./examples/orders -demo    # run a client against the service, then exit
//
// The endpoints:
//
//	POST /commands/PlaceOrder       {"orderId":"42","items":["tea"],"totalCents":450}
//	POST /commands/CancelOrder      {"orderId":"42","reason":"..."}
//	GET  /commands/{type}/{id}      the command's status; 303 to the order once placed
//	GET  /orders/{id}               the order, folded from its events
//
// Send an Idempotency-Key header to make a POST safe to retry, and X-Client
// to name the caller (its keys are its own). Each order takes -work (1s by
// default) to check, so that the status is seen before it is done.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/sqlite"
)

// The commands and events of an order.
type (
	PlaceOrder struct {
		OrderID string   `json:"orderId"`
		Items   []string `json:"items"`
		Total   int      `json:"totalCents"`
	}
	CancelOrder struct {
		OrderID string `json:"orderId"`
		Reason  string `json:"reason"`
	}
	OrderPlaced struct {
		OrderID string   `json:"orderId"`
		Items   []string `json:"items"`
		Total   int      `json:"totalCents"`
	}
	OrderCancelled struct {
		OrderID string `json:"orderId"`
		Reason  string `json:"reason"`
	}
)

// Validate refuses an order that cannot be placed, before it is accepted
// (HTTP 422).
func (c PlaceOrder) Validate() error {
	switch {
	case c.OrderID == "" || strings.ContainsAny(c.OrderID, "/ "):
		return errors.New("orderId must be set, without slashes or spaces")
	case len(c.Items) == 0:
		return errors.New("an order needs at least one item")
	case c.Total < 0:
		return errors.New("the total cannot be negative")
	}
	return nil
}

// Order is the state of an order, folded from its events.
type Order struct {
	ID        string   `json:"id"`
	Status    string   `json:"status"`
	Items     []string `json:"items"`
	Total     int      `json:"totalCents"`
	Cancelled string   `json:"cancelReason,omitempty"`
}

// orders is the domain: what each command decides, and how events fold.
var orders = struct {
	place  func(Order, PlaceOrder) ([]any, error)
	cancel func(Order, CancelOrder) ([]any, error)
	evolve func(Order, any) Order
}{
	place: func(o Order, c PlaceOrder) ([]any, error) {
		if o.Status != "" {
			return nil, fmt.Errorf("order %s exists already", c.OrderID)
		}
		return []any{OrderPlaced(c)}, nil
	},
	cancel: func(o Order, c CancelOrder) ([]any, error) {
		switch o.Status {
		case "":
			return nil, fmt.Errorf("order %s does not exist", c.OrderID)
		case "cancelled":
			return nil, fmt.Errorf("order %s is cancelled already", c.OrderID)
		}
		return []any{OrderCancelled(c)}, nil
	},
	evolve: func(o Order, e any) Order {
		switch e := e.(type) {
		case OrderPlaced:
			o = Order{ID: e.OrderID, Status: "placed", Items: e.Items, Total: e.Total}
		case OrderCancelled:
			o.Status, o.Cancelled = "cancelled", e.Reason
		}
		return o
	},
}

func main() {
	addr := flag.String("addr", "localhost:8080", "address to serve on")
	demo := flag.Bool("demo", false, "run a client against the service, print what it sees, and exit")
	work := flag.Duration("work", time.Second, "how long checking an order takes")
	file := flag.String("db", "orders.db", "the SQLite file that keeps events, commands and their state (-demo uses a temporary one)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, *file, *addr, *demo, *work); err != nil {
		log.Fatal(err)
	}
}

// service is the order service's parts.
type service struct {
	queue  *command.Queue
	worker *command.Worker
	repo   *command.Repository[Order, any]
}

func newService(db *sqlite.DB, work time.Duration, logger *slog.Logger) (*service, error) {
	reg := recado.NewRegistry(nil)
	if err := errors.Join(recado.Register[OrderPlaced](reg, "OrderPlaced"),
		recado.Register[OrderCancelled](reg, "OrderCancelled")); err != nil {
		return nil, err
	}
	repo, err := command.NewRepository(command.RepositoryConfig[Order, any]{
		Events: db.Events(), Registry: reg, Evolve: orders.evolve,
		Snapshots: db.Snapshots(command.SnapshotConfig{}), SnapshotEvery: 50, SnapshotSchema: "order/v1",
	})
	if err != nil {
		return nil, err
	}
	bus := command.NewBus(command.BusConfig{Events: db.Events()})
	bus.Use(command.Logging(logger))
	stream := func(id string) string { return "order-" + id }
	place := command.Decide(repo, orders.place)
	err = errors.Join(
		command.Handle(bus, command.Route[PlaceOrder]{
			Name: "PlaceOrder",
			Key:  func(c PlaceOrder) string { return stream(c.OrderID) },
			Handle: func(ctx context.Context, c *command.Command, cmd PlaceOrder) (command.Result, error) {
				select { // checking the order (stock, fraud) takes a while
				case <-time.After(work):
				case <-ctx.Done():
					return command.Result{}, ctx.Err()
				}
				res, err := place(ctx, c, cmd)
				res.Location = "/orders/" + cmd.OrderID
				return res, err
			},
		}),
		command.Handle(bus, command.Route[CancelOrder]{
			Name:   "CancelOrder",
			Key:    func(c CancelOrder) string { return stream(c.OrderID) },
			Handle: command.Decide(repo, orders.cancel),
		}),
	)
	if err != nil {
		return nil, err
	}
	queue, err := command.NewQueue(bus, db.Commands(command.StoreConfig{}), command.QueueConfig{})
	if err != nil {
		return nil, err
	}
	worker, err := command.NewWorker(db, queue, command.WorkerConfig{
		Events: db.Events(), Leases: db.Leases(lease.Config{}), DeadLetters: db.DeadLetters(deadletter.Config{}),
		Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	return &service{queue: queue, worker: worker, repo: repo}, nil
}

// handler serves the commands and the orders.
func (s *service) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/commands/", command.NewHTTPHandler(s.queue, command.HTTPConfig{
		Scope: func(r *http.Request) (string, error) { return r.Header.Get("X-Client"), nil },
	}))
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		o, version, err := s.repo.Load(r.Context(), "order-"+r.PathValue("id"))
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case version == 0:
			http.NotFound(w, r)
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(o)
		}
	})
	return mux
}

func run(ctx context.Context, out io.Writer, file, addr string, demo bool, work time.Duration) error {
	// The backend, in one line: one SQLite file keeps the events, the
	// commands, their leases and dead letters, so accepted commands survive a
	// restart. (memory.New() keeps nothing across one; postgres.Connect for
	// several processes.)
	if demo {
		dir, err := os.MkdirTemp("", "recado-orders-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		file = filepath.Join(dir, "orders.db")
	}
	db, err := sqlite.Open(file, sqlite.Options{})
	if err != nil {
		return err
	}
	defer db.Close()

	logger := slog.New(slog.DiscardHandler)
	if !demo {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s, err := newService(db, work, logger)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workerDone := make(chan error, 1)
	go func() { workerDone <- s.worker.Run(ctx) }()
	defer func() { cancel(); <-workerDone }()

	if demo {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		shut, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		_ = srv.Shutdown(shut)
		<-served
	}()
	base := "http://" + ln.Addr().String()
	if demo {
		return client(ctx, out, base)
	}
	fmt.Fprintf(out, `order service on %s. Try:

  curl -i -X POST %[2]s/commands/PlaceOrder -H 'Content-Type: application/json' \
       -H 'Idempotency-Key: "order-42-try-1"' -d '{"orderId":"42","items":["tea"],"totalCents":450}'
  curl -i %[2]s/commands/PlaceOrder/<id from Location>
  curl -iL '%[2]s/commands/PlaceOrder/<id>?wait=5'
  curl -i %[2]s/orders/42

Ctrl-C stops it.
`, ln.Addr(), base)
	select {
	case <-ctx.Done():
		return nil
	case err := <-served:
		return err
	}
}

// client plays a client of the service at base and prints what it sees.
func client(ctx context.Context, out io.Writer, base string) error {
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(method, path, key, body string) (*http.Response, string, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if err != nil {
			return nil, "", err
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", `"`+key+`"`)
		}
		req.Header.Set("X-Client", "demo")
		resp, err := noRedirect.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, strings.TrimSpace(string(b)), err
	}
	step := func(title string) { fmt.Fprintf(out, "\n== %s\n", title) }

	step("place order 42 (Idempotency-Key order-42-try-1)")
	order := `{"orderId":"42","items":["tea","cup"],"totalCents":1850}`
	resp, body, err := send("POST", "/commands/PlaceOrder", "order-42-try-1", order)
	if err != nil {
		return err
	}
	loc := resp.Header.Get("Location")
	fmt.Fprintf(out, "%s\nLocation: %s\nRetry-After: %s\n", resp.Status, loc, resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("placing the order: %s %s", resp.Status, body)
	}

	step("the network failed; send the same request again")
	resp, _, err = send("POST", "/commands/PlaceOrder", "order-42-try-1", order)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s, Idempotent-Replayed: %s, same command: %v\n", resp.Status,
		resp.Header.Get("Idempotent-Replayed"), resp.Header.Get("Location") == loc)

	step("ask how it is going, at once")
	resp, body, err = send("GET", loc, "", "")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s, status %s\n", resp.Status, field(body, "status"))

	step("wait for it (?wait=10)")
	resp, body, err = send("GET", loc+"?wait=10", "", "")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s, status %s, Location: %s\n", resp.Status, field(body, "status"), resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther {
		return fmt.Errorf("the order was not placed: %s %s", resp.Status, body)
	}
	_, body, err = send("GET", resp.Header.Get("Location"), "", "")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "the order: %s\n", body)

	step("place order 42 again, with another key: accepted, then refused")
	resp, _, err = send("POST", "/commands/PlaceOrder", "order-42-try-2", order)
	if err != nil {
		return err
	}
	_, body, err = send("GET", resp.Header.Get("Location")+"?wait=10", "", "")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s, then status %s: %s\n", resp.Status, field(body, "status"), field(body, "problem.detail"))

	step("a command that is not valid is refused at once")
	resp, body, err = send("POST", "/commands/PlaceOrder", "", `{"orderId":"43","items":[]}`)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %s\n", resp.Status, field(body, "detail"))
	return nil
}

// field returns the value at path (dot-separated) of a JSON object.
func field(body, path string) string {
	var v any
	if json.Unmarshal([]byte(body), &v) != nil {
		return ""
	}
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[k]
	}
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}
