package problem_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/recado-dev/recado/resilience/problem"
)

func ExampleWrite() {
	rec := httptest.NewRecorder()
	d := problem.New(http.StatusConflict, "order 42 is already paid")
	d.Instance = "/orders/42/payment"
	d.Extensions = map[string]any{"orderId": "42"}
	problem.Write(rec, d)

	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	fmt.Print(rec.Body.String())
	// Output:
	// 409 application/problem+json
	// {"detail":"order 42 is already paid","instance":"/orders/42/payment","orderId":"42","status":409,"title":"Conflict"}
}
