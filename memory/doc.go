// Package memory keeps recado's stores in memory: for tests, examples, and as
// the reference implementation every other backend is measured against.
// Nothing survives the process.
//
// A [DB] holds the stores: [DB.Events] is its event store; [DB.DeadLetters],
// [DB.IdempotencyKeys], [DB.Inbox] and [DB.Leases] are the recoverability
// stores of package resilience, [DB.Checkpoints] the projection checkpoint
// store, and [DB.Commands] and [DB.Snapshots] package command's stores,
// each made with the caller's settings (its clock, retention, limits).
// [DB.Tx] runs a unit of work that every store of the DB joins (the event store through eventstore.InTx(tx), the others
// through their tx argument): what it does commits together, or is undone
// when its function returns an error or panics. As in SQLite, one writer changes the DB
// at a time: a unit of work holds the writer until it ends, and a write
// outside any unit waits for it. Readers never wait for the writer, and
// outside a unit of work they see only what has committed; inside it, State
// sees what the unit wrote.
//
// The event store's global log is a slice; positions are
// [recado.NewPosition](n, 0) with n from 1. A unit of work that rolls back
// leaves no gap: the positions it took are taken again by the next writer,
// and no reader saw them. Reads copy a chunk of events under a read lock and
// yield them without holding it, so a slow reader never blocks writers and a
// long read never copies the whole log. Subscriptions wake when a commit ends.
package memory
