// Package eventstore is recado's event store: the [Store] every backend hands
// out (memory.DB.Events, sqlite.DB.Events, postgres.DB.Events), with one set of
// rules, limits and errors on all of them.
//
// An event store keeps streams of events ("order-42": placed, paid, shipped)
// and a global log of every event of every stream in commit order. A [Store]:
//
//   - Append adds events to the end of one stream, atomically, under an
//     [ExpectedVersion]: [Any], [NoStream], [StreamExists] or [Exact]
//     (optimistic concurrency). Of many appends racing with the same exact
//     version, exactly one wins; the others get a [*ConflictError]. An append
//     whose event IDs are already stored (a retry) stores nothing and returns
//     the original result, so retrying is always safe, including after
//     [ErrUnknownOutcome].
//   - ReadStream reads one stream forwards or backwards; ReadAll reads the
//     global log after a [recado.Position], and a reader that resumes after the
//     last position it saw never skips an event.
//   - Subscribe catches up and then follows the log, filtered by stream, stream
//     prefix and event type, and reports the position it has reached when
//     nothing matches, so checkpoints keep moving.
//   - State tells a stream's version and whether it exists, was soft-deleted
//     or tombstoned; Delete and Tombstone remove streams.
//
// Every call can join a unit of work of the store's DB with [InTx], so events
// commit together with whatever else that unit writes (a command's status, a
// checkpoint, an inbox claim). Inputs beyond the limits ([MaxStreamLen],
// [MaxIDLen], [MaxTypeLen], [MaxVersion], times from year 1 to 9999, kept to
// the microsecond) fail with [ErrInvalid] on every backend, and every error is
// an [*Error] naming the operation and the stream.
//
// Backends implement the small contract of package eventstore/driver; the
// Store validates, copies and decides once over it. Package eventstoretest is
// the conformance suite every backend passes.
package eventstore
