package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
)

// TestReadStreamChangedBetweenPages: a stream deleted (soft, tombstoned, or
// deleted and written again) while a ReadStream is between pages ends the
// read with an error, never with part of the stream as if it were all of it.
func TestReadStreamChangedBetweenPages(t *testing.T) {
	tests := []struct {
		name   string
		change func(ctx context.Context, s *eventstore.Store) error
		want   error
	}{
		{"Deleted", func(ctx context.Context, s *eventstore.Store) error { return s.Delete(ctx, "s") }, eventstore.ErrStreamNotFound},
		{"Tombstoned", func(ctx context.Context, s *eventstore.Store) error { return s.Tombstone(ctx, "s") }, eventstore.ErrStreamDeleted},
		{"DeletedAndWrittenAgain", func(ctx context.Context, s *eventstore.Store) error {
			if err := s.Delete(ctx, "s"); err != nil {
				return err
			}
			_, err := s.Append(ctx, "s", testEvents("F", 600))
			return err
		}, eventstore.ErrStreamNotFound},
	}
	for _, tc := range tests {
		for _, backwards := range []bool{false, true} {
			name := tc.name
			var opts []eventstore.ReadOption
			if backwards {
				name += "/Backwards"
				opts = append(opts, eventstore.Backwards())
			}
			t.Run(name, func(t *testing.T) {
				db := openTest(t, Options{})
				s := db.Events()
				ctx := t.Context()
				const total = 2*readStreamPage + 200
				if _, err := s.Append(ctx, "s", testEvents("E", total)); err != nil {
					t.Fatal(err)
				}
				n := 0
				var readErr error
				for e, err := range s.ReadStream(ctx, "s", opts...) {
					if err != nil {
						readErr = err
						break
					}
					if e.Type != "E" {
						t.Fatalf("event %d of type %s: an event of the stream's next life", n, e.Type)
					}
					if n++; n == 1 {
						if err := tc.change(ctx, s); err != nil {
							t.Fatal(err)
						}
					}
				}
				if !errors.Is(readErr, tc.want) {
					t.Errorf("read of %d events ended with %v, want %v after the first page", n, readErr, tc.want)
				}
				if n != readStreamPage {
					t.Errorf("read %d events before the error, want the first page (%d)", n, readStreamPage)
				}
			})
		}
	}
}

// TestHorizonIdleTransaction pins what Horizon reports for a session idle in
// a transaction that has written (so has a transaction id): an Age (it holds
// the horizon: the next commit will be held back) with HeldBack zero until an
// event is committed after it, then HeldBack counting that event.
func TestHorizonIdleTransaction(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	h, err := db.Horizon(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Age <= 0 || h.PID == 0 || h.HeldBack != 0 {
		t.Errorf("Horizon with a session idle in a transaction and nothing committed since = %+v, want an Age and a PID with HeldBack 0", h)
	}
	if _, err := s.Append(ctx, "s", testEvents("E", 1)); err != nil {
		t.Fatal(err)
	}
	if h, err = db.Horizon(ctx); err != nil || h.Age <= 0 || h.HeldBack != 1 {
		t.Errorf("Horizon after an event committed behind the idle transaction = %+v, %v; want an Age and HeldBack 1", h, err)
	}
}

// randomText returns n bytes of valid, incompressible UTF-8 (one- and
// two-byte characters), so that index entries are as large as they look.
func randomText(n int) string {
	b := make([]byte, 0, n)
	var r [1]byte
	for len(b) < n {
		_, _ = rand.Read(r[:])
		if n-len(b) >= 2 && r[0]&1 == 1 {
			b = utf8.AppendRune(b, rune(0x100+int(r[0])))
		} else {
			b = append(b, 'a'+r[0]%26)
		}
	}
	return string(b)
}

// TestLimits: what the event store promises to hold (stream names of
// driver.MaxStreamLen bytes, event IDs and type names of MaxIDLen and
// MaxTypeLen, times from driver.MinTime to MaxTime with microseconds) fits
// the table and its indexes, in a group commit and in a unit of work, and
// reads back exactly: on a pool that prepares its statements (values in
// binary) and on ones that do not (values in text; times in a zone whose
// offset before 1920 has seconds).
func TestLimits(t *testing.T) {
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			pool := newPoolWith(t, func(cfg *pgxpool.Config) {
				cfg.ConnConfig.DefaultQueryExecMode = mode
				cfg.ConnConfig.RuntimeParams["timezone"] = "Asia/Kathmandu"
			})
			testLimits(t, openOn(t, pool, Options{Schema: newSchema(t)}))
		})
	}
}

func testLimits(t *testing.T, db *DB) {
	s := db.Events()
	ctx := t.Context()
	event := func(tm time.Time) recado.Event {
		return recado.Event{ID: randomText(driver.MaxIDLen), Type: randomText(driver.MaxTypeLen), Data: []byte(`{}`), Time: tm}
	}
	times := []time.Time{
		driver.MinTime.Add(time.Microsecond), // MinTime is the zero time: an append sets it to now
		time.Date(1900, 6, 30, 12, 34, 56, 789012000, time.UTC),
		driver.MaxTime,
	}
	for _, inTx := range []bool{false, true} {
		stream := randomText(driver.MaxStreamLen)
		var events []recado.Event
		for _, tm := range times {
			events = append(events, event(tm))
		}
		var err error
		if inTx {
			err = db.Tx(ctx, func(tx *Tx) error {
				_, err := s.Append(ctx, stream, events, eventstore.InTx(tx))
				return err
			})
		} else {
			_, err = s.Append(ctx, stream, events)
		}
		if err != nil {
			t.Fatalf("append at the limits (in a unit of work: %v): %v", inTx, err)
		}
		got, err := collect(s.ReadStream(ctx, stream))
		if err != nil || len(got) != len(events) {
			t.Fatalf("ReadStream: %d events, %v", len(got), err)
		}
		for i, e := range got {
			w := events[i]
			if e.Stream != stream || e.ID != w.ID || e.Type != w.Type || !e.Time.Equal(w.Time) {
				t.Errorf("event %d read back as %q/%q/%s, want it as appended (%s)", i, e.ID[:8], e.Type[:8], e.Time, w.Time)
			}
		}
		if res, err := s.Append(ctx, stream, events); err != nil || !res.Duplicate {
			t.Errorf("retry at the limits: %+v, %v; want a duplicate", res, err)
		}
	}
	got, err := collect(s.ReadAll(ctx, recado.Position{}))
	if err != nil || len(got) != 2*len(times) {
		t.Fatalf("ReadAll: %d events, %v; want %d", len(got), err, 2*len(times))
	}
	for i, e := range got {
		if w := times[i%len(times)]; !e.Time.Equal(w) || e.Time.Location() != time.UTC {
			t.Errorf("ReadAll: event %d at %s, want %s in UTC", i, e.Time, w)
		}
	}
}
