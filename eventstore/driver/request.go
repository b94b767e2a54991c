package driver

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/recado-dev/recado"
)

// Limits every backend can hold, enforced by the front before a driver sees a
// request. They are the smallest of what memory, SQLite and PostgreSQL (its
// index entries, its timestamp range and precision) can store and read back
// exactly.
const (
	// MaxStreamLen is the longest stream name, in bytes.
	MaxStreamLen = 1024
	// MaxIDLen is the longest event ID, in bytes.
	MaxIDLen = 255
	// MaxTypeLen is the longest event type, in bytes.
	MaxTypeLen = 255
	// MaxVersion is the highest stream version (and Exact expected version).
	MaxVersion = math.MaxInt64
	// TimePrecision is the precision event times are kept with: the front
	// truncates them to it.
	TimePrecision = time.Microsecond
)

// MinTime and MaxTime bound event times (inclusive), in UTC.
var (
	MinTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// ExpectKind says which condition an [Expected] is.
type ExpectKind uint8

const (
	// ExpectAny goes ahead whatever the stream's state (but never on a
	// tombstoned stream).
	ExpectAny ExpectKind = iota
	// ExpectNoStream requires that the stream does not exist.
	ExpectNoStream
	// ExpectStreamExists requires that it exists.
	ExpectStreamExists
	// ExpectExact requires that its last version is Expected.Version (1 to
	// MaxVersion).
	ExpectExact
)

// Expected is the expected version of a request, as the driver sees it.
type Expected struct {
	Kind    ExpectKind
	Version uint64 // for ExpectExact
}

// Holds reports whether a stream in state st satisfies e.
func (e Expected) Holds(st State) bool {
	switch e.Kind {
	case ExpectNoStream:
		return !st.Exists()
	case ExpectStreamExists:
		return st.Exists()
	case ExpectExact:
		return st.Version == e.Version
	}
	return true
}

// State is what a backend knows of a stream.
type State struct {
	// Version is the stream's last version, counting events hidden by a soft
	// delete (an append after a soft delete continues from it); 0 if the stream
	// never had events.
	Version uint64
	// Start is the last version hidden by a soft delete (0 if none): the
	// stream's visible events are Start+1..Version.
	Start uint64
	// Tombstoned streams can never be read or written again.
	Tombstoned bool
}

// Exists reports whether the stream has visible events and is not tombstoned.
func (st State) Exists() bool { return !st.Tombstoned && st.Version > st.Start }

// SoftDeleted reports whether the stream had events that a soft delete hid,
// and none since.
func (st State) SoftDeleted() bool {
	return !st.Tombstoned && st.Start > 0 && st.Version == st.Start
}

// Stored is an event already stored whose ID is one of a request's IDs: the
// facts [Request.Decide] needs about it.
type Stored struct {
	ID       string
	Stream   string
	Version  uint64
	Position recado.Position
	Type     string
	Data     []byte
}

// Outcome is what became of a request.
type Outcome uint8

const (
	// Pending: not decided yet.
	Pending Outcome = iota
	// Written: the driver stores the events (or applies the delete).
	Written
	// Duplicate: the events were stored by an earlier append (a retry); the
	// driver stores nothing, the result is the original one.
	Duplicate
	// Conflict: the expected version did not hold.
	Conflict
	// DuplicateID: an event ID is stored for a different event.
	DuplicateID
	// Deleted: the stream is tombstoned.
	Deleted
	// NotFound: a delete of a stream that does not exist.
	NotFound
)

// Request is one append or delete on its way through a driver. The front fills
// the first fields; [Request.Decide] or [Request.DecideDelete] fill the rest.
// A driver that batches requests (group commit) decides each in the order it
// applies them, with the state left by the requests before it.
type Request struct {
	Stream   string
	Events   []recado.Event // the front's copies; empty for a delete
	Expected Expected
	// Tx is the caller's unit of work, or nil: the driver commits the request
	// itself (in a group commit if it likes).
	Tx recado.Tx
	// Tombstone marks a delete that is permanent.
	Tombstone bool

	// Outcome is set by Decide or DecideDelete.
	Outcome Outcome
	// State is the stream's state the decision was made on.
	State State
	// FirstVersion..LastVersion and FirstPosition..LastPosition are where the
	// events are: for Written, the versions Decide assigned and the positions
	// the driver assigns (it sets them, and each event's Version, Position and
	// Stream, when it stores them); for Duplicate, the original ones.
	FirstVersion, LastVersion   uint64
	FirstPosition, LastPosition recado.Position
	// For DuplicateID: the ID, the stream it is stored in and what differs.
	DupID, DupStream, DupReason string
}

// Reset clears what a decision filled in, so that the request can be decided
// again (a driver retrying a group commit does).
func (r *Request) Reset() {
	r.Outcome = Pending
	r.State = State{}
	r.FirstVersion, r.LastVersion = 0, 0
	r.FirstPosition, r.LastPosition = recado.Position{}, recado.Position{}
	r.DupID, r.DupStream, r.DupReason = "", "", ""
}

// IDs returns the request's event IDs, for a driver to look up which are stored.
func (r *Request) IDs() []string {
	ids := make([]string, len(r.Events))
	for i := range r.Events {
		ids[i] = r.Events[i].ID
	}
	return ids
}

// Decide applies the contract's rules to an append, given the stream's state
// and the stored events whose IDs are among the request's (in any order; nil
// when none is stored). It sets r.Outcome and returns true when the driver must
// store the events: r.FirstVersion..r.LastVersion are then their versions.
//
// The rules: idempotency comes first. If the first event's ID is stored, the
// request is a retry when every event is stored, in the same stream, at
// consecutive versions in the request's order, with the same type and data:
// Duplicate, with the original versions and positions, whatever the expected
// version and even if the stream was deleted since. Any other stored ID is
// DuplicateID. Then a tombstoned stream is Deleted, then the expected version
// is checked (Conflict), then the events are Written after st.Version.
func (r *Request) Decide(st State, stored []Stored) bool {
	r.Reset()
	r.State = st
	if len(stored) > 0 && r.matchRetry(stored) {
		return false
	}
	switch {
	case st.Tombstoned:
		r.Outcome = Deleted
	case !r.Expected.Holds(st):
		r.Outcome = Conflict
	default:
		r.Outcome = Written
		r.FirstVersion = st.Version + 1
		r.LastVersion = st.Version + uint64(len(r.Events))
		return true
	}
	return false
}

// matchRetry decides a request some of whose IDs are stored: it sets Duplicate
// or DuplicateID and returns true.
func (r *Request) matchRetry(stored []Stored) bool {
	byID := make(map[string]*Stored, len(stored))
	for i := range stored {
		byID[stored[i].ID] = &stored[i]
	}
	first, ok := byID[r.Events[0].ID]
	if !ok {
		// Not a retry; but no later event may reuse a stored ID.
		for _, e := range r.Events[1:] {
			if s, ok := byID[e.ID]; ok {
				r.duplicateID(e.ID, s.Stream, "stored by an earlier append that did not start with this batch's first event")
				return true
			}
		}
		return false // stored held no ID of the request
	}
	for k := range r.Events {
		e := &r.Events[k]
		was, ok := byID[e.ID]
		if !ok {
			r.duplicateID(first.ID, first.Stream,
				fmt.Sprintf("the retried batch has event %s (index %d) that was not stored with it", e.ID, k))
			return true
		}
		var reason string
		switch {
		case was.Stream != r.Stream:
			reason = fmt.Sprintf("stored in another stream, not %q", r.Stream)
		case was.Version != first.Version+uint64(k):
			reason = fmt.Sprintf("stored as version %d, not at index %d of this batch", was.Version, k)
		case was.Type != e.Type:
			reason = fmt.Sprintf("stored with type %q, not %q", was.Type, e.Type)
		case !bytes.Equal(was.Data, e.Data):
			reason = "stored with other data"
		}
		if reason != "" {
			r.duplicateID(e.ID, was.Stream, reason)
			return true
		}
	}
	last := byID[r.Events[len(r.Events)-1].ID]
	r.Outcome = Duplicate
	r.FirstVersion, r.LastVersion = first.Version, last.Version
	r.FirstPosition, r.LastPosition = first.Position, last.Position
	return true
}

func (r *Request) duplicateID(id, stream, reason string) {
	r.Outcome = DuplicateID
	r.DupID, r.DupStream, r.DupReason = id, stream, reason
}

// DecideDelete applies the rules to a delete, given the stream's state. A
// tombstoned stream is Deleted. A soft delete of a stream that does not exist
// is NotFound, whatever the expected version (not-found comes first); a
// tombstone needs no events (a name can be reserved). Then the expected
// version (Conflict). It returns true, with Outcome Written, when the driver
// must delete.
func (r *Request) DecideDelete(st State) bool {
	r.Reset()
	r.State = st
	switch {
	case st.Tombstoned:
		r.Outcome = Deleted
	case !r.Tombstone && !st.Exists():
		r.Outcome = NotFound
	case !r.Expected.Holds(st):
		r.Outcome = Conflict
	default:
		r.Outcome = Written
		return true
	}
	return false
}
