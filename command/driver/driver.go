// Package driver is the contract between package command's stores and the
// backends that keep them (memory, SQLite, PostgreSQL): [Commands], the
// durable records of commands accepted now and run later, and [Snapshots],
// the latest snapshot of each aggregate's state. Applications do not use it:
// they call the fronts, *command.Store and *command.SnapshotStore, which
// every backend's DB hands out.
//
// The rules live once, in the fronts: which status may follow which, when a
// command is due, what a retry or a dead letter records, which snapshot
// replaces which. A backend stores and finds records: it runs the front's
// function in a transaction with a [Writer] whose reads lock what they
// return, and answers the workers' queries.
package driver

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/recado-dev/recado"
)

// Commands is what a backend implements to keep command records. The front
// calls it only with checked input: names within the limits of package
// command, times in UTC truncated to the microsecond.
type Commands interface {
	// Insert stores rec as a new record in a transaction (tx's when tx is
	// not nil, else one of its own), setting rec.Seq to a number higher
	// than any record's before. If rec.IdempotencyKey is not empty and a
	// record with the same Queue, Scope and IdempotencyKey is stored, it
	// stores nothing and returns that record with found true. Of concurrent
	// inserts with one key exactly one stores. With tx set the driver
	// returns [ErrForeignTx] if tx is not its own, live, unit of work.
	Insert(ctx context.Context, tx recado.Tx, rec *Record) (existing Record, found bool, err error)

	// Update runs fn in a transaction: tx's when tx is not nil (then
	// [ErrForeignTx] if tx is not the driver's own, live, unit of work),
	// else one of its own, committed if fn returns nil and rolled back
	// otherwise. fn reads and writes records through w. The front's fn
	// reads what it needs before it writes, and returns an error only
	// before its first write (or with the error of a write): in the
	// caller's unit of work, such an error leaves the unit usable, and a
	// worker claims several commands in one unit, skipping those it finds
	// taken.
	Update(ctx context.Context, tx recado.Tx, fn func(w Writer) error) error

	// Get returns the committed record id.
	Get(ctx context.Context, id string) (rec Record, found bool, err error)

	// Pending returns the committed records that q selects ([Query.Match]),
	// by ascending Seq, at most q.Limit. They need not carry their Data,
	// Fingerprint, Metadata and Problem: a worker reads the records it
	// starts whole, when it claims them.
	Pending(ctx context.Context, q Query) ([]Record, error)

	// Cleanup deletes at most limit records whose status is final and
	// whose Updated time is before before, in one short transaction, and
	// returns how many it deleted. A deleted record's idempotency key is
	// free again.
	Cleanup(ctx context.Context, before time.Time, limit int) (int, error)
}

// Writer reads and writes records inside one transaction of
// [Commands.Update]. It sees the transaction's own writes. What its reads
// return stays locked until the transaction ends: of two transactions that
// read the same record, the second waits for the first to end and then sees
// its writes.
type Writer interface {
	// Get returns record id.
	Get(id string) (rec Record, found bool, err error)
	// Put stores rec in place of the record with rec.ID. A record with Seq
	// 0 is new (the front restores a record that was cleaned up while its
	// dead letter waited): the driver stores it with a new Seq, which it
	// sets in rec. The front never puts a new record with an idempotency
	// key.
	Put(rec *Record) error
}

// Snapshots is what a backend implements to keep snapshots: one per stream,
// the latest.
type Snapshots interface {
	// Save reads the stored snapshot of s.Stream in a transaction (tx's when
	// tx is not nil, then [ErrForeignTx] if it is not the driver's own, live,
	// unit of work; else one of its own), locked until that transaction ends,
	// and stores s in its place when [Replaces] says so. It reports whether
	// it stored s.
	Save(ctx context.Context, tx recado.Tx, s Snapshot) (stored bool, err error)

	// Get returns the committed snapshot of stream.
	Get(ctx context.Context, stream string) (s Snapshot, found bool, err error)

	// Delete deletes the snapshot of stream, if there is one, in a
	// transaction of its own.
	Delete(ctx context.Context, stream string) error
}

var (
	// ErrClosed: the backend's DB was closed.
	ErrClosed = errors.New("command: store closed")
	// ErrForeignTx: the unit of work given is not one of this backend's DB,
	// or it has ended. The fronts report it as command.ErrInvalid.
	ErrForeignTx = errors.New("command: unit of work of another DB, or finished")
)

// Status is where a command is in its life.
type Status uint8

const (
	// Accepted: stored, waiting for a worker (first run, or a retry after
	// a back-off, or a replay).
	Accepted Status = iota + 1
	// Running: a worker has claimed it and runs its handler.
	Running
	// Succeeded: its events (if any) and this status committed together.
	// Final.
	Succeeded
	// Failed: its handler refused it (a permanent error). Final.
	Failed
	// DeadLettered: it kept failing; a dead letter holds it for people to
	// replay. Final until replayed.
	DeadLettered
)

// Pending reports whether s is Accepted or Running: a worker has work to do.
func (s Status) Pending() bool { return s == Accepted || s == Running }

// Final reports whether s is Succeeded, Failed or DeadLettered.
func (s Status) Final() bool { return s >= Succeeded && s <= DeadLettered }

func (s Status) String() string {
	switch s {
	case Accepted:
		return "accepted"
	case Running:
		return "running"
	case Succeeded:
		return "succeeded"
	case Failed:
		return "failed"
	case DeadLettered:
		return "dead-lettered"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Record is what a backend keeps of one command.
type Record struct {
	// ID is the command's ID, made by the front (a UUIDv7).
	ID string
	// Seq is set by the driver on insert; it orders records.
	Seq uint64
	// Queue is the name of the queue the command belongs to.
	Queue string
	// Scope and IdempotencyKey are the caller's scope and key; both empty
	// when the caller gave no key. (Queue, Scope, IdempotencyKey) is
	// unique among records with a key.
	Scope, IdempotencyKey string
	// Fingerprint is a digest of the command's type and data: a second
	// accept with the same key must carry the same.
	Fingerprint []byte
	// Type is the command's type name; Data its encoded value; Metadata
	// what the caller sent along.
	Type     string
	Data     []byte
	Metadata recado.Metadata
	// Key is the ordering key (the aggregate's stream): commands with one
	// key run one at a time, by Seq. Empty for none.
	Key string
	// KeyHash is a hash of Key (of ID when Key is empty): a worker owns the
	// records whose KeyHash modulo its partition count is one of its
	// partitions.
	KeyHash uint32
	Status  Status
	// Attempts is how many times a worker has started the command.
	Attempts int
	// Accepted is when the command was accepted; Updated when the record
	// last changed.
	Accepted, Updated time.Time
	// NotBefore is when an Accepted command that failed may run again;
	// zero means at once.
	NotBefore time.Time
	// Stream, Version and Position say where a Succeeded command's events
	// went: the stream, the last event's version and its position. Empty
	// when it wrote none.
	Stream   string
	Version  uint64
	Position recado.Position
	// Location names the command's result, as its handler said ("/orders/42").
	Location string
	// Problem is a Failed or DeadLettered command's problem description,
	// as RFC 9457 JSON.
	Problem []byte
	// Letter is the ID of a DeadLettered command's dead letter.
	Letter uint64
}

// Query selects the pending records of some partitions of a queue.
type Query struct {
	Queue string
	// Partitions is how many partitions the queue's workers split the
	// records into (above zero); Owned are the partitions wanted, each
	// below Partitions.
	Partitions uint32
	Owned      []uint32
	// Limit is the most records returned, above zero.
	Limit int
}

// Match reports whether q selects rec (Limit aside): a pending record of
// q.Queue whose KeyHash modulo q.Partitions is in q.Owned. It is the
// reference that SQL backends express in their WHERE clause.
func (q *Query) Match(rec *Record) bool {
	return rec.Queue == q.Queue && rec.Status.Pending() && slices.Contains(q.Owned, rec.KeyHash%q.Partitions)
}

// Snapshot is what a backend keeps of one snapshot.
type Snapshot struct {
	// Stream is the stream whose events the state folds.
	Stream string
	// Schema names the shape of the state ("order/v2"): a snapshot of
	// another schema is ignored.
	Schema string
	// Version is the version of the last event folded into the state, and
	// EventID that event's ID (so a stream deleted and written again is
	// recognised).
	Version uint64
	EventID string
	// Data is the encoded state.
	Data []byte
	// Time is when it was taken.
	Time time.Time
}

// Replaces reports whether next must replace cur (found false when there is
// none): when there is none, when cur has another schema (the code that
// saves next is the code that reads snapshots now), or when next is of a
// later version.
func Replaces(cur Snapshot, found bool, next Snapshot) bool {
	return !found || cur.Schema != next.Schema || next.Version > cur.Version
}

// Clone returns a copy of rec that shares no memory with it.
func (rec Record) Clone() Record {
	rec.Fingerprint = bytes.Clone(rec.Fingerprint)
	rec.Data = bytes.Clone(rec.Data)
	rec.Problem = bytes.Clone(rec.Problem)
	rec.Metadata.Fields = maps.Clone(rec.Metadata.Fields)
	return rec
}
