package deadletter_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/deadletter"
)

// A projection fails on an event of order-1, which blocks that stream: its
// next event is parked behind the letter, while order-2 flows. Once the bug
// is fixed, an operator replays the letter, and the projection (the owner of
// the source) delivers the letter and then the parked event, in order.
func Example() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()
	letters := db.DeadLetters(deadletter.Config{})
	const source = "projection:orders"

	placed := recado.Event{ID: "e1", Stream: "order-1", Type: "OrderPlaced"}
	paid := recado.Event{ID: "e2", Stream: "order-1", Type: "OrderPaid"}
	letter, _ := letters.Add(ctx, nil, deadletter.Failure{Source: source, Key: "order-1", Message: placed,
		Err: errors.New(`column "total" does not exist`), Attempts: 5})
	blocked, _ := letters.Blocked(ctx, source)
	fmt.Println("blocked:", blocked)
	_, _ = letters.Park(ctx, nil, source, "order-1", paid)

	// The bug is fixed: an operator replays the letter.
	_, _ = letters.Replay(ctx, letter.ID)

	// The projection carries out the replay.
	n, _ := letters.Redeliver(ctx, source, func(ctx context.Context, l deadletter.Letter) error {
		fmt.Println("deliver", l.Message.Type)
		return nil
	})
	blocked, _ = letters.Blocked(ctx, source)
	fmt.Println("delivered:", n, "blocked:", blocked)
	// Output:
	// blocked: [order-1]
	// deliver OrderPlaced
	// deliver OrderPaid
	// delivered: 2 blocked: []
}

// The operators' handler: anyone may read; only the ops team may replay and
// discard.
func ExampleNewHandler() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()
	letters := db.DeadLetters(deadletter.Config{})
	l, _ := letters.Add(ctx, nil, deadletter.Failure{Source: "projection:orders",
		Message: recado.Event{ID: "e1", Type: "OrderPlaced", Data: []byte(`{"total":1999}`)}, Err: errors.New("boom")})

	h := deadletter.NewHandler(letters, deadletter.HandlerConfig{
		Authorize: func(r *http.Request, a deadletter.Action) error {
			if a != deadletter.ActionRead && r.Header.Get("X-Team") != "ops" {
				return errors.New("only the ops team may " + string(a))
			}
			return nil
		},
	})
	send := func(method, target, team, body string) {
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		r.Header.Set("X-Team", team)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, strings.TrimSpace(w.Body.String()))
	}
	send("POST", fmt.Sprintf("/letters/%d/discard", l.ID), "dev", `{"reason":"test order"}`)
	send("POST", fmt.Sprintf("/letters/%d/replay", l.ID), "ops", "")
	send("POST", fmt.Sprintf("/letters/%d/replay", l.ID), "ops", "")
	// Output:
	// 403 {"detail":"only the ops team may discard","status":403,"title":"Forbidden"}
	// 200 {"requested":1}
	// 409 {"detail":"deadletter: replay letter 1: the letter's replay is requested already and under way","status":409,"title":"Conflict"}
}
