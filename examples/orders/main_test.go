package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), &out, "", "", true, 50*time.Millisecond); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"202 Accepted\nLocation: /commands/PlaceOrder/",
		"202 Accepted, Idempotent-Replayed: true, same command: true",
		"303 See Other, status succeeded, Location: /orders/42",
		`the order: {"id":"42","status":"placed","items":["tea","cup"],"totalCents":1850}`,
		"then status failed: order 42 exists already",
		"422 Unprocessable Entity: command: invalid: an order needs at least one item",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out.String())
		}
	}
}
