package commandtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/resilience/deadletter"
)

var (
	succeeded = []command.State{command.Running, command.Succeeded}
	errDown   = errors.New("payment service down")
)

func testSucceeded(t *testing.T, e *env) {
	e.start(e.workerConfig(), nil)
	rc := e.accept(place("1"), command.WithMetadata(recado.Metadata{CorrelationID: "corr-9"}))
	st := e.wait(rc.ID)
	if st.State != command.Succeeded || st.Attempts != 1 || st.Problem != nil {
		t.Fatalf("status = %+v, want succeeded at the first attempt", st)
	}
	if st.Stream != OrderStream("1") || st.Version != 1 || st.Position.IsZero() || st.Location != "/orders/1" {
		t.Errorf("status says stream %q version %d position %v location %q; want %s, 1, its event's, /orders/1",
			st.Stream, st.Version, st.Position, st.Location, OrderStream("1"))
	}
	events := e.events(OrderStream("1"))
	if len(events) != 1 {
		t.Fatalf("stream has %d events, want 1", len(events))
	}
	ev := events[0]
	if ev.ID != command.EventID(rc.ID, 0) || ev.Type != "OrderPlaced" || ev.Position != st.Position {
		t.Errorf("event = %s %s at %v, want ID %s (derived from the command), OrderPlaced, at %v",
			ev.ID, ev.Type, ev.Position, command.EventID(rc.ID, 0), st.Position)
	}
	if ev.Metadata.CausationID != rc.ID || ev.Metadata.CorrelationID != "corr-9" {
		t.Errorf("event metadata = %+v, want causation %s, correlation corr-9", ev.Metadata, rc.ID)
	}
	if p := e.path(rc.ID); !slices.Equal(p, succeeded) {
		t.Errorf("path = %v, want %v", p, succeeded)
	}
}

func testFailed(t *testing.T, e *env) {
	e.start(e.workerConfig(), nil)
	first := e.accept(place("1"))
	e.wait(first.ID)
	again := e.accept(place("1"))
	st := e.wait(again.ID)
	if st.State != command.Failed || st.Attempts != 1 || st.DeadLetter != 0 {
		t.Fatalf("status = %+v, want failed at the first attempt, not dead-lettered", st)
	}
	if st.Problem == nil || !strings.Contains(st.Problem.Detail, ErrPlaced.Error()) {
		t.Errorf("problem = %+v, want a detail saying %q", st.Problem, ErrPlaced)
	}
	if p := e.path(again.ID); !slices.Equal(p, []command.State{command.Running, command.Failed}) {
		t.Errorf("path = %v, want running, failed", p)
	}
	if n := len(e.events(OrderStream("1"))); n != 1 {
		t.Errorf("stream has %d events, want 1: a refused command writes nothing", n)
	}
	// A handler's own permanent error fails the command too.
	e.faults.set(func(f *faults) {
		f.fail = func(c *command.Command) error {
			if c.Type == "CancelOrder" {
				return command.Reject(errors.New("cancellations are closed"))
			}
			return nil
		}
	})
	rc := e.accept(CancelOrder{OrderID: "1"})
	if st := e.wait(rc.ID); st.State != command.Failed || st.Problem == nil || !strings.Contains(st.Problem.Detail, "closed") {
		t.Errorf("rejected command = %v %+v, want failed with the rejection", st.State, st.Problem)
	}
}

func testRetry(t *testing.T, e *env) {
	e.faults.set(func(f *faults) {
		f.fail = func(c *command.Command) error {
			if c.Attempt < 3 {
				return errDown
			}
			return nil
		}
	})
	e.start(polling(e.workerConfig()), nil)
	rc := e.accept(place("1"))
	st := e.wait(rc.ID)
	if st.State != command.Succeeded || st.Attempts != 3 || st.Problem != nil {
		t.Errorf("status = %v, attempt %d, problem %+v; want succeeded at the third attempt, no problem", st.State, st.Attempts, st.Problem)
	}
	want := []command.State{command.Running, command.Accepted, command.Running, command.Accepted, command.Running, command.Succeeded}
	if p := e.path(rc.ID); !slices.Equal(p, want) {
		t.Errorf("path = %v, want %v", p, want)
	}
	if n := e.faults.count(rc.ID); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
}

func testDeadLetter(t *testing.T, e *env) {
	down := true
	e.faults.set(func(f *faults) {
		f.fail = func(c *command.Command) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if down {
				return errDown
			}
			return nil
		}
	})
	cfg := polling(e.workerConfig())
	cfg.MaxAttempts = 2
	w := e.start(cfg, nil)
	rc := e.accept(place("1"))
	st := e.wait(rc.ID)
	if st.State != command.DeadLettered || st.Attempts != 2 || st.DeadLetter == 0 {
		t.Fatalf("status = %+v, want dead-lettered after 2 attempts, with its letter", st)
	}
	if st.Problem == nil || !strings.Contains(st.Problem.Detail, errDown.Error()) {
		t.Errorf("problem = %+v, want the last error", st.Problem)
	}
	l, err := e.DeadLetters.Get(t.Context(), st.DeadLetter)
	if err != nil {
		t.Fatalf("dead letter: %v", err)
	}
	if l.Source != w.Source() || l.Source != "command:commands" || l.Message.ID != rc.ID || l.Message.Type != "PlaceOrder" ||
		l.Message.Stream != OrderStream("1") || l.Attempts != 2 || !strings.Contains(l.Error, errDown.Error()) {
		t.Errorf("letter = %+v, want command %s of source %s after 2 attempts", l, rc.ID, w.Source())
	}
	want := []command.State{command.Running, command.Accepted, command.Running, command.DeadLettered}
	if p := e.path(rc.ID); !slices.Equal(p, want) {
		t.Errorf("path = %v, want %v", p, want)
	}
	e.faults.set(func(*faults) { down = false })
	if _, err := e.DeadLetters.Replay(t.Context(), l.ID); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	e.waitFor("the replay to run the command", func() bool {
		p := e.path(rc.ID)
		return len(p) > 0 && p[len(p)-1] == command.Succeeded
	})
	st, _ = e.queue.Status(t.Context(), rc.ID)
	if st.Attempts != 1 || st.DeadLetter != 0 || st.Problem != nil {
		t.Errorf("status after the replay = %+v, want its attempts counted afresh, no letter, no problem", st)
	}
	want = append(want, command.Accepted, command.Running, command.Succeeded)
	if p := e.path(rc.ID); !slices.Equal(p, want) {
		t.Errorf("path = %v, want %v", p, want)
	}
	e.waitFor("the letter to be marked replayed", func() bool {
		l, err := e.DeadLetters.Get(t.Context(), l.ID)
		return err == nil && l.State == deadletter.Replayed
	})
}

func testStopPutsBack(t *testing.T, e *env) {
	started := make(chan struct{}, 1)
	e.faults.set(func(f *faults) {
		f.block = func(ctx context.Context, c *command.Command) {
			started <- struct{}{}
			<-ctx.Done()
		}
		f.fail = func(*command.Command) error { return context.Canceled }
	})
	w := e.start(e.workerConfig(), nil)
	rc := e.accept(place("1"))
	<-started
	w.stop(t)
	st, err := e.queue.Status(t.Context(), rc.ID)
	if err != nil || st.State != command.Accepted || st.Attempts != 0 {
		t.Fatalf("status after the worker stopped = %+v, %v; want accepted, the attempt not counted", st, err)
	}
	if p := e.path(rc.ID); !slices.Equal(p, []command.State{command.Running, command.Accepted}) {
		t.Errorf("path = %v, want running, accepted", p)
	}
	e.faults.set(func(f *faults) { f.block, f.fail = nil, nil })
	e.start(e.workerConfig(), nil)
	if st := e.wait(rc.ID); st.State != command.Succeeded || st.Attempts != 1 {
		t.Errorf("status under the next worker = %v, attempt %d; want succeeded at attempt 1", st.State, st.Attempts)
	}
}

func testPanic(t *testing.T, e *env) {
	e.faults.set(func(f *faults) { f.panic = func(c *command.Command) bool { return c.Attempt == 1 } })
	e.start(polling(e.workerConfig()), nil)
	rc := e.accept(place("1"))
	if st := e.wait(rc.ID); st.State != command.Succeeded || st.Attempts != 2 {
		t.Errorf("status = %v, attempt %d; want a panic retried like a failure, then succeeded", st.State, st.Attempts)
	}
}

func testPerKeyOrder(t *testing.T, e *env) {
	var mu sync.Mutex
	running := make(map[string]int)
	overlap := ""
	e.faults.set(func(f *faults) {
		f.block = func(ctx context.Context, c *command.Command) {
			mu.Lock()
			running[c.Key]++
			if running[c.Key] > 1 {
				overlap = c.Key
			}
			mu.Unlock()
			time.Sleep(200 * time.Microsecond) // give another command of the key the chance to overlap
			mu.Lock()
			running[c.Key]--
			mu.Unlock()
		}
	})
	orders := []string{"a", "b", "c"}
	const lines = 12
	var ids []string
	for _, o := range orders {
		ids = append(ids, e.accept(place(o)).ID)
	}
	for l := 1; l <= lines; l++ {
		for _, o := range orders {
			ids = append(ids, e.accept(AddLine{OrderID: o, Line: l, Item: fmt.Sprint("item-", l)}).ID)
		}
		if l == lines/2 {
			e.start(e.workerConfig(), nil) // half accepted before the worker starts, half while it runs
		}
	}
	for _, id := range ids {
		if st := e.wait(id); st.State != command.Succeeded {
			t.Fatalf("command %s %s: %v %+v; commands of one key must run in the order accepted", st.Type, id, st.State, st.Problem)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if overlap != "" {
		t.Errorf("two commands of key %s ran at once", overlap)
	}
	for _, o := range orders {
		var got []int
		for _, ev := range e.events(OrderStream(o))[1:] {
			var line struct{ Line int }
			if err := json.Unmarshal(ev.Data, &line); err != nil {
				t.Fatal(err)
			}
			got = append(got, line.Line)
		}
		want := make([]int, lines)
		for i := range want {
			want[i] = i + 1
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("lines of order %s = %v, want %v", o, got, want)
		}
	}
}

func testParallelKeys(t *testing.T, e *env) {
	// The commands of a and b each wait until the other has started: they
	// end only if the worker runs them at once.
	started := map[string]chan struct{}{OrderStream("a"): make(chan struct{}), OrderStream("b"): make(chan struct{})}
	other := map[string]string{OrderStream("a"): OrderStream("b"), OrderStream("b"): OrderStream("a")}
	var mu sync.Mutex
	alone := ""
	e.faults.set(func(f *faults) {
		f.block = func(ctx context.Context, c *command.Command) {
			close(started[c.Key])
			select {
			case <-started[other[c.Key]]:
			case <-time.After(10 * time.Second):
				mu.Lock()
				alone = c.Key
				mu.Unlock()
			}
		}
	})
	cfg := e.workerConfig()
	cfg.Partitions = 1 // both keys in one partition, owned by one worker
	e.start(cfg, nil)
	a, b := e.accept(place("a")), e.accept(place("b"))
	e.wait(a.ID)
	e.wait(b.ID)
	mu.Lock()
	defer mu.Unlock()
	if alone != "" {
		t.Errorf("the command of %s waited 10s for the command of the other key: they did not run at once", alone)
	}
}
