// Package recado is the root of a library for services that talk through commands
// and events: CQRS and event sourcing, sagas, and the failure handling that makes
// asynchronous communication safe.
//
// This package holds the vocabulary every other package shares:
//
//   - [Event]: one immutable fact, with its ID, stream, stream version, position in
//     the global log, type name, encoded data, [Metadata] and time.
//   - [Position]: an opaque cursor into the global log. It can carry two parts so a
//     backend may order by something other than one integer; compare positions with
//     [Position.Compare] and store them with [Position.String] and [ParsePosition].
//     Never do arithmetic on them.
//   - [NewID]: time-sortable event IDs (UUIDv7). IDs may also be chosen by the client;
//     an append is idempotent on them.
//   - [Registry]: maps Go types to stable type names and back, encodes with a pluggable
//     [Codec] (JSON by default), and upcasts old versions of an event to the current one
//     on read. Reading never fails on a type the registry does not know: the raw event
//     is returned, and only decoding it reports [ErrUnknownType].
//
// The storage contract lives in package eventstore; backends live in packages memory,
// sqlite and postgres.
package recado
