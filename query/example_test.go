package query_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/query"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// A client places an order (an append, as a command's handler would make)
// and reads the order's page at once, passing the position it got in the
// Recado-Position header: the answer waits until the projection has
// applied the order, so the client always reads its own write.
func ExampleNewHTTPHandler() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()

	// The read model: items per order, updated when the runner's unit of
	// work commits.
	var mu sync.Mutex
	items := map[string]int{}
	runner, _ := projection.NewRunner(db, projection.Stores{
		Events:      db.Events(),
		Checkpoints: db.Checkpoints(checkpoint.Config{}),
		Leases:      db.Leases(lease.Config{}),
		DeadLetters: db.DeadLetters(deadletter.Config{}),
	}, projection.Options[*memory.Tx]{
		Name: "order-items",
		Handler: projection.HandlerFunc[*memory.Tx](func(_ context.Context, tx *memory.Tx, e projection.Event) error {
			tx.OnCommit(func() { mu.Lock(); items[e.Stream]++; mu.Unlock() })
			return nil
		}),
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	defer func() { stop(); <-done }()

	// The query and its HTTP endpoint.
	itemsOf := query.HandlerFunc[string, int](func(_ context.Context, order string) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		n, ok := items[order]
		if !ok {
			return 0, query.ErrNotFound
		}
		return n, nil
	})
	mux := http.NewServeMux()
	mux.Handle("GET /orders/{id}/items", query.NewHTTPHandler(itemsOf, query.HTTPOptions[string, int]{
		Decode: func(r *http.Request) (string, error) { return r.PathValue("id"), nil },
		Waiter: runner,
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	res, _ := db.Events().Append(ctx, "order-42", []recado.Event{
		recado.NewEvent("ItemAdded", []byte(`{"sku":"tea"}`)),
		recado.NewEvent("ItemAdded", []byte(`{"sku":"cup"}`)),
	})
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/orders/order-42/items", nil)
	req.Header.Set(query.PositionHeader, res.LastPosition.String())
	resp, err := srv.Client().Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.StatusCode, " ", string(body))
	// Output:
	// 200 2
}
