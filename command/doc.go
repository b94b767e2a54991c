// Package command is the write side of recado: commands, the handlers that
// decide what they do, and two ways to run them — now, or accepted now and
// done later.
//
// # Deciding
//
// Domain code is a [Decider]: Decide(state, command) returns new events or
// refuses the command, Evolve(state, event) folds one event into the
// state. It does no I/O, so it is tested as given/when/then
// ([Decider.Run]). Code that prefers methods on a struct writes an
// [Aggregate] with an Apply method and passes [Apply] as the Evolve
// function. A [Repository] loads an aggregate by folding its stream (from
// the latest snapshot, when it keeps snapshots in a [SnapshotStore]) and
// appends new events with the version it loaded; [Decide] turns a decide
// function into a handler over a repository.
//
// # Handlers and the bus
//
// A [Bus] routes commands to handlers by type, registered with [Handle]
// and a [Route] (the command's stable type name, its ordering key, its
// validation). Handlers are [Handler]s, wrapped by [Middleware] as in
// net/http: [Validate], [Logging], [Metrics] and [Policies] (a resilience
// pipeline). A handler decides and returns a [Result]; the bus appends it.
// A command type no handler is registered for is [ErrUnknownCommand].
//
// # Now: Dispatch
//
// [Bus.Dispatch] runs a command and returns when its events are appended,
// with their position (for read-your-writes). A conflict with another
// writer reloads and decides again, a bounded number of times. Use it when
// the caller must know the outcome before it answers: a form that shows
// what went wrong.
//
// # Later: Accept, a Worker, the status
//
// "OK, I accept your order and will work on it in the background": a
// [Queue] validates a command, records it in the backend's [Store] (the
// same database as the events) and returns a [Receipt] at once — the
// command's ID and where to read its status. A [Worker] runs accepted
// commands in the background:
//
//   - commands of one key (one aggregate) run one at a time, in the order
//     they were accepted; commands of different keys run in parallel, up to
//     a bound;
//   - a command's events and its "succeeded" state commit in one unit of
//     work, and its events' IDs derive from its ID ([EventID]): a command
//     that wrote its events is never run again and never marked failed, and
//     one that did not runs again after a crash;
//   - a handler's refusal fails the command, with a problem description; any
//     other error is retried with back-off, and a command that keeps
//     failing goes to the dead-letter queue (package
//     resilience/deadletter), from which people replay it;
//   - several workers, in one process or many, split a queue's partitions
//     through fenced leases (package resilience/lease); no transaction is
//     open while a handler runs.
//
// A command's state goes accepted → running → succeeded (with the position
// of its events) | failed (with a problem) | dead-lettered; [Queue.Wait]
// waits for the end, with a timeout. An idempotency key
// ([WithIdempotencyKey]), scoped by caller, makes an accept safe to retry:
// the same key with the same command returns the same receipt, with
// another command it is [ErrMismatch]. Records are kept for a retention
// (7 days by default) and cleaned up in small batches.
//
// [NewHTTPHandler] offers the same over plain net/http: POST a command, get
// 202 Accepted with Location and Retry-After; GET the status, 200 or 303 to
// the command's result; the Idempotency-Key header; RFC 9457 problem
// details, with 503 when the store is down (and then nothing is accepted).
//
// Each backend's DB hands out the stores: memory.DB.Commands and
// memory.DB.Snapshots (SQLite and PostgreSQL follow), over the contract in
// package command/driver; package command/commandtest is the conformance
// suite every backend runs. docs/commands.md tells when to use which path,
// with the HTTP protocol and curl examples.
package command
