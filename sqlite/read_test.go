package sqlite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// multiPage fills a store with n events over several read pages, in appends
// of 100 to ten streams, and returns what was appended in log order.
func multiPage(t *testing.T, db *DB, n int) []recado.Event {
	t.Helper()
	var all []recado.Event
	for i := 0; i < n; i += 100 {
		batch := make([]recado.Event, 0, 100)
		for j := i; j < min(i+100, n); j++ {
			e := recado.NewEvent(fmt.Sprintf("type-%d", j%3), fmt.Appendf(nil, `{"n":%d}`, j))
			e.Metadata.CorrelationID = fmt.Sprintf("c-%d", j)
			batch = append(batch, e)
		}
		if _, err := db.Events().Append(t.Context(), fmt.Sprintf("s-%d", i/100%10), batch); err != nil {
			t.Fatal(err)
		}
		all = append(all, batch...)
	}
	return all
}

func TestReadAcrossPages(t *testing.T) {
	db := openTest(t, Options{ReadConns: 1}) // a connection not given back would hang the next read
	const n = 3*pageSize + 17
	want := multiPage(t, db, n)
	s := db.Events()
	ctx := t.Context()

	first := readAll(t, s)
	second := readAll(t, s) // reuses the first read's page buffers
	for _, got := range [][]recado.Event{first, second} {
		if len(got) != n {
			t.Fatalf("ReadAll read %d events, want %d", len(got), n)
		}
		for i, e := range got {
			w := want[i]
			if p, _ := e.Position.Parts(); p != uint64(i+1) || e.ID != w.ID || e.Type != w.Type ||
				!bytes.Equal(e.Data, w.Data) || e.Metadata.CorrelationID != w.Metadata.CorrelationID {
				t.Fatalf("event %d = %d %s %s %s %q, want %d %s %s %s %q", i, p, e.ID, e.Type, e.Data, e.Metadata.CorrelationID,
					i+1, w.ID, w.Type, w.Data, w.Metadata.CorrelationID)
			}
		}
	}
	first[0].Data[0] = 'X'
	if second[0].Data[0] == 'X' {
		t.Error("two reads share an event's Data")
	}

	tests := []struct {
		name  string
		opts  []eventstore.ReadOption
		count int
		first uint64 // position of the first event read
		step  int64  // +1 forwards, -1 backwards
	}{
		{"limit across pages", []eventstore.ReadOption{eventstore.Limit(pageSize + 3)}, pageSize + 3, 1, 1},
		{"limit of whole pages", []eventstore.ReadOption{eventstore.Limit(2 * pageSize)}, 2 * pageSize, 1, 1},
		{"backwards", []eventstore.ReadOption{eventstore.Backwards()}, n, n, -1},
		{"backwards limit", []eventstore.ReadOption{eventstore.Backwards(), eventstore.Limit(pageSize + 1)}, pageSize + 1, n, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := 0
			for e, err := range s.ReadAll(ctx, recado.Position{}, tc.opts...) {
				if err != nil {
					t.Fatal(err)
				}
				p, _ := e.Position.Parts()
				if want := uint64(int64(tc.first) + int64(got)*tc.step); p != want {
					t.Fatalf("event %d at position %d, want %d", got, p, want)
				}
				got++
			}
			if got != tc.count {
				t.Errorf("read %d events, want %d", got, tc.count)
			}
		})
	}
}

func TestReadBrokenOffAndCancelled(t *testing.T) {
	db := openTest(t, Options{ReadConns: 1})
	const n = 4 * pageSize
	multiPage(t, db, n)
	s := db.Events()

	// Broken off in the second page, while the next is being read: nothing
	// stays held (the only read connection serves the next read; goleak
	// checks the reading goroutine stopped).
	for _, stopAt := range []int{1, pageSize, pageSize + 10, 3*pageSize + 1} {
		got := 0
		for _, err := range s.ReadAll(t.Context(), recado.Position{}) {
			if err != nil {
				t.Fatal(err)
			}
			if got++; got == stopAt {
				break
			}
		}
		if got != stopAt {
			t.Fatalf("stopped at %d, want %d", got, stopAt)
		}
		if evs := readStream(t, s, "s-0"); len(evs) == 0 {
			t.Fatal("no events read after a broken-off read")
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got, errs := 0, 0
	for _, err := range s.ReadAll(ctx, recado.Position{}) {
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error after cancel = %v, want context.Canceled", err)
			}
			errs++
			continue
		}
		if got++; got == pageSize+5 {
			cancel()
		}
	}
	if errs != 1 || got >= n {
		t.Errorf("cancelled read: %d events and %d errors, want fewer than %d and one error", got, errs, n)
	}
}

func TestCloseDuringRead(t *testing.T) {
	db := openTest(t, Options{})
	multiPage(t, db, 3*pageSize)
	got := 0
	var last error
	for _, err := range db.Events().ReadAll(t.Context(), recado.Position{}) {
		if err != nil {
			last = err
			continue
		}
		if got++; got == 10 {
			if err := db.Close(); err != nil {
				t.Fatalf("Close during a read: %v", err)
			}
		}
	}
	if !errors.Is(last, eventstore.ErrClosed) || got >= 3*pageSize {
		t.Errorf("read across Close: %d events, last error %v; want fewer than %d and ErrClosed", got, last, 3*pageSize)
	}
}

// TestCorruptMetadata: a row whose metadata cannot be decoded (written here
// with SQL, as a damaged file or a foreign writer might) yields, after the
// events before it, an error that wraps recado.ErrBadMetadata and names the
// event's ID, position and stream, from every read and from a subscription.
func TestCorruptMetadata(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	es := events("e", 3)
	if _, err := s.Append(ctx, "order-1", es); err != nil {
		t.Fatal(err)
	}
	bad := es[1]
	err := db.Tx(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE recado_events SET metadata = ? WHERE id = ?", []byte(`{"correlation":`), bad.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, read func(yield func(error) bool)) {
		t.Helper()
		n := 0
		var got error
		read(func(err error) bool {
			if err != nil {
				got = err
				return false
			}
			n++
			return true
		})
		if n != 1 {
			t.Errorf("%d events before the error, want 1", n)
		}
		switch {
		case !errors.Is(got, recado.ErrBadMetadata):
			t.Errorf("error = %v, want one wrapping recado.ErrBadMetadata", got)
		case !strings.Contains(got.Error(), bad.ID) || !strings.Contains(got.Error(), "position 2") ||
			!strings.Contains(got.Error(), `"order-1"`):
			t.Errorf("error = %q, want it to name event %s, position 2 and stream order-1", got, bad.ID)
		}
	}
	t.Run("ReadAll", func(t *testing.T) {
		check(t, func(yield func(error) bool) {
			for _, err := range s.ReadAll(ctx, recado.Position{}) {
				if !yield(err) {
					return
				}
			}
		})
	})
	t.Run("ReadStream", func(t *testing.T) {
		check(t, func(yield func(error) bool) {
			for _, err := range s.ReadStream(ctx, "order-1") {
				if !yield(err) {
					return
				}
			}
		})
	})
	t.Run("Subscribe", func(t *testing.T) {
		check(t, func(yield func(error) bool) {
			for m, err := range s.Subscribe(ctx, recado.Position{}) {
				if err == nil && m.Kind != eventstore.KindEvent {
					continue
				}
				if !yield(err) {
					return
				}
			}
		})
	})
}

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
			_, err := s.Append(ctx, "s", events("F", 600))
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
				const total = 2*pageSize + 200
				if _, err := s.Append(ctx, "s", events("E", total)); err != nil {
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
				if n != pageSize {
					t.Errorf("read %d events before the error, want the first page (%d)", n, pageSize)
				}
			})
		}
	}
}

// TestMetadataStored: metadata reads back as it was appended, fields with
// empty values (and no metadata at all) included, from both reads.
func TestMetadataStored(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	metas := []recado.Metadata{
		{},
		{Fields: map[string]string{"empty": ""}},
		{CorrelationID: "c-1", Fields: map[string]string{"a": "", "b": "x", "quote\"d": "line\nbreak"}},
		{CausationID: "e-0", IdempotencyKey: "k", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "v=1"},
	}
	es := events("e", len(metas))
	for i := range es {
		es[i].Metadata = metas[i]
	}
	if _, err := s.Append(ctx, "m", es); err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][]recado.Event{"ReadStream": readStream(t, s, "m"), "ReadAll": readAll(t, s)} {
		if len(got) != len(metas) {
			t.Fatalf("%s read %d events, want %d", name, len(got), len(metas))
		}
		for i, e := range got {
			if !reflect.DeepEqual(e.Metadata, metas[i]) {
				t.Errorf("%s: event %d metadata = %#v, want %#v", name, i, e.Metadata, metas[i])
			}
		}
	}
}
