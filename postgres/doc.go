// Package postgres keeps recado's stores in PostgreSQL: the production backend,
// for many service instances writing at once.
//
// Open a [DB] on a pgx pool the caller owns; it creates and migrates its tables
// in a schema of its own ("recado" by default), safely when several processes
// start at once, and refuses a schema a newer recado migrated
// ([ErrSchemaTooNew]). [DB.Events] is the event store (an [*eventstore.Store]
// over this package's driver), and [DB.Tx] is the unit of work (a
// [recado.UnitOfWork]) that every store of the package joins through
// [eventstore.InTx].
//
// # The global log never skips an event
//
// A position taken when a row is inserted becomes visible only at commit, so a
// reader asking for "position > checkpoint" could skip, forever, an event that
// took a lower number and committed later. This package never skips and never
// waits on a timer. Each event's position is the pair (major, seq): seq comes
// from a sequence, and major is the writer's transaction id
// (pg_current_xact_id), raised to the major of the stream's previous event when
// that one is larger, so that each stream's positions grow with its versions even
// though transaction ids are not commit order. Readers see only events whose
// major is below pg_snapshot_xmin(pg_current_snapshot()): every transaction
// below that horizon has ended, so no event can ever appear behind a position a
// reader has passed.
//
// The one trade-off: a transaction that stays open anywhere in the database
// cluster holds the horizon, and so every reader, back until it ends. It never
// loses an event. [DB.Horizon] says how long readers are held back, a figure
// to alert on; PostgreSQL's idle_in_transaction_session_timeout bounds it.
//
// # Group commit
//
// Concurrent appends of one process are committed together: a few writer
// goroutines (Options.Writers) each take every append waiting, decide each
// of them in turn (versions and idempotency, by the rules of package
// eventstore/driver) against the stream rows and the IDs already stored, and
// write the ones that pass in one transaction of two round trips. Stream rows are updated only if no other process changed them since
// they were read; otherwise the group is retried with the rows locked. One
// append never fails its neighbours: a conflict is its own answer; when
// PostgreSQL refuses a value of one append, the group is split until that
// append fails alone; appends to a stream whose row another transaction (a
// unit of work) holds wait aside, in a park lane, while the others commit.
// Groups are bounded by events and bytes (Options.MaxBatch, MaxBatchBytes).
// An append given a unit of work ([eventstore.InTx]) joins that transaction
// instead.
//
// recado's own transactions set their isolation (READ COMMITTED) and
// timeouts, whatever the role or database defaults are. Pools in
// simple-protocol or exec mode (what PgBouncer's transaction pooling needs)
// are supported. docs/postgres.md gives the limits and the operating advice:
// pool size, isolation, timeouts, poolers.
//
// Subscribers are woken by LISTEN/NOTIFY, with polling as the fallback when a
// notification is lost.
//
// # Checkpoints
//
// [DB.Checkpoints] is the store of package projection/checkpoint: a
// projection's checkpoints, saved in the unit of work where its handler
// writes the read model, so both commit together. Saves of a projection's
// partitions share a lock on the projection's row; a swap of a rebuilt copy
// takes it exclusively, and waits for them.
//
// # The recoverability stores
//
// [DB.DeadLetters], [DB.IdempotencyKeys], [DB.Inbox] and [DB.Leases] are the
// stores of package resilience's contracts, each with its own tables and
// migrations in the DB's schema. A call given a [*Tx] runs in that unit of
// work, so a claim, a completion, a parked message or a lease's Guard commits
// with the unit's appends and writes or not at all; other calls run in short
// transactions of their own (READ COMMITTED, recado's own timeouts), begun and
// committed in the same round trips as their statements. None holds a
// transaction open across the caller's code. Each locks the rows it decides
// on until its transaction ends: of concurrent claims of one key, one wins;
// a Guard holds off a new holder's Acquire until the guarded unit of work
// ends; the changes of one dead-letter key's queue happen one after another.
// Idempotency keys claimed or completed outside a unit of work commit in
// groups, as appends do. Cleanups delete in small batches that skip rows
// another transaction holds.
package postgres
