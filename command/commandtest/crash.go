package commandtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/eventstore"
)

// crash runs a worker over a unit of work that dies at its n-th unit (the
// claim is the first, the commit of the first command the second), waits
// for the crash and stops the worker, as if its process had died.
func (e *env) crash(cfg command.WorkerConfig, n int, afterCommit bool, accept func()) {
	e.t.Helper()
	c := newCrashingTx(UnitOfWork(e.Tx), n, afterCommit)
	w := e.start(cfg, c.uow())
	accept()
	select {
	case <-c.crashed:
	case <-time.After(10 * time.Second):
		e.t.Fatal("the worker's unit of work did not reach the crash in 10s")
	}
	w.stop(e.t)
}

func testCrashBeforeCommit(t *testing.T, e *env) {
	var rc command.Receipt
	e.crash(e.workerConfig(), 2, false, func() { rc = e.accept(place("1")) })
	st, err := e.queue.Status(t.Context(), rc.ID)
	if err != nil || st.State != command.Running || st.Attempts != 1 {
		t.Fatalf("status after the crash = %+v, %v; want running (claimed, no outcome)", st, err)
	}
	if evs := e.events(OrderStream("1")); len(evs) != 0 {
		t.Fatalf("the crashed unit of work left %d events: the append and the state commit together or not at all", len(evs))
	}
	e.start(e.workerConfig(), nil)
	st = e.wait(rc.ID)
	if st.State != command.Succeeded || st.Attempts != 2 {
		t.Errorf("status under the next worker = %v, attempt %d; want succeeded at attempt 2", st.State, st.Attempts)
	}
	if evs := e.events(OrderStream("1")); len(evs) != 1 {
		t.Errorf("stream has %d events, want 1", len(evs))
	}
	e.checkNeverFailed(rc.ID)
}

func testCrashAfterCommit(t *testing.T, e *env) {
	var rc command.Receipt
	e.crash(e.workerConfig(), 2, true, func() { rc = e.accept(place("1")) })
	st, err := e.queue.Status(t.Context(), rc.ID)
	if err != nil || st.State != command.Succeeded {
		t.Fatalf("status after a crash after the commit = %+v, %v; want succeeded", st, err)
	}
	e.start(e.workerConfig(), nil)
	next := e.accept(place("2")) // the new worker runs this one...
	e.wait(next.ID)
	if n := e.faults.count(rc.ID); n != 1 { // ...and not the first again
		t.Errorf("the handler of the committed command ran %d times, want 1", n)
	}
	if evs := e.events(OrderStream("1")); len(evs) != 1 {
		t.Errorf("stream has %d events, want 1", len(evs))
	}
	e.checkNeverFailed(rc.ID)
}

func testCrashLoop(t *testing.T, e *env) {
	cfg := e.workerConfig()
	cfg.MaxAttempts = 2
	var rc command.Receipt
	e.crash(cfg, 2, false, func() { rc = e.accept(place("1")) })
	e.crash(cfg, 2, false, func() {})
	st, err := e.queue.Status(t.Context(), rc.ID)
	if err != nil || st.State != command.Running || st.Attempts != 2 {
		t.Fatalf("status after two crashes = %+v, %v; want running at attempt 2", st, err)
	}
	e.start(cfg, nil)
	st = e.wait(rc.ID)
	if st.State != command.DeadLettered || st.DeadLetter == 0 || st.Attempts != 2 {
		t.Fatalf("status = %+v, want dead-lettered without a third run", st)
	}
	if n := e.faults.count(rc.ID); n != 2 {
		t.Errorf("the handler ran %d times, want 2", n)
	}
	l, err := e.DeadLetters.Get(t.Context(), st.DeadLetter)
	if err != nil || l.Message.ID != rc.ID || !strings.Contains(l.Error, "started 2 times") {
		t.Errorf("letter = %+v, %v; want command %s, started 2 times", l, err, rc.ID)
	}
	if evs := e.events(OrderStream("1")); len(evs) != 0 {
		t.Errorf("stream has %d events, want none", len(evs))
	}
}

func testLeaseLost(t *testing.T, e *env) {
	// The first run decides, then stops (a pause, a partition), ignoring its
	// context; its lease lapses and a second worker takes the command over.
	// The appends expect any version, and the first run's events have IDs
	// of their own, so neither the stream's version nor the events' IDs
	// keep it from writing when it wakes: only its lost lease can.
	release := make(chan struct{})
	started := make(chan struct{})
	e.faults.set(func(f *faults) {
		f.after = func(ctx context.Context, c *command.Command, res *command.Result) {
			res.Expected = eventstore.Any
			if c.Attempt == 1 {
				for i := range res.Events {
					res.Events[i].ID = recado.NewID()
				}
				close(started)
				<-release
			}
		}
	})
	cfg := e.workerConfig()
	cfg.Partitions = 1
	cfg.Holder = "first"
	first := e.start(cfg, nil)
	rc := e.accept(place("1"))
	<-started
	first.cancel() // it stops renewing its leases; its handler is still running
	e.clock.Advance(command.DefaultLeaseTTL + time.Second)

	cfg.Holder = "second"
	e.start(cfg, nil)
	st := e.wait(rc.ID)
	if st.State != command.Succeeded || st.Attempts != 2 {
		t.Fatalf("status under the second worker = %v, attempt %d; want succeeded at attempt 2", st.State, st.Attempts)
	}
	close(release) // the first run ends and tries to commit: its lease is lost
	first.stop(t)
	if evs := e.events(OrderStream("1")); len(evs) != 1 {
		t.Errorf("stream has %d events, want 1: the worker that lost its lease must not write", len(evs))
	}
	if n := e.faults.count(rc.ID); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
	st, _ = e.queue.Status(t.Context(), rc.ID)
	if st.State != command.Succeeded || st.Attempts != 2 {
		t.Errorf("status after the first worker ended = %v, attempt %d; want it unchanged", st.State, st.Attempts)
	}
	e.checkNeverFailed(rc.ID)
}

func testRestart(t *testing.T, e *env) {
	var ids []string
	for i := range 5 {
		o := fmt.Sprint(i)
		ids = append(ids, e.accept(place(o)).ID, e.accept(AddLine{OrderID: o, Line: 1, Item: "cup"}).ID)
	}
	if e.Reopen != nil {
		e.Backend = e.Reopen()
		e.wire()
	}
	e.start(e.workerConfig(), nil)
	for _, id := range ids {
		if st := e.wait(id); st.State != command.Succeeded {
			t.Errorf("command %s accepted before the restart: %v %+v", id, st.State, st.Problem)
		}
	}
}

func testSplit(t *testing.T, e *env) {
	var mu sync.Mutex
	ran := map[string]int{}
	cfg := func(holder string) command.WorkerConfig {
		c := polling(e.workerConfig())
		c.Holder, c.LeaseTTL = holder, 300*time.Millisecond
		c.OnTransition = func(tr command.Transition) {
			e.record(tr)
			if tr.To == command.Succeeded {
				mu.Lock()
				ran[holder]++
				mu.Unlock()
			}
		}
		return c
	}
	e.start(cfg("one"), nil)
	e.start(cfg("two"), nil)
	var ids []string
	both := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ran["one"] > 0 && ran["two"] > 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; !both(); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s only %v ran commands: the workers must split the partitions", ran)
		}
		batch := make([]string, 8)
		for j := range batch {
			batch[j] = e.accept(place(fmt.Sprint(i, "-", j))).ID
		}
		for _, id := range batch {
			e.wait(id)
		}
		ids = append(ids, batch...)
	}
	for _, id := range ids {
		if n := e.faults.count(id); n != 1 {
			t.Errorf("command %s ran %d times, want once", id, n)
		}
	}
}

func testRetention(t *testing.T, e *env) {
	w := e.start(e.workerConfig(), nil)
	done := []string{e.accept(place("1"), command.WithIdempotencyKey("alice", "k")).ID, e.accept(place("2")).ID}
	for _, id := range done {
		e.wait(id)
	}
	w.stop(t)
	pending := e.accept(place("3")).ID
	e.clock.Advance(command.DefaultRetention - time.Second)
	if n, err := e.Commands.Cleanup(t.Context()); err != nil || n != 0 {
		t.Errorf("Cleanup before the retention = %d, %v; want 0", n, err)
	}
	e.clock.Advance(2 * time.Second)
	if n, err := e.Commands.Cleanup(t.Context()); err != nil || n != len(done) {
		t.Errorf("Cleanup after the retention = %d, %v; want %d", n, err, len(done))
	}
	for _, id := range done {
		if _, err := e.queue.Status(t.Context(), id); !errors.Is(err, command.ErrNotFound) {
			t.Errorf("Status of a cleaned-up command = %v, want ErrNotFound", err)
		}
	}
	if st, err := e.queue.Status(t.Context(), pending); err != nil || st.State != command.Accepted {
		t.Errorf("a pending command was cleaned up: %+v, %v", st, err)
	}
	again := e.accept(place("1"), command.WithIdempotencyKey("alice", "k"))
	if again.Existing || again.ID == done[0] {
		t.Errorf("accept with a key whose record was cleaned up = %+v: want a new command", again)
	}
}

func testRetentionBatches(t *testing.T, e *env) {
	e = newEnvWith(t, e.newBackend, command.StoreConfig{Retention: time.Hour, CleanupBatch: 2})
	e.start(e.workerConfig(), nil)
	var ids []string
	for i := range 5 {
		ids = append(ids, e.accept(place(fmt.Sprint(i))).ID)
	}
	for _, id := range ids {
		e.wait(id)
	}
	e.clock.Advance(time.Hour + time.Second)
	if n, err := e.Commands.Cleanup(t.Context()); err != nil || n != len(ids) {
		t.Errorf("Cleanup in batches of 2 = %d, %v; want all %d", n, err, len(ids))
	}
}
