package idempotency_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/idempotency"
)

// The store on its own: the first claim of a key runs the request, a retry
// gets the stored response, a reuse with another request is refused.
func ExampleStore() {
	ctx := context.Background()
	db := memory.New()
	defer db.Close()
	keys := db.IdempotencyKeys(idempotency.Config{})

	c, _ := keys.Claim(ctx, nil, "client-1", "charge-42", []byte("charge 19.99"))
	fmt.Println(c.Status)
	_ = keys.Complete(ctx, nil, c, []byte("charged"))

	retry, _ := keys.Claim(ctx, nil, "client-1", "charge-42", []byte("charge 19.99"))
	fmt.Println(retry.Status, string(retry.Response))

	other, _ := keys.Claim(ctx, nil, "client-1", "charge-42", []byte("charge 99.00"))
	fmt.Println(other.Status)
	// Output:
	// claimed
	// completed charged
	// mismatch
}

// The HTTP middleware, with the draft's example key: a retry gets the first
// response again, marked as a replay; the key reused with another body gets
// 422; a request without a key where one is required gets 400.
func ExampleMiddleware() {
	db := memory.New()
	defer db.Close()
	orders := 0
	create := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		orders++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order %d\n", orders)
	})
	h := idempotency.Middleware(db.IdempotencyKeys(idempotency.Config{}), idempotency.MiddlewareConfig{
		Required: func(r *http.Request) bool { return true },
	})(create)

	send := func(key, body string) {
		r := httptest.NewRequest("POST", "/orders", strings.NewReader(body))
		if key != "" {
			r.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Printf("%d replayed=%q %s", w.Code, w.Header().Get("Idempotent-Replayed"), w.Body)
	}
	send(`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, `{"item":"book"}`)
	send(`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, `{"item":"book"}`)
	send(`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, `{"item":"pen"}`)
	send("", `{"item":"pen"}`)
	// Output:
	// 201 replayed="" order 1
	// 201 replayed="true" order 1
	// 422 replayed="" {"detail":"This operation is idempotent and it requires correct usage of Idempotency Key. Idempotency Key MUST not be reused across different payloads of this operation.","status":422,"title":"Idempotency-Key is already used"}
	// 400 replayed="" {"detail":"This operation is idempotent and it requires correct usage of Idempotency Key.","status":400,"title":"Idempotency-Key is missing"}
}
