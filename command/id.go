package command

import (
	"crypto/sha1"
	"encoding/hex"
	"hash/fnv"
	"strconv"
)

// eventIDSpace is the UUID namespace of the event IDs derived from command
// IDs (a fixed, random UUID).
var eventIDSpace = [16]byte{0x5b, 0x0e, 0x1c, 0x6a, 0x93, 0x2d, 0x4f, 0x61, 0xa7, 0x3c, 0x0d, 0x8e, 0x52, 0xf4, 0x19, 0xb7}

// EventID returns the ID of the index-th event (from 0) that the command id
// writes: a UUID of version 5 (RFC 9562) of the command ID and the index.
// Because a re-run of the command gives its events the same IDs, the event
// store recognises a retried append and stores nothing twice.
//
// [Bus.Dispatch] and the [Worker] give each event that has no ID its
// EventID; a saga that sends commands with IDs of its own gets the same
// events, with the same IDs, whenever it runs again.
func EventID(id string, index int) string {
	h := sha1.New()
	h.Write(eventIDSpace[:])
	h.Write([]byte(id))
	h.Write([]byte{'/'})
	h.Write(strconv.AppendInt(nil, int64(index), 10))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = 0x50 | u[6]&0x0f // version 5
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

// keyHash places a command in a partition: the hash of its key, or of its
// ID when it has none (it is then ordered with no other command).
func keyHash(key, id string) uint32 {
	h := fnv.New32a()
	if key != "" {
		h.Write([]byte(key))
	} else {
		h.Write([]byte(id))
	}
	return h.Sum32()
}
