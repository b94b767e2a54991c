package eventstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore/driver"
)

func ev(id string) recado.Event { return recado.Event{ID: id, Type: "T", Data: []byte(`{}`)} }

// TestAppendValidation: input within the limits reaches the driver; input
// beyond them, or malformed, fails with ErrInvalid and never reaches it.
func TestAppendValidation(t *testing.T) {
	long := func(n int) string { return strings.Repeat("é", n/2) + strings.Repeat("x", n%2) } // n bytes of UTF-8
	with := func(f func(*recado.Event)) []recado.Event {
		e := ev("e2")
		f(&e)
		return []recado.Event{ev("e1"), e}
	}
	at := func(tm time.Time) []recado.Event { return with(func(e *recado.Event) { e.Time = tm }) }
	tests := []struct {
		name    string
		stream  string
		events  []recado.Event
		opts    []AppendOption
		wantErr string // in the message; "" when the driver must get the request
	}{
		{"stream at the limit", long(MaxStreamLen), []recado.Event{ev("e1")}, nil, ""},
		{"stream one byte over", long(MaxStreamLen + 1), []recado.Event{ev("e1")}, nil, "stream name of 1025 bytes, longer than 1024"},
		{"empty stream", "", []recado.Event{ev("e1")}, nil, "empty stream name"},
		{"stream not UTF-8", "s\xff", []recado.Event{ev("e1")}, nil, "stream name is not valid UTF-8"},
		{"stream cut inside a character", long(MaxStreamLen)[:MaxStreamLen-1], []recado.Event{ev("e1")}, nil, "not valid UTF-8"},
		{"stream with NUL", "s\x00t", []recado.Event{ev("e1")}, nil, "stream name contains a NUL byte"},
		{"no events", "s", nil, nil, "no events"},
		{"empty events", "s", []recado.Event{}, nil, "no events"},
		{"ID at the limit", "s", with(func(e *recado.Event) { e.ID = long(MaxIDLen) }), nil, ""},
		{"ID one byte over", "s", with(func(e *recado.Event) { e.ID = long(MaxIDLen + 1) }), nil, "event 1: ID of 256 bytes, longer than 255"},
		{"no ID", "s", with(func(e *recado.Event) { e.ID = "" }), nil, "event 1: no ID"},
		{"ID not UTF-8", "s", with(func(e *recado.Event) { e.ID = "\xfe" }), nil, "ID is not valid UTF-8"},
		{"ID with NUL", "s", with(func(e *recado.Event) { e.ID = "a\x00" }), nil, "ID contains a NUL byte"},
		{"type at the limit", "s", with(func(e *recado.Event) { e.Type = long(MaxTypeLen) }), nil, ""},
		{"type one byte over", "s", with(func(e *recado.Event) { e.Type = long(MaxTypeLen + 1) }), nil, "type of 256 bytes, longer than 255"},
		{"no type", "s", with(func(e *recado.Event) { e.Type = "" }), nil, "event 1 (e2): no type"},
		{"type not UTF-8", "s", with(func(e *recado.Event) { e.Type = "T\xc3" }), nil, "type is not valid UTF-8"},
		{"type with NUL", "s", with(func(e *recado.Event) { e.Type = "\x00" }), nil, "type contains a NUL byte"},
		{"ID twice", "s", []recado.Event{ev("e1"), ev("e2"), ev("e1")}, nil, "event ID e1 appears twice"},
		{"empty metadata value", "s", with(func(e *recado.Event) { e.Metadata.Fields = map[string]string{"k": ""} }), nil, ""},
		{"NUL in metadata", "s", with(func(e *recado.Event) { e.Metadata.CorrelationID = "c\x00" }), nil, "correlation_id contains a NUL byte"},
		{"NUL in a metadata field", "s", with(func(e *recado.Event) { e.Metadata.Fields = map[string]string{"k": "\x00"} }), nil, "NUL"},
		{"reserved metadata field", "s", with(func(e *recado.Event) { e.Metadata.Fields = map[string]string{"causation_id": "c"} }), nil, "reserved"},
		{"metadata not UTF-8", "s", with(func(e *recado.Event) { e.Metadata.TraceState = "\xff" }), nil, "tracestate is not valid UTF-8"},
		{"Exact(MaxVersion)", "s", []recado.Event{ev("e1")}, []AppendOption{ExpectVersion(MaxVersion)}, ""},
		{"Exact(MaxVersion+1)", "s", []recado.Event{ev("e1")}, []AppendOption{ExpectVersion(MaxVersion + 1)}, "expected version 9223372036854775808 is beyond"},
		{"Exact(MaxUint64)", "s", []recado.Event{ev("e1")}, []AppendOption{Expect(Exact(math.MaxUint64))}, "beyond the highest version"},
		{"first microsecond of year 1", "s", at(driver.MinTime.Add(time.Microsecond)), nil, ""},
		{"last microsecond of year 9999", "s", at(driver.MaxTime), nil, ""},
		{"last nanosecond of year 9999", "s", at(time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)), nil, ""},
		{"year 0", "s", at(time.Date(0, 12, 31, 23, 59, 59, 0, time.UTC)), nil, "outside year 1 to 9999"},
		{"year 10000", "s", at(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)), nil, "outside year 1 to 9999"},
		{"year 1 local, year 0 in UTC", "s", at(time.Date(1, 1, 1, 0, 30, 0, 0, time.FixedZone("+1", 3600))), nil, "outside"},
		{"year 9999 local, 10000 in UTC", "s", at(time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("-5", -5*3600))), nil, "outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFake()
			_, err := New(d).Append(t.Context(), tt.stream, tt.events, tt.opts...)
			if tt.wantErr == "" {
				if errors.Is(err, ErrInvalid) || d.lastRequest() == nil {
					t.Fatalf("Append = %v; the driver got no request, want it to", err)
				}
				return
			}
			if d.lastRequest() != nil {
				t.Errorf("invalid input reached the driver")
			}
			var e *Error
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &e) || e.Op != "append" || e.Stream != tt.stream {
				t.Fatalf("Append = %#v, want an *Error{Op: append, Stream: %q} wrapping ErrInvalid", err, tt.stream)
			}
			prefix := "eventstore: append " + strconv.Quote(tt.stream) + ": eventstore: invalid argument: "
			if tt.stream == "" {
				prefix = "eventstore: append: eventstore: invalid argument: "
			}
			if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tt.wantErr) {
				t.Errorf("message %q, want %q... mentioning %q", msg, prefix, tt.wantErr)
			}
		})
	}
}

// TestAppendTimes: the driver gets times in UTC truncated to the microsecond;
// a zero time becomes the time of the append.
func TestAppendTimes(t *testing.T) {
	d := newFake()
	given := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.FixedZone("+1", 3600))
	before := time.Now().Truncate(TimePrecision)
	if _, err := New(d).Append(t.Context(), "s", []recado.Event{ev("now"), {ID: "given", Type: "T", Time: given}}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	got := d.lastRequest().Events
	for _, e := range got {
		if e.Time.Location() != time.UTC || e.Time.Nanosecond()%1000 != 0 {
			t.Errorf("event %s: time %v, want UTC truncated to the microsecond", e.ID, e.Time)
		}
	}
	if now := got[0].Time; now.Before(before) || now.After(after) {
		t.Errorf("zero time became %v, want the time of the append (%v..%v)", now, before, after)
	}
	if want := time.Date(2021, 3, 4, 4, 6, 7, 123456000, time.UTC); got[1].Time != want {
		t.Errorf("time %v became %v, want %v", given, got[1].Time, want)
	}
}

// TestAppendCopies: nothing the caller does to its events after Append
// returns reaches the driver, even a driver that reads the request's events
// later on another goroutine (with -race, shared memory would be reported);
// and Append writes nothing into the caller's events.
func TestAppendCopies(t *testing.T) {
	events := func() []recado.Event {
		return []recado.Event{
			{ID: "a", Type: "T", Data: []byte("data-a"), Metadata: recado.Metadata{CorrelationID: "c", Fields: map[string]string{"k": "v", "empty": ""}}},
			{ID: "b", Type: "T", Data: []byte("data-b")},
			{ID: "c", Type: "T", Data: []byte{}},
		}
	}
	want := events()
	d := newFake()
	mutated := make(chan struct{})
	later := make(chan []recado.Event, 1)
	d.after = func(r *driver.Request) {
		go func() { // reads the request after Append returned and the caller mutated its events
			<-mutated
			got := make([]recado.Event, len(r.Events))
			for i, e := range r.Events {
				got[i] = e
				got[i].Data = bytes.Clone(e.Data)
				got[i].Metadata.Fields = maps.Clone(e.Metadata.Fields)
			}
			later <- got
		}()
	}
	mine := events()
	if _, err := New(d).Append(t.Context(), "s", mine); err != nil {
		t.Fatal(err)
	}
	for i := range mine {
		if mine[i].Stream != "" || mine[i].Version != 0 || !mine[i].Position.IsZero() || !mine[i].Time.IsZero() {
			t.Errorf("Append wrote into the caller's event %d: %+v", i, mine[i])
		}
		for j := range mine[i].Data {
			mine[i].Data[j] = 'X'
		}
		if f := mine[i].Metadata.Fields; f != nil {
			f["k"] = "changed"
			delete(f, "empty")
			f["new"] = "added"
		}
	}
	close(mutated)
	check := func(how string, got []recado.Event) {
		t.Helper()
		for i := range want {
			if string(got[i].Data) != string(want[i].Data) || !maps.Equal(got[i].Metadata.Fields, want[i].Metadata.Fields) {
				t.Errorf("%s: event %d = data %q, fields %v; want %q, %v", how, i, got[i].Data, got[i].Metadata.Fields, want[i].Data, want[i].Metadata.Fields)
			}
		}
		if got[2].Data == nil {
			t.Errorf("%s: empty non-nil data became nil", how)
		}
	}
	check("driver's log", d.log)
	check("request read later", <-later)
}

// TestErrors: every call's error is an *Error naming the operation and the
// stream, wrapping the driver's error or the sentinel.
func TestErrors(t *testing.T) {
	for _, pair := range []struct{ front, drv error }{{ErrConflict, driver.ErrConflict}, {ErrStreamNotFound, driver.ErrStreamNotFound},
		{ErrStreamDeleted, driver.ErrStreamDeleted}, {ErrDuplicateID, driver.ErrDuplicateID}, {ErrInvalid, driver.ErrInvalid},
		{ErrClosed, driver.ErrClosed}, {ErrUnknownOutcome, driver.ErrUnknownOutcome}, {ErrTxAborted, driver.ErrTxAborted}} {
		if pair.front != pair.drv {
			t.Errorf("eventstore's %v is not driver's", pair.front)
		}
	}

	d := newFake()
	s := New(d)
	ctx := t.Context()
	d.err = fmt.Errorf("%w: the pool is gone", ErrClosed)
	first := func(seq func(func(recado.Event, error) bool)) error {
		for _, err := range seq {
			return err
		}
		return nil
	}
	calls := []struct {
		op, stream string
		call       func() error
	}{
		{"append", "s", func() error { _, err := s.Append(ctx, "s", []recado.Event{ev("e")}); return err }},
		{"read stream", "s", func() error { return first(s.ReadStream(ctx, "s")) }},
		{"read all", "", func() error { return first(s.ReadAll(ctx, recado.Position{})) }},
		{"state", "s", func() error { _, err := s.State(ctx, "s"); return err }},
		{"delete", "s", func() error { return s.Delete(ctx, "s") }},
		{"tombstone", "s", func() error { return s.Tombstone(ctx, "s") }},
		{"subscribe", "", func() error {
			for _, err := range s.Subscribe(ctx, recado.Position{}) {
				return err
			}
			return nil
		}},
	}
	for _, c := range calls {
		err := c.call()
		var e *Error
		if !errors.As(err, &e) || e.Op != c.op || e.Stream != c.stream || !errors.Is(err, ErrClosed) {
			t.Errorf("%s: error %#v, want *Error{Op: %q, Stream: %q} wrapping ErrClosed", c.op, err, c.op, c.stream)
			continue
		}
		want := "eventstore: " + c.op + " \"s\": eventstore: store closed: the pool is gone"
		if c.stream == "" {
			want = "eventstore: " + c.op + ": eventstore: store closed: the pool is gone"
		}
		if err.Error() != want {
			t.Errorf("%s: message %q, want %q", c.op, err, want)
		}
	}

	// A unit of work the driver does not know is an invalid argument.
	d.err = nil
	other := fakeTx{newFake()}
	foreign := []func() error{
		func() error { _, err := s.Append(ctx, "s", []recado.Event{ev("e")}, InTx(other)); return err },
		func() error { _, err := s.State(ctx, "s", InTx(other)); return err },
		func() error { return s.Delete(ctx, "s", InTx(other)) },
		func() error { return s.Tombstone(ctx, "s", InTx(other)) },
	}
	for i, call := range foreign {
		if err := call(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "unit of work of another DB") {
			t.Errorf("call %d with a foreign unit of work: %v, want ErrInvalid", i, err)
		}
	}
	if _, err := s.Append(ctx, "s", []recado.Event{ev("e")}, InTx(fakeTx{d})); err != nil {
		t.Errorf("Append in the driver's own unit of work: %v", err)
	}
	if tx := d.lastRequest().Tx; tx != (fakeTx{d}) {
		t.Errorf("the driver got Tx %v, want the caller's", tx)
	}
}

// TestOutcomes: each outcome a driver decides becomes its result or error.
func TestOutcomes(t *testing.T) {
	first, last := recado.NewPosition(7, 0), recado.NewPosition(9, 1)
	tests := []struct {
		name    string
		decide  func(r *driver.Request)
		want    AppendResult
		wantErr string
		is      error
	}{
		{"written", func(r *driver.Request) {
			r.Outcome, r.FirstVersion, r.LastVersion, r.FirstPosition, r.LastPosition = driver.Written, 4, 5, first, last
		}, AppendResult{FirstVersion: 4, LastVersion: 5, FirstPosition: first, LastPosition: last}, "", nil},
		{"duplicate", func(r *driver.Request) {
			r.Outcome, r.FirstVersion, r.LastVersion, r.FirstPosition, r.LastPosition = driver.Duplicate, 1, 2, first, last
		}, AppendResult{FirstVersion: 1, LastVersion: 2, FirstPosition: first, LastPosition: last, Duplicate: true}, "", nil},
		{"conflict", func(r *driver.Request) { r.Outcome, r.State = driver.Conflict, driver.State{Version: 5, Start: 2} },
			AppendResult{}, `eventstore: append "s": expected version 3, actual version 5 (stream exists)`, ErrConflict},
		{"conflict on a soft-deleted stream", func(r *driver.Request) { r.Outcome, r.State = driver.Conflict, driver.State{Version: 5, Start: 5} },
			AppendResult{}, `eventstore: append "s": expected version 3, actual version 5 (stream does not exist)`, ErrConflict},
		{"duplicate ID", func(r *driver.Request) {
			r.Outcome, r.DupID, r.DupStream, r.DupReason = driver.DuplicateID, "e", "t", "stored with other data"
		}, AppendResult{}, `eventstore: append "s": event ID "e" already stored in stream "t" for a different event: stored with other data`, ErrDuplicateID},
		{"deleted", func(r *driver.Request) { r.Outcome = driver.Deleted },
			AppendResult{}, `eventstore: append "s": eventstore: stream deleted`, ErrStreamDeleted},
		{"undecided", func(r *driver.Request) {},
			AppendResult{}, `eventstore: append "s": the backend left the request undecided (outcome 0)`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFake()
			d.decide = tt.decide
			res, err := New(d).Append(t.Context(), "s", []recado.Event{ev("e1"), ev("e2")}, ExpectVersion(3))
			if tt.wantErr == "" {
				if err != nil || res != tt.want {
					t.Errorf("Append = %+v, %v; want %+v", res, err, tt.want)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr || res != (AppendResult{}) {
				t.Fatalf("Append = %+v, %v; want error %q", res, err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			var ce *ConflictError
			if errors.As(err, &ce) {
				st := d.lastRequest().State
				if ce.Stream != "s" || ce.Expected != Exact(3) || ce.Actual != 5 || ce.Exists != st.Exists() {
					t.Errorf("ConflictError = %+v", ce)
				}
			}
			var de *DuplicateIDError
			if errors.As(err, &de) && (de.ID != "e" || de.Stream != "t") {
				t.Errorf("DuplicateIDError = %+v", de)
			}
		})
	}
}

// TestDeleteOutcomes: the rules of a delete, through the front: not-found
// comes before the expected version; a tombstone needs no events but is
// guarded by the expected version.
func TestDeleteOutcomes(t *testing.T) {
	d := newFake()
	s := New(d)
	ctx := t.Context()
	for _, ev := range []ExpectedVersion{Any, StreamExists, Exact(3), NoStream} {
		if err := s.Delete(ctx, "missing", Expect(ev)); !errors.Is(err, ErrStreamNotFound) || errors.Is(err, ErrConflict) {
			t.Errorf("Delete(missing, %s) = %v, want ErrStreamNotFound", ev, err)
		}
	}
	err := s.Tombstone(ctx, "never", Expect(Exact(3)))
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Actual != 0 || ce.Exists || err.Error() != `eventstore: tombstone "never": expected version 3, actual version 0 (stream does not exist)` {
		t.Errorf("Tombstone(never written, Exact(3)) = %v, want a ConflictError", err)
	}
	if err := s.Tombstone(ctx, "never"); err != nil {
		t.Fatal(err)
	}
	if err := s.Tombstone(ctx, "never"); !errors.Is(err, ErrStreamDeleted) {
		t.Errorf("second Tombstone = %v, want ErrStreamDeleted", err)
	}
	if err := s.Delete(ctx, "s", Expect(Exact(MaxVersion+1))); !errors.Is(err, ErrInvalid) || d.lastRequest().Stream == "s" {
		t.Errorf("Delete(Exact(MaxVersion+1)) = %v, want ErrInvalid before the driver", err)
	}
	if err := s.Tombstone(ctx, "", Expect(Any)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Tombstone of an empty name = %v, want ErrInvalid", err)
	}
}

// TestState: the front reports the driver's state of a stream, and refuses
// an expected version.
func TestState(t *testing.T) {
	d := newFake()
	s := New(d)
	ctx := t.Context()
	state := func(stream string) StreamState {
		t.Helper()
		st, err := s.State(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := state("s"); st != (StreamState{}) {
		t.Errorf("never written: %+v, want the zero state", st)
	}
	if _, err := s.Append(ctx, "s", []recado.Event{ev("1"), ev("2")}); err != nil {
		t.Fatal(err)
	}
	if st := state("s"); st != (StreamState{Version: 2, Exists: true}) {
		t.Errorf("with 2 events: %+v", st)
	}
	if err := s.Delete(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if st := state("s"); st != (StreamState{Version: 2, Deleted: true}) {
		t.Errorf("soft-deleted: %+v, want version 2 and Deleted", st)
	}
	if _, err := s.Append(ctx, "s", []recado.Event{ev("3")}, Expect(NoStream)); err != nil {
		t.Fatal(err)
	}
	if st := state("s"); st != (StreamState{Version: 3, Exists: true}) {
		t.Errorf("recreated: %+v", st)
	}
	if err := s.Tombstone(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if st := state("s"); st != (StreamState{Version: 3, Tombstoned: true}) {
		t.Errorf("tombstoned: %+v", st)
	}
	for _, opt := range []AppendOption{Expect(Any), ExpectVersion(3)} {
		if _, err := s.State(ctx, "s", opt); !errors.Is(err, ErrInvalid) {
			t.Errorf("State with an expected version: %v, want ErrInvalid", err)
		}
	}
	if _, err := s.State(ctx, "s\x00"); !errors.Is(err, ErrInvalid) {
		t.Errorf("State of a bad name: %v, want ErrInvalid", err)
	}
}

// TestCancelledContext: with a context already done, nothing reaches the
// driver's writes and reads yield the context's error.
func TestCancelledContext(t *testing.T) {
	d := newFake()
	s := New(d)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Append(ctx, "s", []recado.Event{ev("e")}); !errors.Is(err, context.Canceled) {
		t.Errorf("Append = %v", err)
	}
	if err := s.Delete(ctx, "s"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete = %v", err)
	}
	if _, err := s.State(ctx, "s"); !errors.Is(err, context.Canceled) {
		t.Errorf("State = %v", err)
	}
	if d.lastRequest() != nil {
		t.Error("a request reached the driver with a cancelled context")
	}
	for _, err := range s.ReadAll(ctx, recado.Position{}) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ReadAll = %v", err)
		}
	}
}

// TestOptions: the last option of a kind wins; the driver gets the resolved
// settings; bad read settings are invalid.
func TestOptions(t *testing.T) {
	d := newFake()
	s := New(d)
	ctx := t.Context()
	if _, err := s.Append(ctx, "s", []recado.Event{ev("e")}); err != nil {
		t.Fatal(err)
	}
	if got := d.lastRequest().Expected; got != (driver.Expected{Kind: driver.ExpectAny}) || d.lastRequest().Tx != nil {
		t.Errorf("default: expected %+v, tx %v; want Any and none", got, d.lastRequest().Tx)
	}
	_, _ = s.Append(ctx, "s", []recado.Event{ev("f")}, ExpectVersion(9), InTx(fakeTx{d}), Expect(StreamExists))
	if r := d.lastRequest(); r.Expected != (driver.Expected{Kind: driver.ExpectStreamExists}) || r.Tx == nil {
		t.Errorf("options folded to expected %+v, tx %v; want StreamExists and the tx", r.Expected, r.Tx)
	}
	for range s.ReadStream(ctx, "s", Limit(5), FromVersion(3), Backwards(), Limit(0)) {
	}
	if d.read != (driver.Read{From: 3, Backwards: true}) {
		t.Errorf("ReadStream options resolved to %+v", d.read)
	}
	bad := []struct {
		name string
		seq  func(func(recado.Event, error) bool)
	}{
		{"ReadStream negative limit", s.ReadStream(ctx, "s", Limit(-1))},
		{"ReadStream bad name", s.ReadStream(ctx, "")},
		{"ReadAll negative limit", s.ReadAll(ctx, recado.Position{}, Limit(-1))},
		{"ReadAll FromVersion", s.ReadAll(ctx, recado.Position{}, FromVersion(2))},
	}
	for _, b := range bad {
		n := 0
		for _, err := range b.seq {
			n++
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", b.name, err)
			}
		}
		if n != 1 {
			t.Errorf("%s yielded %d items, want one error", b.name, n)
		}
	}
}

var (
	appendSink AppendOption
	readSink   ReadOption
)

// TestOptionsAllocateNothing: options are values; building and folding them
// allocates nothing.
func TestOptionsAllocateNothing(t *testing.T) {
	tx := fakeTx{}
	v := uint64(3)
	allocs := testing.AllocsPerRun(100, func() {
		appendSink = ExpectVersion(v)
		appendSink = Expect(StreamExists)
		appendSink = InTx(tx)
		readSink = FromVersion(v)
		readSink = Backwards()
		readSink = Limit(int(v))
		appendOptions([]AppendOption{ExpectVersion(v), InTx(tx)})
		if _, err := readOptions([]ReadOption{FromVersion(v), Limit(2)}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("building and folding options: %v allocations, want 0", allocs)
	}
}
