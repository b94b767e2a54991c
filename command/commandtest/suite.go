// Package commandtest is the conformance suite every backend of package
// command runs from its own tests: the command records (a Queue and its
// Workers over the backend's stores, end to end) and the snapshots.
//
//	func TestCommands(t *testing.T) {
//		commandtest.Run(t, func(tb testing.TB, cfg command.StoreConfig) commandtest.Backend {
//			db := memory.New()
//			tb.Cleanup(func() { db.Close() })
//			return commandtest.Backend{
//				Commands: db.Commands(cfg), Snapshots: db.Snapshots(command.SnapshotConfig{Now: cfg.Now}),
//				Events: db.Events(), Leases: db.Leases(lease.Config{Now: cfg.Now}),
//				DeadLetters: db.DeadLetters(deadletter.Config{Now: cfg.Now}),
//				Tx: eventstoretest.UnitOfWork(db), Close: db.Close,
//			}
//		})
//	}
//
// The factory gets the suite's clock in cfg.Now and must give it to the
// command store, the leases, the dead letters and the snapshots alike: the
// suite moves it to expire leases and records without sleeping. Workers run
// on the real clock, with short intervals.
//
// Run proves every state change of a command (accepted, running, succeeded,
// failed, back to accepted for a retry, dead-lettered, replayed, put back
// when a worker stops); refused accepts; idempotent re-accepts, mismatches
// and concurrent accepts of one key; accepts in a unit of work; commands of
// one key run one at a time in the order accepted, and of different keys in
// parallel; a crash between the append and the state (no double effect,
// never failed), a crash after the commit, a command whose workers keep
// dying, a worker that loses its lease mid-command (the command completes
// once, under the next worker, and the old worker cannot write); a restart
// with pending commands; two workers splitting the work; retention; and the
// HTTP adapter over the backend, down to a store that is down (503, no
// receipt). [RunSnapshots] proves the snapshot store and that loads fold the
// same state with snapshots as without; [BenchAccept], [BenchThroughput],
// [BenchAppend] and [BenchAcceptHTTP] are the shared benchmarks.
package commandtest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// Backend is a backend under test: the stores of one fresh, empty DB.
type Backend struct {
	Commands    *command.Store
	Snapshots   *command.SnapshotStore
	Events      *eventstore.Store
	Leases      *lease.Store
	DeadLetters *deadletter.Store
	// Tx runs fn in a unit of work of the DB.
	Tx func(ctx context.Context, fn func(tx recado.Tx) error) error
	// Close closes the DB, so that its stores fail as a store that is down
	// does; nil skips the tests that need it.
	Close func() error
	// Reopen closes the DB and opens it again on the same storage, as a
	// process restart would, and returns its stores; nil if the backend
	// keeps nothing across a restart (memory: the restart test then runs a
	// new worker over the same DB).
	Reopen func() Backend
}

// Factory returns a fresh backend whose command store uses cfg, and whose
// other stores use cfg.Now as their clock. It registers its own cleanup
// with tb.
type Factory func(tb testing.TB, cfg command.StoreConfig) Backend

// UnitOfWork turns a Backend's Tx into the unit of work [command.NewWorker]
// takes.
type UnitOfWork func(ctx context.Context, fn func(tx recado.Tx) error) error

// Tx implements [recado.UnitOfWork].
func (u UnitOfWork) Tx(ctx context.Context, fn func(tx recado.Tx) error) error { return u(ctx, fn) }

// T0 is the time the suite's clock starts at.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// maxData is the MaxData the suite gives the store.
const maxData = 64 << 10

// Run runs the suite as subtests of t, each with its own backend.
func Run(t *testing.T, newBackend Factory) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newEnv(t, newBackend))
		})
	}
}

var tests = []struct {
	name string
	run  func(t *testing.T, e *env)
}{
	{"Accept", testAccept},
	{"AcceptRefused", testAcceptRefused},
	{"IdempotentReaccept", testIdempotent},
	{"ConcurrentAccepts", testConcurrentAccepts},
	{"AcceptInTx", testAcceptInTx},
	{"Wait", testWait},
	{"Succeeded", testSucceeded},
	{"Failed", testFailed},
	{"RetryWithBackoff", testRetry},
	{"DeadLetteredAndReplayed", testDeadLetter},
	{"StopPutsBack", testStopPutsBack},
	{"PanicIsRetried", testPanic},
	{"PerKeyOrder", testPerKeyOrder},
	{"KeysInParallel", testParallelKeys},
	{"CrashBetweenAppendAndStatus", testCrashBeforeCommit},
	{"CrashAfterCommit", testCrashAfterCommit},
	{"WorkersKeepDying", testCrashLoop},
	{"LeaseLostMidCommand", testLeaseLost},
	{"RestartWithPending", testRestart},
	{"WorkersSplitTheWork", testSplit},
	{"Retention", testRetention},
	{"RetentionInBatches", testRetentionBatches},
	{"HTTP", testHTTP},
	{"HTTPStoreDown", testHTTPStoreDown},
}

// env is one test's world: a backend, the sample order domain on a bus
// with fault injection, a queue, and the transitions its workers report.
type env struct {
	Backend
	t          *testing.T
	clock      *resiliencetest.Clock
	newBackend Factory
	faults     *faults
	bus        *command.Bus
	queue      *command.Queue

	mu          sync.Mutex
	transitions []command.Transition
}

func newEnv(t *testing.T, newBackend Factory) *env {
	return newEnvWith(t, newBackend, command.StoreConfig{MaxData: maxData})
}

// newEnvWith returns an env whose store has cfg, on the env's clock.
func newEnvWith(t *testing.T, newBackend Factory, cfg command.StoreConfig) *env {
	clock := resiliencetest.NewClock(T0)
	e := &env{t: t, clock: clock, newBackend: newBackend, faults: newFaults()}
	cfg.Now = clock.Now
	e.Backend = newBackend(t, cfg)
	e.wire()
	return e
}

// wire builds the bus and the queue over e's stores.
func (e *env) wire() {
	repo, err := NewOrderRepository(e.Events, nil, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	e.bus = command.NewBus(command.BusConfig{Events: e.Events})
	e.bus.Use(e.faults.middleware())
	if err := RouteOrders(e.bus, repo); err != nil {
		e.t.Fatal(err)
	}
	if e.queue, err = command.NewQueue(e.bus, e.Commands, command.QueueConfig{}); err != nil {
		e.t.Fatal(err)
	}
}

// workerConfig is the configuration of the suite's workers: a back-off of
// a millisecond, the transitions recorded, and an hour between polls, so
// that a worker that misses the wake-up of an accept (or of the end of a
// command that others of its key wait for) fails the test. Tests that need
// polls (a retry after its back-off, a dead letter's replay) use polling.
func (e *env) workerConfig() command.WorkerConfig {
	return command.WorkerConfig{
		Events: e.Events, Leases: e.Leases, DeadLetters: e.DeadLetters,
		Concurrency: 8, Partitions: 4, PollInterval: time.Hour,
		Backoff:      resilience.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Jitter: resilience.NoJitter},
		OnTransition: e.record,
	}
}

// polling returns cfg with polls every 5 ms.
func polling(cfg command.WorkerConfig) command.WorkerConfig {
	cfg.PollInterval = 5 * time.Millisecond
	return cfg
}

func (e *env) record(tr command.Transition) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.transitions = append(e.transitions, tr)
}

// path returns the states command id went through, as its workers reported.
func (e *env) path(id string) []command.State {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []command.State
	for _, tr := range e.transitions {
		if tr.ID == id {
			out = append(out, tr.To)
		}
	}
	return out
}

// worker is a running Worker.
type worker struct {
	*command.Worker
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a worker with cfg over the unit of work uow (the backend's
// when nil) until the test ends or stop is called.
func (e *env) start(cfg command.WorkerConfig, uow UnitOfWork) *worker {
	e.t.Helper()
	if uow == nil {
		uow = UnitOfWork(e.Tx)
	}
	w, err := command.NewWorker(uow, e.queue, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wk := &worker{Worker: w, cancel: cancel, done: make(chan error, 1)}
	go func() { wk.done <- w.Run(ctx) }()
	e.t.Cleanup(func() { wk.stop(e.t) })
	return wk
}

// stop stops the worker and checks that Run returned nil; stopping twice is
// harmless.
func (w *worker) stop(t testing.TB) {
	t.Helper()
	w.once.Do(func() {
		w.cancel()
		select {
		case err := <-w.done:
			if err != nil {
				t.Errorf("Worker.Run = %v, want nil after its context ended", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Worker.Run did not return within 10s of its context ending")
		}
	})
}

// wait waits for command id to reach a final state.
func (e *env) wait(id string) command.Status {
	e.t.Helper()
	st, err := e.queue.Wait(e.t.Context(), id, 10*time.Second)
	if err != nil {
		e.t.Fatalf("Wait(%s): %v", id, err)
	}
	if !st.State.Final() {
		e.t.Fatalf("command %s (%s) still %v after 10s; path %v", id, st.Type, st.State, e.path(id))
	}
	// The workers report a change after its commit, which Wait may see
	// first.
	e.waitFor("the worker to report "+st.State.String(), func() bool {
		p := e.path(id)
		return len(p) > 0 && p[len(p)-1] == st.State
	})
	return st
}

// waitFor polls cond until it holds, or fails the test after 10s.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// accept accepts v and returns its receipt.
func (e *env) accept(v any, opts ...command.Option) command.Receipt {
	e.t.Helper()
	rc, err := e.queue.Accept(e.t.Context(), v, opts...)
	if err != nil {
		e.t.Fatalf("Accept(%T): %v", v, err)
	}
	return rc
}

// events returns the events of stream, none if it does not exist.
func (e *env) events(stream string) []recado.Event {
	e.t.Helper()
	var out []recado.Event
	for ev, err := range e.Events.ReadStream(e.t.Context(), stream) {
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			e.t.Fatalf("ReadStream(%s): %v", stream, err)
		}
		out = append(out, ev)
	}
	return out
}

func place(id string) PlaceOrder { return PlaceOrder{OrderID: id, Items: []string{"tea"}, Total: 450} }

// faults is middleware that injects failures and waits into the handlers,
// and counts their calls.
type faults struct {
	mu    sync.Mutex
	calls map[string]int
	fail  func(c *command.Command) error
	block func(ctx context.Context, c *command.Command)
	panic func(c *command.Command) bool
	// after sees (and may change) what the handler decided, before it is
	// committed.
	after func(ctx context.Context, c *command.Command, res *command.Result)
}

func newFaults() *faults { return &faults{calls: make(map[string]int)} }

func (f *faults) middleware() command.Middleware {
	return func(next command.Handler) command.Handler {
		return command.HandlerFunc(func(ctx context.Context, c *command.Command) (command.Result, error) {
			f.mu.Lock()
			f.calls[c.ID]++
			fail, block, panicking, after := f.fail, f.block, f.panic, f.after
			f.mu.Unlock()
			if block != nil {
				block(ctx, c)
			}
			if panicking != nil && panicking(c) {
				panic("injected panic")
			}
			if fail != nil {
				if err := fail(c); err != nil {
					return command.Result{}, err
				}
			}
			res, err := next.Handle(ctx, c)
			if err == nil && after != nil {
				after(ctx, c, &res)
			}
			return res, err
		})
	}
}

func (f *faults) set(fn func(f *faults)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *faults) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

// crashingTx is a unit of work that dies on its n-th unit: before the commit
// (the unit's writes are rolled back, as in a process killed before it
// commits) or after it. Once dead, it refuses every unit, as a dead process
// makes no more writes.
type crashingTx struct {
	inner       UnitOfWork
	n           int
	afterCommit bool
	crashed     chan struct{}

	mu    sync.Mutex
	calls int
	dead  bool
}

var errCrash = errors.New("commandtest: simulated crash")

func newCrashingTx(inner UnitOfWork, n int, afterCommit bool) *crashingTx {
	return &crashingTx{inner: inner, n: n, afterCommit: afterCommit, crashed: make(chan struct{})}
}

func (c *crashingTx) Tx(ctx context.Context, fn func(tx recado.Tx) error) error {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return errCrash
	}
	c.calls++
	crash := c.calls == c.n
	c.mu.Unlock()
	if !crash {
		return c.inner(ctx, fn)
	}
	err := c.inner(ctx, func(tx recado.Tx) error {
		if err := fn(tx); err != nil || c.afterCommit {
			return err
		}
		return errCrash // everything fn wrote rolls back
	})
	c.mu.Lock()
	c.dead = true
	c.mu.Unlock()
	close(c.crashed)
	if err == nil {
		err = errCrash // committed, but the process died before it knew
	}
	return err
}

func (c *crashingTx) uow() UnitOfWork { return c.Tx }

// checkNeverFailed fails the test if command id was ever failed or
// dead-lettered.
func (e *env) checkNeverFailed(id string) {
	e.t.Helper()
	if p := e.path(id); slices.Contains(p, command.Failed) || slices.Contains(p, command.DeadLettered) {
		e.t.Errorf("command %s went through %v: it must never fail", id, p)
	}
}
