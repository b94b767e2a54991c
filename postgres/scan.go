package postgres

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recado-dev/recado"
)

// page collects the events of one read query with few allocations: the text
// of the events (IDs and stream names) is copied into one buffer that becomes
// one string, the data into shared chunks, and type names are interned.
type page struct {
	events []recado.Event
	text   []byte
	spans  []textSpan
	types  map[string]string
	chunk  []byte
}

type textSpan struct{ id, stream [2]int }

const (
	pgEpochMicros = 946684800 * 1_000_000 // 2000-01-01 in Unix microseconds
	dataChunkSize = 64 << 10
)

func (p *page) reset() {
	p.events = p.events[:0]
	p.text = p.text[:0]
	p.spans = p.spans[:0]
	if p.types == nil || len(p.types) > 4096 {
		p.types = make(map[string]string)
	}
}

// add decodes one row whose columns at off are the 9 event columns
// (major, seq, id, stream, version, type, data, metadata, time) in binary.
func (p *page) add(raw [][]byte, off int) error {
	raw = raw[off : off+9]
	for i, v := range raw {
		if v == nil {
			return fmt.Errorf("postgres: event column %d is NULL", i)
		}
	}
	var e recado.Event
	major, seq := binary.BigEndian.Uint64(raw[0]), binary.BigEndian.Uint64(raw[1])
	e.Position = recado.NewPosition(major, seq)
	e.Version = binary.BigEndian.Uint64(raw[4])
	var sp textSpan
	sp.id = p.appendText(raw[2])
	sp.stream = p.appendText(raw[3])
	typ, ok := p.types[string(raw[5])]
	if !ok {
		typ = string(raw[5])
		p.types[typ] = typ
	}
	e.Type = typ
	e.Data = p.copyData(raw[6])
	if len(raw[7]) > 0 {
		md, err := recado.ParseMetadata(raw[7])
		if err != nil {
			return fmt.Errorf("postgres: event at %d:%d: %w", major, seq, err)
		}
		e.Metadata = md
	}
	us := int64(binary.BigEndian.Uint64(raw[8]))
	e.Time = time.UnixMicro(us + pgEpochMicros).UTC()
	p.events = append(p.events, e)
	p.spans = append(p.spans, sp)
	return nil
}

func (p *page) appendText(b []byte) [2]int {
	start := len(p.text)
	p.text = append(p.text, b...)
	return [2]int{start, len(p.text)}
}

// copyData copies b into the current chunk; the result's capacity ends at its
// length so an append by the caller never writes over the next event.
func (p *page) copyData(b []byte) []byte {
	if len(b) > dataChunkSize/4 {
		return append([]byte(nil), b...)
	}
	if len(p.chunk)+len(b) > cap(p.chunk) {
		p.chunk = make([]byte, 0, dataChunkSize)
	}
	start := len(p.chunk)
	p.chunk = append(p.chunk, b...)
	return p.chunk[start:len(p.chunk):len(p.chunk)]
}

// finish turns the collected text into the events' strings.
func (p *page) finish() {
	text := string(p.text)
	for i := range p.events {
		sp := p.spans[i]
		p.events[i].ID = text[sp.id[0]:sp.id[1]]
		p.events[i].Stream = text[sp.stream[0]:sp.stream[1]]
	}
}

// checkFormats verifies the result columns from off are in the binary formats
// add expects (text columns may be either: their bytes are the same).
func checkFormats(fds []pgconn.FieldDescription, off int) error {
	if len(fds) < off+9 {
		return fmt.Errorf("postgres: read query returned %d columns, want %d", len(fds), off+9)
	}
	for _, i := range []int{0, 1, 4, 6, 7, 8} {
		if fds[off+i].Format != pgx.BinaryFormatCode {
			return fmt.Errorf("postgres: column %s is not in binary format", fds[off+i].Name)
		}
	}
	return nil
}
