package postgres

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
// type, data, metadata, time (in binary: see checkFormats).
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

// add copies one row whose event columns start at off.
func (p *page) add(raw [][]byte, off int) error {
	for i, v := range raw[off : off+eventCols] {
		if v == nil {
			return fmt.Errorf("postgres: event column %d is NULL", i)
		}
		p.raw = append(p.raw, v...)
		p.ends = append(p.ends, int32(len(p.raw)))
	}
	return nil
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

// checkFormats verifies the result columns from off are in the binary formats
// decode expects (text columns may be either: their bytes are the same).
func checkFormats(fds []pgconn.FieldDescription, off int) error {
	if len(fds) < off+eventCols {
		return fmt.Errorf("postgres: read query returned %d columns, want %d", len(fds), off+eventCols)
	}
	for _, i := range []int{0, 1, 4, 6, 7, 8} {
		if fds[off+i].Format != pgx.BinaryFormatCode {
			return fmt.Errorf("postgres: column %s is not in binary format", fds[off+i].Name)
		}
	}
	return nil
}
