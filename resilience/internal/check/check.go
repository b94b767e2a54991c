// Package check holds the input checks and the clock handling that the
// recoverability stores (deadletter, idempotency, inbox, lease) share, so
// that they refuse the same input with the same words.
package check

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// TimePrecision is the precision the stores keep times with: PostgreSQL's
// timestamps hold microseconds.
const TimePrecision = time.Microsecond

// MaxTime is the latest time the stores keep (inclusive), in UTC.
var MaxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)

// Name checks a name that must be set: 1 to max bytes of UTF-8 without NUL.
func Name(what, s string, max int) error {
	if s == "" {
		return fmt.Errorf("no %s", what)
	}
	return Text(what, s, max)
}

// Text checks a string that may be empty: at most max bytes of UTF-8 without
// NUL.
func Text(what, s string, max int) error {
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

// Clean turns s into text every backend stores: invalid UTF-8 and NUL bytes
// become U+FFFD, and the result is cut to at most max bytes on a character
// boundary. It is for text a store keeps but must not refuse, such as the
// message of the error that sent a letter to the dead-letter queue.
func Clean(s string, max int) string {
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

// Clock returns now, or time.Now when now is nil.
func Clock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

// Now reads now and returns the time as the stores keep it: UTC, truncated
// to TimePrecision.
func Now(now func() time.Time) time.Time {
	return now().UTC().Truncate(TimePrecision)
}

// Add returns t+d truncated to TimePrecision, and false if it falls after
// MaxTime.
func Add(t time.Time, d time.Duration) (time.Time, bool) {
	u := t.Add(d).Truncate(TimePrecision)
	if u.After(MaxTime) || u.Before(t) {
		return time.Time{}, false
	}
	return u, true
}
