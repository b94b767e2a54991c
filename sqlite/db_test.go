package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"zero value", Options{}, true},
		{"survive crash", Options{Durability: SurviveCrash}, true},
		{"all set", Options{PollInterval: time.Second, MaxBatch: 8, BusyTimeout: time.Second, ReadConns: 2}, true},
		{"unknown durability", Options{Durability: 7}, false},
		{"negative durability", Options{Durability: -1}, false},
		{"negative poll", Options{PollInterval: -time.Second}, false},
		{"negative batch", Options{MaxBatch: -1}, false},
		{"negative busy", Options{BusyTimeout: -1}, false},
		{"negative read conns", Options{ReadConns: -1}, false},
		{"largest batch", Options{MaxBatch: maxMaxBatch}, true},
		{"batch too large", Options{MaxBatch: maxMaxBatch + 1}, false},
		{"batch far too large", Options{MaxBatch: 1 << 40}, false},
		{"most read conns", Options{ReadConns: maxReadConns}, true},
		{"too many read conns", Options{ReadConns: maxReadConns + 1}, false},
		{"far too many read conns", Options{ReadConns: 1 << 40}, false},
		{"longest busy timeout", Options{BusyTimeout: maxBusyTimeout}, true},
		{"busy timeout too long", Options{BusyTimeout: maxBusyTimeout + time.Millisecond}, false},
		{"busy timeout beyond SQLite's", Options{BusyTimeout: 30 * 24 * time.Hour}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if got := err == nil; got != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				if _, err := Open(filepath.Join(t.TempDir(), "x.db"), tc.opts); err == nil {
					t.Fatalf("Open with invalid options succeeded")
				}
			}
		})
	}
}

func TestDurabilitySetsSynchronous(t *testing.T) {
	tests := []struct {
		d    Durability
		want int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{Durable, 2}, {SurviveCrash, 1}}
	for _, tc := range tests {
		t.Run(tc.d.String(), func(t *testing.T) {
			db := openTest(t, Options{Durability: tc.d})
			var sync int
			var mode string
			err := db.Tx(t.Context(), func(tx *Tx) error {
				if err := tx.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&sync); err != nil {
					return err
				}
				return tx.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode)
			})
			if err != nil {
				t.Fatal(err)
			}
			if sync != tc.want || mode != "wal" {
				t.Errorf("synchronous = %d, journal_mode = %q; want %d, wal", sync, mode, tc.want)
			}
		})
	}
}

func TestOpenBadPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("not a database, and long enough to be read as a header........................................................"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path string }{
		{"empty", ""},
		{"missing directory", filepath.Join(dir, "no", "such", "dir", "x.db")},
		{"parent is a file", filepath.Join(file, "x.db")},
		{"directory", dir},
		{"not a database", file},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, err := Open(tc.path, Options{})
			if err == nil {
				db.Close()
				t.Fatalf("Open(%q) succeeded, want an error", tc.path)
			}
			if tc.path != "" && !strings.Contains(err.Error(), tc.path) && !strings.Contains(err.Error(), filepath.Dir(tc.path)) {
				t.Errorf("Open(%q) error %q does not name the path", tc.path, err)
			}
		})
	}
}

func TestSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var v int
	err = db.Tx(t.Context(), func(tx *Tx) error {
		return tx.QueryRowContext(t.Context(), "SELECT version FROM recado_schema WHERE contract = 'events'").Scan(&v)
	})
	if err != nil || v != 2 {
		t.Fatalf("events schema version = %d, %v; want 2", v, err)
	}
	// Opening again migrates nothing and keeps the version.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	err = db.Tx(t.Context(), func(tx *Tx) error {
		_, err := tx.ExecContext(t.Context(), "UPDATE recado_schema SET version = 99 WHERE contract = 'events'")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, Options{})
	if err == nil {
		db.Close()
		t.Fatal("Open of a file with schema version 99 succeeded")
	}
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "99") {
		t.Errorf("Open error = %v, want ErrSchemaTooNew naming version 99", err)
	}
}

func TestOpenConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	dbs := make([]*DB, 4)
	for i := range dbs {
		wg.Go(func() { dbs[i], errs[i] = Open(path, Options{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		defer dbs[i].Close()
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	first, err := db.Events().Append(ctx, "order-1", events("placed", 3))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	got := readStream(t, db.Events(), "order-1")
	if len(got) != 3 || got[2].Version != 3 {
		t.Fatalf("after reopen read %d events, want 3", len(got))
	}
	res, err := db.Events().Append(ctx, "order-1", events("paid", 1), eventstore.ExpectVersion(3))
	if err != nil {
		t.Fatalf("append after reopen: %v", err)
	}
	if res.FirstVersion != 4 || !first.LastPosition.Before(res.FirstPosition) {
		t.Errorf("append after reopen = version %d at %s, want version 4 after %s", res.FirstVersion, res.FirstPosition, first.LastPosition)
	}
}

func TestCloseTwice(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = db.Events().Append(t.Context(), "s", events("e", 1))
	if !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	for _, err := range db.Events().ReadAll(t.Context(), recado.Position{}) {
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("ReadAll after Close = %v, want ErrClosed", err)
		}
	}
	if err := db.Tx(t.Context(), func(*Tx) error { return nil }); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Tx after Close = %v, want ErrClosed", err)
	}
}

// events returns n new events of type typ with small JSON data.
func events(typ string, n int) []recado.Event {
	es := make([]recado.Event, n)
	for i := range es {
		es[i] = recado.NewEvent(typ, fmt.Appendf(nil, `{"n":%d}`, i))
	}
	return es
}

func readStream(tb testing.TB, s *eventstore.Store, stream string) []recado.Event {
	tb.Helper()
	var out []recado.Event
	for e, err := range s.ReadStream(context.Background(), stream) {
		if err != nil {
			tb.Fatalf("ReadStream(%q): %v", stream, err)
		}
		out = append(out, e)
	}
	return out
}

func readAll(tb testing.TB, s *eventstore.Store) []recado.Event {
	tb.Helper()
	var out []recado.Event
	for e, err := range s.ReadAll(context.Background(), recado.Position{}) {
		if err != nil {
			tb.Fatalf("ReadAll: %v", err)
		}
		out = append(out, e)
	}
	return out
}

// TestCloseWakesSubscriptions: Close ends an idle subscription at once with
// ErrClosed, not at its next poll (an hour away here). The bound only keeps a
// broken test from hanging; nothing is timed.
func TestCloseWakesSubscriptions(t *testing.T) {
	db := openTest(t, Options{PollInterval: time.Hour})
	if _, err := db.Events().Append(t.Context(), "s", events("e", 1)); err != nil {
		t.Fatal(err)
	}
	caughtUp := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		var last error
		for m, err := range db.Events().Subscribe(t.Context(), recado.Position{}) {
			if err != nil {
				last = err
				continue
			}
			if m.Kind == eventstore.KindCaughtUp {
				close(caughtUp)
			}
		}
		ended <- last
	}()
	<-caughtUp
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("subscription ended with %v, want ErrClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("subscription still waiting for its next poll after Close")
	}
}

// TestOpenMemory: ":memory:" opens a private database that every connection of
// the DB sees (appends, reads, units of work), separate from any other DB's,
// and gone after Close. SQLite URIs are refused with a clear error.
func TestOpenMemory(t *testing.T) {
	ctx := t.Context()
	a, err := Open(":memory:", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(":memory:", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Path() != ":memory:" {
		t.Errorf("Path() = %q, want :memory:", a.Path())
	}
	createOrders(t, a)
	err = a.Tx(ctx, func(tx *Tx) error {
		if _, err := a.Events().Append(ctx, "order-1", events("placed", 2), eventstore.InTx(tx)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO orders VALUES ('order-1', 42)")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Events().Append(ctx, "order-2", events("placed", 1)); err != nil {
		t.Fatal(err)
	}
	if got := len(readAll(t, a.Events())); got != 3 {
		t.Errorf("ReadAll of the in-memory DB: %d events, want 3", got)
	}
	if got := len(readStream(t, a.Events(), "order-1")); got != 2 {
		t.Errorf("ReadStream of the in-memory DB: %d events, want 2", got)
	}
	if got := countOrders(t, a); got != 1 {
		t.Errorf("orders rows on a read connection = %d, want 1", got)
	}
	if got := len(readAll(t, b.Events())); got != 0 {
		t.Errorf("a second in-memory DB holds %d events, want 0 (its own database)", got)
	}
	file := a.file
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{file, file + "-wal", file + "-shm"} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after Close, %s: %v, want it removed", f, err)
		}
	}

	for _, uri := range []string{"file::memory:", "file:x.db?mode=memory&cache=shared"} {
		db, err := Open(uri, Options{})
		if err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded, want an error", uri)
		} else if !strings.Contains(err.Error(), "URI") {
			t.Errorf("Open(%q) = %v, want an error that says URIs are not taken", uri, err)
		}
	}
}
