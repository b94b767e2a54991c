// Package eventstore is the contract between recado and the databases that keep
// its events, and the logic every backend shares.
//
// An event store keeps streams of events ("order-42": placed, paid, shipped) and a
// global log of every event of every stream in commit order. The [Store] contract
// is small, three methods:
//
//   - Append adds events to the end of one stream, atomically, under an
//     [ExpectedVersion]: [Any], [NoStream], [StreamExists], or an exact version
//     (optimistic concurrency). Of many appends racing with the same exact
//     version, exactly one wins; the others get a [*ConflictError]. An append whose
//     event IDs are already stored (a retry) stores nothing and returns the original
//     result, so retrying is always safe, including after [ErrUnknownOutcome].
//   - ReadStream reads one stream forwards or backwards.
//   - ReadAll reads the global log after a [recado.Position].
//
// Capabilities a backend may add are separate interfaces, found by type assertion:
// [Notifier] (wake readers when events commit), [Subscriber] (a backend's own
// subscriptions), [Deleter] (soft delete and tombstone).
//
// [Subscribe] turns any Store into a catch-up-then-live subscription, filtered by
// stream, stream prefix and event type, that also reports the position it has
// reached when nothing matches, so checkpoints keep moving.
//
// The invariants every backend must prove are in package eventstoretest, which
// each backend runs from its own tests.
package eventstore
