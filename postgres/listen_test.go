package postgres

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// TestListenerRunsWhileSubscriptionsWait: a DB keeps no connection
// listening until a subscription waits; then commits by another DB (another
// process) wake the subscription at once (its poll is an hour away); once no
// subscription has waited for listenIdleCheck, the listener stops, and a new
// subscription starts it again.
func TestListenerRunsWhileSubscriptionsWait(t *testing.T) {
	defer func(d time.Duration) { listenIdleCheck = d }(listenIdleCheck)
	listenIdleCheck = 200 * time.Millisecond
	schema := newSchema(t)
	writer := openOn(t, newPool(t, ""), Options{Schema: schema})
	reader := openOn(t, newPool(t, ""), Options{Schema: schema})
	if _, err := reader.Events().Append(t.Context(), "own", testEvents("E", 1)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * listenIdleCheck)
	if pid := reader.listenPID.Load(); pid != 0 {
		t.Fatalf("a DB without subscriptions listens (backend %d)", pid)
	}
	for round := range 2 {
		ctx, cancel := context.WithCancel(t.Context())
		d := newDelivery()
		var wg sync.WaitGroup
		wg.Go(func() { follow(ctx, reader.Events(), recado.Position{}, d, eventstore.WithPollInterval(time.Hour)) })
		waitUntil(t, "the listener starts", func() bool { return reader.listenPID.Load() != 0 })
		want := map[string]bool{}
		for range 3 {
			events := testEvents("E", 2)
			if _, err := writer.Events().Append(ctx, "s", events); err != nil {
				t.Fatal(err)
			}
			for _, e := range events {
				want[e.ID] = true
			}
			d.waitFor(t, want)
		}
		// The subscription still waits: the listener stays.
		time.Sleep(3 * listenIdleCheck)
		if reader.listenPID.Load() == 0 {
			t.Errorf("round %d: the listener stopped while a subscription waited", round)
		}
		cancel()
		wg.Wait()
		waitUntil(t, "the listener stops", func() bool { return reader.listenPID.Load() == 0 })
	}
}
