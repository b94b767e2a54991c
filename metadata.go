package recado

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

// Metadata travels with an event: who caused it, which request it belongs to,
// and user-defined fields.
//
// It is stored as a flat JSON object of strings: the known fields under the keys
// "correlation_id", "causation_id", "idempotency_key", "traceparent" and
// "tracestate", and each entry of Fields under its own key. A key of Fields may
// therefore not be one of those five; [Metadata.Validate] says so.
type Metadata struct {
	// CorrelationID ties together every message of one conversation, e.g. an order.
	CorrelationID string
	// CausationID is the ID of the message that caused this one.
	CausationID string
	// IdempotencyKey is the key the originating request carried, if any.
	IdempotencyKey string
	// TraceParent and TraceState are the W3C Trace Context headers of the trace
	// the event was recorded in.
	TraceParent string
	TraceState  string
	// Fields holds user-defined metadata.
	Fields map[string]string
}

const (
	keyCorrelation = "correlation_id"
	keyCausation   = "causation_id"
	keyIdempotency = "idempotency_key"
	keyTraceParent = "traceparent"
	keyTraceState  = "tracestate"
)

func reservedKey(k string) bool {
	switch k {
	case keyCorrelation, keyCausation, keyIdempotency, keyTraceParent, keyTraceState:
		return true
	}
	return false
}

// ErrBadMetadata is returned for metadata that cannot be stored or read back.
var ErrBadMetadata = errors.New("recado: bad metadata")

// Validate reports whether m can be stored: every string valid UTF-8 without a
// NUL byte (PostgreSQL's text cannot hold one), and no key of Fields empty or
// equal to a reserved key. Fields with empty values are kept.
func (m Metadata) Validate() error {
	known := [...]struct{ name, value string }{{keyCorrelation, m.CorrelationID}, {keyCausation, m.CausationID},
		{keyIdempotency, m.IdempotencyKey}, {keyTraceParent, m.TraceParent}, {keyTraceState, m.TraceState}}
	for _, f := range known {
		if !utf8.ValidString(f.value) {
			return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadMetadata, f.name)
		}
		if strings.IndexByte(f.value, 0) >= 0 {
			return fmt.Errorf("%w: %s contains a NUL byte", ErrBadMetadata, f.name)
		}
	}
	for k, v := range m.Fields {
		switch {
		case k == "":
			return fmt.Errorf("%w: empty field name", ErrBadMetadata)
		case reservedKey(k):
			return fmt.Errorf("%w: field name %q is reserved for Metadata's own field", ErrBadMetadata, k)
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			return fmt.Errorf("%w: field %q is not valid UTF-8", ErrBadMetadata, k)
		case strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0:
			return fmt.Errorf("%w: field %q contains a NUL byte", ErrBadMetadata, k)
		}
	}
	return nil
}

// IsZero reports whether m carries nothing.
func (m Metadata) IsZero() bool {
	return m.CorrelationID == "" && m.CausationID == "" && m.IdempotencyKey == "" &&
		m.TraceParent == "" && m.TraceState == "" && len(m.Fields) == 0
}

// AppendJSON appends the stored form of m to b: nothing at all for empty
// metadata, otherwise a flat JSON object. Backends use it to store metadata
// without reflection. It does not validate; call [Metadata.Validate] first.
func (m Metadata) AppendJSON(b []byte) []byte {
	if m.IsZero() {
		return b
	}
	start := len(b)
	b = append(b, '{')
	field := func(k, v string) {
		if len(b) > start+1 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, v)
	}
	own := func(k, v string) { // Metadata's own fields: empty means absent
		if v != "" {
			field(k, v)
		}
	}
	own(keyCorrelation, m.CorrelationID)
	own(keyCausation, m.CausationID)
	own(keyIdempotency, m.IdempotencyKey)
	own(keyTraceParent, m.TraceParent)
	own(keyTraceState, m.TraceState)
	if len(m.Fields) == 1 {
		for k, v := range m.Fields {
			field(k, v)
		}
	} else {
		for _, k := range slices.Sorted(maps.Keys(m.Fields)) {
			field(k, m.Fields[k])
		}
	}
	return append(b, '}')
}

// MarshalJSON implements [json.Marshaler] with the stored form ("{}" when empty).
func (m Metadata) MarshalJSON() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if m.IsZero() {
		return []byte("{}"), nil
	}
	return m.AppendJSON(nil), nil
}

// UnmarshalJSON implements [json.Unmarshaler]; see [ParseMetadata].
func (m *Metadata) UnmarshalJSON(b []byte) error {
	md, err := ParseMetadata(b)
	if err != nil {
		return err
	}
	*m = md
	return nil
}

// ParseMetadata reads metadata in the stored form written by
// [Metadata.AppendJSON]. Empty input is empty metadata. Any flat JSON object of
// strings is accepted; other JSON is an error wrapping [ErrBadMetadata].
func ParseMetadata(b []byte) (Metadata, error) {
	var m Metadata
	if len(b) == 0 || string(b) == "null" {
		return m, nil
	}
	if ok := m.parseSimple(b); ok {
		return m, nil
	}
	// Escapes, odd spacing or values that are not strings: the general decoder
	// handles (or rejects) them.
	m = Metadata{}
	var kv map[string]string
	if err := json.Unmarshal(b, &kv); err != nil {
		return Metadata{}, fmt.Errorf("%w: %v", ErrBadMetadata, err)
	}
	for k, v := range kv {
		m.set(k, v)
	}
	return m, nil
}

func (m *Metadata) set(k, v string) {
	switch k {
	case keyCorrelation:
		m.CorrelationID = v
	case keyCausation:
		m.CausationID = v
	case keyIdempotency:
		m.IdempotencyKey = v
	case keyTraceParent:
		m.TraceParent = v
	case keyTraceState:
		m.TraceState = v
	default:
		if m.Fields == nil {
			m.Fields = make(map[string]string, 2)
		}
		m.Fields[k] = v
	}
}

// parseSimple reads the form AppendJSON writes when no string needs escaping:
// {"k":"v","k":"v"} with no white space. It reports false for anything else,
// leaving the general decoder to decide.
func (m *Metadata) parseSimple(b []byte) bool {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return false
	}
	s := string(b[1 : len(b)-1])
	if s == "" {
		return true
	}
	for {
		k, rest, ok := cutJSONString(s)
		if !ok || rest == "" || rest[0] != ':' {
			return false
		}
		v, rest, ok := cutJSONString(rest[1:])
		if !ok {
			return false
		}
		m.set(k, v)
		if rest == "" {
			return true
		}
		if rest[0] != ',' {
			return false
		}
		s = rest[1:]
	}
}

// cutJSONString reads a JSON string without escapes at the start of s.
func cutJSONString(s string) (str, rest string, ok bool) {
	if s == "" || s[0] != '"' {
		return "", "", false
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return "", "", false
	}
	str = s[1 : 1+end]
	if strings.IndexByte(str, '\\') >= 0 || !utf8.ValidString(str) {
		return "", "", false
	}
	for i := 0; i < len(str); i++ {
		if str[i] < 0x20 {
			return "", "", false
		}
	}
	return str, s[2+end:], true
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			if c >= utf8.RuneSelf && utf8.ValidString(s[i:]) && plainFrom(s[i:]) {
				break
			}
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plainFrom reports whether s needs no escaping in JSON (beyond its multi-byte runes).
func plainFrom(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
