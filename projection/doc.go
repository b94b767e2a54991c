// Package projection turns events into read models: a [Runner] reads the
// event store's global log, applies each event to a read model with the
// projection's [Handler], and saves how far it got (its checkpoint), so that
// it resumes where it stopped. It imports no backend: it works with the
// stores and units of work of any backend's DB (memory, SQLite,
// PostgreSQL).
//
// # Exactly once, or at least once
//
// When the read model lives in the same database as the events (SQLite,
// PostgreSQL, or memory for tests), the handler writes it in the runner's
// unit of work, the checkpoint is saved in the same unit, and each event has
// its effect exactly once: a crash rolls back the read model's changes with
// the checkpoint, and the next runner applies the same events again. A
// handler made with [AtLeastOnce] keeps its read model elsewhere (a search
// index, another service): it runs outside the unit of work, before the
// checkpoint is saved, and an event may be applied again after a crash;
// make it idempotent (an inbox of package resilience/inbox in the other
// database does).
//
// # Partitions and order
//
// The streams of a projection are spread over Options.Partitions partitions
// by a hash of the stream's name ([PartitionOf]). Each partition reads the
// log, applies its own streams' events in the log's order, in batches of
// up to Options.Batch events per unit of work, and keeps its own checkpoint:
// a crash never makes a partition apply again what it had committed, and a
// stream waiting behind a dead letter holds up nobody else. The events of
// one stream are applied in order, by one partition, at any time.
//
// A handler that is also a [BatchHandler] gets the events of a unit of work
// in one call, to write them in one statement; if that fails, the runner
// applies them one at a time, so a bad event is still found and
// dead-lettered alone.
//
// # One runner at a time
//
// A partition runs only in the runner that holds its lease (package
// resilience/lease), and every unit of work checks the lease's fencing
// token, so a runner that has lost its lease (it stalled past the lease's
// expiry and another took it over) cannot write. Start a runner of the same
// projection in several processes: they share the partitions, and each
// takes over those whose lease expires or is released (a runner stopping
// releases them).
//
// # Failures
//
// A handler that fails (or panics) is tried again with back-off
// (Options.Retry, package resilience), then its event goes to the
// dead-letter queue (package resilience/deadletter) with the stream as the
// sequence key: the later events of the stream are parked behind it, each
// in the unit of work that moves the checkpoint past it, while the other
// streams flow. When someone replays the letter, the runner holding the
// partition's lease delivers it and then the events parked behind it, in
// order, and the stream flows again.
//
// # Rebuilds
//
// [Runner.Rebuild] builds a new copy of the read model from the start of
// the log beside the active one ([Event.Copy] says which copy to write,
// [Event.Replay] that the event was applied before); when each of its
// partitions has caught up, Options.Swap makes it the active copy in one
// unit of work, so queries never see a half-built read model. The old
// copy's dead letters are then discarded (retired).
//
// # Progress
//
// [Runner.Status] and [Monitor.Status] report a projection's checkpoints,
// its lag in events and time, its state and its dead letters; [Hooks] feed
// metrics. [Runner.WaitFor] and [Monitor.WaitFor] wait until a projection
// has reached a position (read-your-writes: package query uses them), and
// fail at once with a [*ParkedError] naming the dead letter when the event
// at that position is parked.
//
// The checkpoints are kept by package projection/checkpoint, whose store
// each backend's DB hands out (memory.DB.Checkpoints, ...).
package projection
