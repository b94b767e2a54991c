package recado

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// NewID returns a new event ID: a UUID of version 7 (RFC 9562) in its usual
// 36-character text form. IDs made later sort after IDs made earlier, to a
// precision of about a quarter of a microsecond (the 12 bits after the
// millisecond timestamp hold the sub-millisecond fraction of the clock, the
// RFC's method 3), so they index well in B-trees. The remaining 62 bits are random.
func NewID() string {
	return newIDAt(time.Now())
}

func newIDAt(t time.Time) string {
	var u [16]byte
	// Since Go 1.24 crypto/rand.Read never returns an error: it crashes the
	// program itself if the operating system cannot supply randomness.
	_, _ = rand.Read(u[6:])
	ns := t.UnixNano()
	ms := uint64(ns / 1e6)
	frac := uint64(ns%1e6) * 4096 / 1e6 // sub-millisecond part, 12 bits
	u[0] = byte(ms >> 40)
	u[1] = byte(ms >> 32)
	u[2] = byte(ms >> 24)
	u[3] = byte(ms >> 16)
	u[4] = byte(ms >> 8)
	u[5] = byte(ms)
	u[6] = 0x70 | byte(frac>>8) // version 7
	u[7] = byte(frac)
	u[8] = 0x80 | u[8]&0x3f // variant 10
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}
