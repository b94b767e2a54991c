package postgres

import (
	"encoding/binary"
	"errors"
	"time"
)

// The one-round-trip commit sends its parameters in PostgreSQL's binary
// format, encoded here: a hundred-event append is nine arrays of a hundred
// elements, which pgx's generic encoder would box, plan and copy one element
// at a time.

// Type OIDs of the values encoded here.
const (
	oidInt4        = 23
	oidInt8        = 20
	oidText        = 25
	oidBytea       = 17
	oidTimestamptz = 1184
)

// appendArrayHeader appends the header of a one-dimensional array of n
// elements of type oid without NULLs.
func appendArrayHeader(b []byte, oid uint32, n int) []byte {
	b = binary.BigEndian.AppendUint32(b, 1) // dimensions
	b = binary.BigEndian.AppendUint32(b, 0) // no NULLs
	b = binary.BigEndian.AppendUint32(b, oid)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	return binary.BigEndian.AppendUint32(b, 1) // lower bound
}

func appendTextArray(b []byte, vs []string) []byte {
	b = appendArrayHeader(b, oidText, len(vs))
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func appendByteaArray(b []byte, vs [][]byte) []byte {
	b = appendArrayHeader(b, oidBytea, len(vs))
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func appendInt8Array(b []byte, vs []int64) []byte {
	b = appendArrayHeader(b, oidInt8, len(vs))
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(v))
	}
	return b
}

// appendTimestamptzArray appends times as microseconds since 2000-01-01 UTC;
// the front has truncated them to microseconds within driver.MinTime and
// driver.MaxTime, which PostgreSQL holds.
func appendTimestamptzArray(b []byte, ts []time.Time) []byte {
	b = appendArrayHeader(b, oidTimestamptz, len(ts))
	for _, t := range ts {
		us := t.Unix()*1_000_000 + int64(t.Nanosecond()/1000) - pgEpochMicros
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(us))
	}
	return b
}

// params cuts a buffer of consecutive encoded values, ending at ends, into
// one parameter each.
func params(buf []byte, ends []int) [][]byte {
	ps := make([][]byte, len(ends))
	start := 0
	for i, end := range ends {
		ps[i] = buf[start:end:end]
		start = end
	}
	return ps
}

var errWire = errors.New("postgres: malformed reply")

// parseInt8 decodes a binary int8.
func parseInt8(v []byte) (int64, error) {
	if len(v) != 8 {
		return 0, errWire
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// parseInt8Array decodes a binary one-dimensional int8 array without NULLs
// (or an empty one).
func parseInt8Array(v []byte) ([]int64, error) {
	if len(v) < 12 {
		return nil, errWire
	}
	dims := binary.BigEndian.Uint32(v)
	if dims == 0 {
		return nil, nil
	}
	if dims != 1 || len(v) < 20 || binary.BigEndian.Uint32(v[8:]) != oidInt8 {
		return nil, errWire
	}
	n := int(binary.BigEndian.Uint32(v[12:]))
	v = v[20:]
	if len(v) != 12*n {
		return nil, errWire
	}
	out := make([]int64, n)
	for i := range out {
		if binary.BigEndian.Uint32(v) != 8 {
			return nil, errWire
		}
		out[i] = int64(binary.BigEndian.Uint64(v[4:]))
		v = v[12:]
	}
	return out, nil
}
