package eventstore

import (
	"strconv"

	"github.com/recado-dev/recado/eventstore/driver"
)

// ExpectedVersion is the state a stream must be in for an append or a delete
// to go ahead: [Any], [NoStream], [StreamExists] or [Exact]. The zero value is
// Any. It is not a number, so a version cannot be turned into one by a
// conversion that silently means something else.
type ExpectedVersion struct {
	kind    driver.ExpectKind
	version uint64
}

var (
	// Any goes ahead whatever the stream's state (but never on a tombstoned
	// stream).
	Any = ExpectedVersion{}
	// NoStream requires that the stream does not exist: it never had events,
	// or it was soft-deleted.
	NoStream = ExpectedVersion{kind: driver.ExpectNoStream}
	// StreamExists requires that the stream exists.
	StreamExists = ExpectedVersion{kind: driver.ExpectStreamExists}
)

// Exact requires that the stream's last event has version v. Exact(0) is
// [NoStream]. Versions above [MaxVersion] are invalid: an append or delete
// given one fails with [ErrInvalid].
func Exact(v uint64) ExpectedVersion {
	if v == 0 {
		return NoStream
	}
	return ExpectedVersion{kind: driver.ExpectExact, version: v}
}

// IsExact reports whether e names a version, and which.
func (e ExpectedVersion) IsExact() (uint64, bool) {
	return e.version, e.kind == driver.ExpectExact
}

func (e ExpectedVersion) String() string {
	switch e.kind {
	case driver.ExpectNoStream:
		return "no stream"
	case driver.ExpectStreamExists:
		return "stream exists"
	case driver.ExpectExact:
		return strconv.FormatUint(e.version, 10)
	}
	return "any"
}

func (e ExpectedVersion) driver() driver.Expected {
	return driver.Expected{Kind: e.kind, Version: e.version}
}
