package recado

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Position is a cursor into the global log of an event store.
//
// A position has two parts, compared in order: a major part and a minor part. A
// backend whose log is one sequence uses the major part alone (the minor part is
// zero); a backend that orders by a pair, such as a transaction and a sequence
// within it, uses both. The zero Position is the start of the log: it comes
// before every event.
//
// Positions are values to compare, store and send, never to compute with: the
// position after p is not p plus one.
type Position struct {
	major, minor uint64
}

// NewPosition returns the position with the given parts. Backends construct
// positions; applications get them from events and parse them from strings.
func NewPosition(major, minor uint64) Position { return Position{major, minor} }

// Parts returns the two parts of p, for backends that store them.
func (p Position) Parts() (major, minor uint64) { return p.major, p.minor }

// IsZero reports whether p is the start of the log.
func (p Position) IsZero() bool { return p.major == 0 && p.minor == 0 }

// Compare returns -1 if p is before q, +1 if p is after q, and 0 if they are equal.
func (p Position) Compare(q Position) int {
	if c := cmp.Compare(p.major, q.major); c != 0 {
		return c
	}
	return cmp.Compare(p.minor, q.minor)
}

// Before reports whether p comes before q.
func (p Position) Before(q Position) bool { return p.Compare(q) < 0 }

// String returns the text form of p: "major" when the minor part is zero,
// "major:minor" otherwise. [ParsePosition] reads it back.
func (p Position) String() string {
	return string(p.AppendText(nil))
}

// AppendText appends the text form of p to b.
func (p Position) AppendText(b []byte) []byte {
	b = strconv.AppendUint(b, p.major, 10)
	if p.minor != 0 {
		b = append(b, ':')
		b = strconv.AppendUint(b, p.minor, 10)
	}
	return b
}

// MarshalText implements [encoding.TextMarshaler].
func (p Position) MarshalText() ([]byte, error) { return p.AppendText(nil), nil }

// UnmarshalText implements [encoding.TextUnmarshaler].
func (p *Position) UnmarshalText(b []byte) error {
	q, err := ParsePosition(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ErrBadPosition is returned by [ParsePosition] for text that is not a position.
var ErrBadPosition = errors.New("recado: malformed position")

// ParsePosition parses the text form written by [Position.String]. The empty string
// is the zero position.
func ParsePosition(s string) (Position, error) {
	if s == "" {
		return Position{}, nil
	}
	majorText, minorText, hasMinor := strings.Cut(s, ":")
	major, err := parseUint(majorText)
	if err != nil {
		return Position{}, fmt.Errorf("%w %q: want \"N\" or \"N:M\" with decimal N and M", ErrBadPosition, s)
	}
	var minor uint64
	if hasMinor {
		if minor, err = parseUint(minorText); err != nil {
			return Position{}, fmt.Errorf("%w %q: want \"N\" or \"N:M\" with decimal N and M", ErrBadPosition, s)
		}
	}
	return Position{major, minor}, nil
}

// parseUint accepts only plain decimal digits: no sign, no spaces, no "0x".
func parseUint(s string) (uint64, error) {
	if s == "" || len(s) > 20 {
		return 0, ErrBadPosition
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrBadPosition
		}
	}
	return strconv.ParseUint(s, 10, 64)
}
