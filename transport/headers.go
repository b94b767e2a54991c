package transport

import (
	"fmt"
	"strconv"
	"time"

	"github.com/recado-dev/recado"
)

// The headers a message travels with, on every broker: its body is Data
// alone. Brokers write them with [Message.WriteHeaders] and read them back
// with [ReadHeaders]; a broker may also use its own fields (a Kafka record's
// key, NATS's Nats-Msg-Id) in addition.
const (
	HeaderID       = "Recado-Id"
	HeaderKey      = "Recado-Key"
	HeaderType     = "Recado-Type"
	HeaderVersion  = "Recado-Version"
	HeaderTime     = "Recado-Time"
	HeaderMetadata = "Recado-Metadata" // recado.Metadata's stored form (flat JSON)
)

// WriteHeaders calls set for each header that carries m (all but Data):
// empty fields are left out.
func (m *Message) WriteHeaders(set func(name, value string)) {
	set(HeaderID, m.ID)
	if m.Key != "" {
		set(HeaderKey, m.Key)
	}
	if m.Type != "" {
		set(HeaderType, m.Type)
	}
	if m.Version != 0 {
		set(HeaderVersion, strconv.FormatUint(m.Version, 10))
	}
	if !m.Time.IsZero() {
		set(HeaderTime, m.Time.UTC().Format(time.RFC3339Nano))
	}
	if !m.Metadata.IsZero() {
		set(HeaderMetadata, string(m.Metadata.AppendJSON(nil)))
	}
}

// ReadHeaders returns the message that headers (read through get, which
// returns "" for a header that is absent) and data carry. A message without
// a Recado-Id header, or with a malformed one, is an error wrapping
// [ErrInvalid]: the consumer should dead-letter it rather than guess.
func ReadHeaders(get func(name string) string, data []byte) (Message, error) {
	m := Message{ID: get(HeaderID), Key: get(HeaderKey), Type: get(HeaderType), Data: data}
	if m.ID == "" {
		return m, fmt.Errorf("%w: no %s header", ErrInvalid, HeaderID)
	}
	if v := get(HeaderVersion); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return m, fmt.Errorf("%w: header %s %q is not a version", ErrInvalid, HeaderVersion, v)
		}
		m.Version = n
	}
	if v := get(HeaderTime); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return m, fmt.Errorf("%w: header %s %q is not an RFC 3339 time", ErrInvalid, HeaderTime, v)
		}
		m.Time = t.UTC()
	}
	if v := get(HeaderMetadata); v != "" {
		md, err := recado.ParseMetadata([]byte(v))
		if err != nil {
			return m, fmt.Errorf("%w: header %s: %v", ErrInvalid, HeaderMetadata, err)
		}
		m.Metadata = md
	}
	return m, nil
}
