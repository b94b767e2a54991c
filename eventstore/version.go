package eventstore

import (
	"fmt"
	"strconv"
)

// ExpectedVersion is the state a stream must be in for an append (or delete) to
// go ahead. The zero value is [Any].
type ExpectedVersion int64

const (
	// Any appends whatever the stream's state (but not to a tombstoned stream).
	Any ExpectedVersion = 0
	// NoStream requires that the stream does not exist: it has no events, or it
	// was soft-deleted.
	NoStream ExpectedVersion = -1
	// StreamExists requires that the stream exists.
	StreamExists ExpectedVersion = -2
)

// Exact requires that the stream's last event has version v. Exact(0) is
// [NoStream]. Versions beyond the int64 range are not representable.
func Exact(v uint64) ExpectedVersion {
	if v == 0 {
		return NoStream
	}
	return ExpectedVersion(v)
}

// IsExact reports whether e names a version, and which.
func (e ExpectedVersion) IsExact() (uint64, bool) {
	if e > 0 {
		return uint64(e), true
	}
	return 0, false
}

func (e ExpectedVersion) String() string {
	switch {
	case e == Any:
		return "any"
	case e == NoStream:
		return "no stream"
	case e == StreamExists:
		return "stream exists"
	case e > 0:
		return strconv.FormatInt(int64(e), 10)
	}
	return fmt.Sprintf("invalid(%d)", int64(e))
}

// Check returns nil when a stream whose last version is actual, and which exists
// or not, satisfies e; otherwise a [*ConflictError]. A soft-deleted stream does
// not exist but keeps its last version, so the next append continues from it.
func (e ExpectedVersion) Check(stream string, actual uint64, exists bool) error {
	ok := false
	switch {
	case e == Any:
		ok = true
	case e == NoStream:
		ok = !exists
	case e == StreamExists:
		ok = exists
	case e > 0:
		ok = uint64(e) == actual
	}
	if ok {
		return nil
	}
	return &ConflictError{Stream: stream, Expected: e, Actual: actual, Exists: exists}
}

func (e ExpectedVersion) valid() bool { return e >= StreamExists }
