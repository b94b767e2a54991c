package command

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits every backend holds; input beyond them fails with [ErrInvalid].
const (
	// MaxTypeLen is the longest command type name, in bytes.
	MaxTypeLen = 255
	// MaxKeyLen is the longest ordering key, in bytes (a stream name fits).
	MaxKeyLen = 1024
	// MaxQueueLen is the longest queue name, in bytes.
	MaxQueueLen = 200
	// MaxScopeLen and MaxIdempotencyKeyLen bound a caller's scope and its
	// idempotency key, in bytes.
	MaxScopeLen          = 255
	MaxIdempotencyKeyLen = 255
	// MaxLocationLen is the longest result location, in bytes.
	MaxLocationLen = 2048
	// MaxSchemaLen is the longest snapshot schema name, in bytes.
	MaxSchemaLen = 255
	// MaxStreamLen is the longest stream name, in bytes, as in the event
	// store.
	MaxStreamLen = 1024
	// maxProblemText bounds the detail of a stored problem, in bytes.
	maxProblemText = 4096
)

// timePrecision is the precision the stores keep times with: PostgreSQL's
// timestamps hold microseconds.
const timePrecision = time.Microsecond

// checkName checks a name that must be set: 1 to max bytes of UTF-8 without
// NUL.
func checkName(what, s string, max int) error {
	if s == "" {
		return fmt.Errorf("no %s", what)
	}
	return checkText(what, s, max)
}

// checkText checks a string that may be empty: at most max bytes of UTF-8
// without NUL.
func checkText(what, s string, max int) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("%s of %d bytes, longer than %d", what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", what)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%s contains a NUL byte", what)
	}
	return nil
}

// clean turns s into text every backend stores: invalid UTF-8 and NUL bytes
// become U+FFFD, and the result is cut to at most max bytes on a character
// boundary. It is for text a store keeps but must not refuse, such as an
// error's message.
func clean(s string, max int) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 && len(s) <= max {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// clock returns now, or time.Now when now is nil.
func clock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

// stamp reads now and returns the time as the stores keep it: UTC,
// truncated to the microsecond.
func stamp(now func() time.Time) time.Time {
	return now().UTC().Truncate(timePrecision)
}
