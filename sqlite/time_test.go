package sqlite

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// TestEventTimes: event times are stored in UTC to the microsecond, from year
// 1 to year 9999 (in UTC); times outside are refused with ErrInvalid.
func TestEventTimes(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	east := time.FixedZone("east", 5*3600)
	valid := []time.Time{
		time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC),           // the zero Time means "now"
		time.Date(1, 1, 1, 4, 59, 59, 0, east).Add(time.Hour), // 0001-01-01T00:59:59Z
		time.Date(1677, 12, 31, 23, 59, 59, 999, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999_999_500, time.UTC),
		time.Date(2024, 5, 6, 7, 8, 9, 123_456_789, east),
		time.Date(2262, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
	}
	for i, when := range valid {
		e := recado.NewEvent("e", []byte(`{}`))
		e.Time = when
		res, err := s.Append(ctx, "times", []recado.Event{e})
		if err != nil {
			t.Errorf("append with time %v: %v", when, err)
			continue
		}
		var got recado.Event
		for e, err := range s.ReadAll(ctx, recado.Position{}, eventstore.Backwards(), eventstore.Limit(1)) {
			if err != nil {
				t.Fatal(err)
			}
			got = e
		}
		want := when.UTC().Truncate(time.Microsecond)
		if got.Position != res.FirstPosition || !got.Time.Equal(want) || got.Time.Location() != time.UTC {
			t.Errorf("time %d: stored %v, read back %v, want %v in UTC", i, when, got.Time, want)
		}
	}
	invalid := []time.Time{
		time.Date(0, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(1, 1, 1, 0, 59, 59, 0, east), // year 0 in UTC
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("west", -5*3600)), // year 10000 in UTC
		time.Date(-300000, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for _, when := range invalid {
		e := recado.NewEvent("e", []byte(`{}`))
		e.Time = when
		if _, err := s.Append(ctx, "times", []recado.Event{e}); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("append with time %v = %v, want ErrInvalid", when, err)
		}
	}
}

// TestMigrateNanosecondTimes: a file written by the first events schema
// (times in Unix nanoseconds), built here with that schema's DDL, opens with
// its times converted to microseconds (rounded down, as Truncate does, also
// before 1970), once: a second Open converts nothing again.
func TestMigrateNanosecondTimes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	old := []time.Time{
		time.Date(2024, 5, 6, 7, 8, 9, 123_456_789, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999_999_500, time.UTC),
		time.Date(1678, 1, 1, 0, 0, 0, 1_999, time.UTC),
		time.Date(2261, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Unix(0, 0).UTC(),
	}
	c, err := sqlite3.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Exec(`CREATE TABLE recado_schema (contract TEXT PRIMARY KEY, version INTEGER NOT NULL);
INSERT INTO recado_schema VALUES ('events', 1);` + eventsV1 + `
INSERT INTO recado_streams (name, version) VALUES ('s', 5);`)
	if err != nil {
		t.Fatal(err)
	}
	ins, _, err := c.Prepare("INSERT INTO recado_events (id, stream, version, type, data, time) VALUES (?, 's', ?, 'e', x'7b7d', ?)")
	if err != nil {
		t.Fatal(err)
	}
	for i, when := range old {
		err := firstErr(ins.BindText(1, recado.NewID()), ins.BindInt64(2, int64(i+1)), ins.BindInt64(3, when.UnixNano()))
		if err == nil {
			err = ins.Exec()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(ins.Close(), c.Close()); err != nil {
		t.Fatal(err)
	}

	for open := range 2 {
		db, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("Open %d of a version 1 file: %v", open+1, err)
		}
		got := readStream(t, db.Events(), "s")
		if len(got) != len(old) {
			t.Fatalf("Open %d: read %d events, want %d", open+1, len(got), len(old))
		}
		for i, e := range got {
			if want := old[i].Truncate(time.Microsecond); !e.Time.Equal(want) {
				t.Errorf("Open %d: event %d time %v, want %v", open+1, i, e.Time.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
			}
		}
		var v int
		err = db.Tx(t.Context(), func(tx *Tx) error {
			return tx.QueryRowContext(t.Context(), "SELECT version FROM recado_schema WHERE contract = 'events'").Scan(&v)
		})
		if err != nil || v != 2 {
			t.Errorf("Open %d: events schema version %d, %v; want 2", open+1, v, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
