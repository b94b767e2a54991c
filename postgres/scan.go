package postgres

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/recado-dev/recado"
)

// page holds the events of one read query. Reading it is two steps, so that a
// reader can decode one page while the next is received: add copies each row's
// column values back to back into one buffer (the connection is then free),
// and decode turns them into events. The events' data point into that buffer,
// their IDs and streams into one string per page, and type names are interned:
// a page costs a few allocations, not several per event.
type page struct {
	raw    []byte
	ends   []int32 // eventCols per row: where each column value ends in raw
	events []recado.Event
	types  map[string]string
}

// eventCols are the columns of an event row: major, seq, id, stream, version,
// type, data, metadata, time (kept in binary: see checkFormats).
const eventCols = 9

const pgEpochMicros = 946684800 * 1_000_000 // 2000-01-01 in Unix microseconds

// reset empties p for a page of up to n rows. The buffer is new (the events
// of the last page keep theirs), sized from the last page's rows.
func (p *page) reset(n int) {
	rowSize := 512
	if k := p.rows(); k > 0 {
		rowSize = len(p.raw)/k + 1
	}
	p.raw = make([]byte, 0, rowSize*n)
	p.ends = p.ends[:0]
	p.events = p.events[:0]
	if p.types == nil || len(p.types) > 4096 {
		p.types = make(map[string]string)
	}
}

func (p *page) rows() int { return len(p.ends) / eventCols }

// add copies one row whose event columns start at off. The columns text
// marks (see checkFormats) came in text and are stored in binary.
func (p *page) add(raw [][]byte, off int, text textCols) error {
	for i, v := range raw[off : off+eventCols] {
		if v == nil {
			return fmt.Errorf("postgres: event column %d is NULL", i)
		}
		if text&(1<<i) == 0 {
			p.raw = append(p.raw, v...)
		} else {
			var err error
			if p.raw, err = appendBinary(p.raw, i, v); err != nil {
				return err
			}
		}
		p.ends = append(p.ends, int32(len(p.raw)))
	}
	return nil
}

// textCols marks, one bit per event column, those that came in text format:
// none on a pool that prepares its statements (pgx then asks for binary),
// all on one in simple-protocol or exec mode (what a transaction pooler such
// as PgBouncer needs).
type textCols uint16

// appendBinary appends the binary form of event column i given in text.
func appendBinary(dst []byte, i int, v []byte) ([]byte, error) {
	switch i {
	case 0, 1, 4: // bigint
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return dst, fmt.Errorf("postgres: event column %d: %w", i, err)
		}
		return binary.BigEndian.AppendUint64(dst, uint64(n)), nil
	case 6, 7: // bytea, in PostgreSQL's default hex output
		if len(v) < 2 || v[0] != '\\' || v[1] != 'x' {
			return dst, fmt.Errorf("postgres: event column %d: bytea not in hex format (set bytea_output = 'hex')", i)
		}
		return hex.AppendDecode(dst, v[2:])
	case 8: // timestamptz, in the ISO DateStyle (PostgreSQL's default)
		var ts pgtype.Timestamptz
		if err := ts.Scan(string(v)); err != nil || ts.InfinityModifier != pgtype.Finite {
			return dst, fmt.Errorf("postgres: event column %d: time %q (DateStyle must be ISO): %v", i, v, err)
		}
		return binary.BigEndian.AppendUint64(dst, uint64(ts.Time.UnixMicro()-pgEpochMicros)), nil
	}
	return append(dst, v...), nil // text is text
}

// col returns column c of row r.
func (p *page) col(r, c int) []byte {
	i := r*eventCols + c
	start := int32(0)
	if i > 0 {
		start = p.ends[i-1]
	}
	return p.raw[start:p.ends[i]:p.ends[i]]
}

// position returns the position of row r.
func (p *page) position(r int) recado.Position {
	return recado.NewPosition(binary.BigEndian.Uint64(p.col(r, 0)), binary.BigEndian.Uint64(p.col(r, 1)))
}

// decode turns the rows into p.events.
func (p *page) decode() error {
	n := p.rows()
	p.events = slicesGrow(p.events[:0], n)
	size := 0
	for r := range n {
		size += len(p.col(r, 2)) + len(p.col(r, 3))
	}
	text := make([]byte, 0, size)
	for r := range n {
		text = append(text, p.col(r, 2)...)
		text = append(text, p.col(r, 3)...)
	}
	str := string(text)
	at := 0
	for r := range n {
		e := &p.events[r]
		e.Position = p.position(r)
		id, stream := len(p.col(r, 2)), len(p.col(r, 3))
		e.ID, e.Stream = str[at:at+id], str[at+id:at+id+stream]
		at += id + stream
		e.Version = binary.BigEndian.Uint64(p.col(r, 4))
		typ, ok := p.types[string(p.col(r, 5))]
		if !ok {
			typ = string(p.col(r, 5))
			p.types[typ] = typ
		}
		e.Type = typ
		e.Data = p.col(r, 6)
		e.Metadata = recado.Metadata{}
		if md := p.col(r, 7); len(md) > 0 {
			m, err := recado.ParseMetadata(md)
			if err != nil {
				return fmt.Errorf("postgres: event at %s: %w", e.Position, err)
			}
			e.Metadata = m
		}
		us := int64(binary.BigEndian.Uint64(p.col(r, 8)))
		e.Time = time.UnixMicro(us + pgEpochMicros).UTC()
	}
	return nil
}

// slicesGrow returns s with length n, reusing its array when large enough.
func slicesGrow(s []recado.Event, n int) []recado.Event {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]recado.Event, n)
}

// checkFormats reports which of the event columns from off came in text
// format (text columns need no conversion: their bytes are the same).
func checkFormats(fds []pgconn.FieldDescription, off int) (textCols, error) {
	if len(fds) < off+eventCols {
		return 0, fmt.Errorf("postgres: read query returned %d columns, want %d", len(fds), off+eventCols)
	}
	var text textCols
	for _, i := range []int{0, 1, 4, 6, 7, 8} {
		if fds[off+i].Format != pgx.BinaryFormatCode {
			text |= 1 << i
		}
	}
	return text, nil
}
