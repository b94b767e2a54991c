package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado/eventstore"
)

// waitingForLock reports whether a session named app waits for a lock.
func waitingForLock(t *testing.T, app string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// lockRow holds stream's row locked in a transaction of another connection
// until the returned function is called (or t ends).
func lockRow(t *testing.T, db *DB, stream string) (unlock func()) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(t.Context(), "SELECT count(*) FROM (SELECT FROM "+db.schema+".streams WHERE stream = $1 FOR UPDATE) x", stream).Scan(&n); err != nil || n != 1 {
		t.Fatalf("lock the row of %s: %d, %v", stream, n, err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			_ = tx.Rollback(context.Background())
			_ = conn.Close(context.Background())
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// TestCloseWhileRowLocked: Close returns while another connection holds the
// row of a stream an append waits for, and the append gets ErrClosed (its
// commit did not happen) or ErrUnknownOutcome, never success.
func TestCloseWhileRowLocked(t *testing.T) {
	app := appName()
	db := openOn(t, newPool(t, app), Options{Schema: newSchema(t), Writers: 1})
	s := db.Events()
	ctx := t.Context()
	if _, err := s.Append(ctx, "locked", testEvents("E", 1)); err != nil {
		t.Fatal(err)
	}
	unlock := lockRow(t, db, "locked")
	appended := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, "locked", testEvents("E", 1))
		appended <- err
	}()
	waitUntil(t, "the append waits for the row", func() bool { return waitingForLock(t, app) })
	closed := make(chan struct{})
	go func() { db.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(guard):
		unlock()
		<-closed
		t.Fatalf("Close did not return in %s while another connection held a stream row", guard)
	}
	err := <-appended
	if !errors.Is(err, eventstore.ErrClosed) && !errors.Is(err, eventstore.ErrUnknownOutcome) {
		t.Errorf("append waiting at Close: %v, want ErrClosed or ErrUnknownOutcome", err)
	}
	unlock()
	var n int
	if err := newPool(t, "").QueryRow(ctx, "SELECT count(*) FROM "+db.schema+".events").Scan(&n); err != nil || n != 1 && !errors.Is(err, eventstore.ErrUnknownOutcome) {
		t.Errorf("the log holds %d events, %v; want only the first (the append at Close failed)", n, err)
	}
}

// holdInTx runs a unit of work on db that appends to stream (locking its row)
// and then waits for release; it reports when it holds the row.
func holdInTx(t *testing.T, db *DB, stream string, release <-chan struct{}, inside func(tx *Tx) error) (holding <-chan struct{}, done <-chan error) {
	h, d := make(chan struct{}), make(chan error, 1)
	go func() {
		d <- db.Tx(t.Context(), func(tx *Tx) error {
			if _, err := db.Events().Append(t.Context(), stream, testEvents("InTx", 1), eventstore.InTx(tx)); err != nil {
				return err
			}
			close(h)
			if inside != nil {
				if err := inside(tx); err != nil {
					return err
				}
			}
			select {
			case <-release:
				return nil
			case <-time.After(guard):
				return fmt.Errorf("unit of work on %s not released in %s", stream, guard)
			}
		})
	}()
	return h, d
}

// TestBusyStreamDoesNotStallOthers: a unit of work (of this DB, or of another
// process) holds a stream's row while appends to it and to other streams
// arrive together: the appends to other streams all commit while the unit of
// work is still open, and the appends to the busy stream commit after it.
func TestBusyStreamDoesNotStallOthers(t *testing.T) {
	for _, remote := range []bool{false, true} {
		name := "SameDB"
		if remote {
			name = "OtherProcess"
		}
		t.Run(name, func(t *testing.T) {
			schema := newSchema(t)
			db := openOn(t, newPool(t, ""), Options{Schema: schema})
			holder := db
			if remote {
				holder = openOn(t, newPool(t, ""), Options{Schema: schema})
			}
			s := db.Events()
			ctx := t.Context()
			if _, err := s.Append(ctx, "busy", testEvents("E", 1)); err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			holding, held := holdInTx(t, holder, "busy", release, nil)
			<-holding
			var others, busy sync.WaitGroup
			for g := range 32 {
				wg := &others
				stream := fmt.Sprintf("other-%d", g)
				if g%2 == 0 {
					wg, stream = &busy, "busy"
				}
				wg.Go(func() {
					for range 3 {
						if _, err := s.Append(ctx, stream, testEvents("E", 1)); err != nil {
							t.Errorf("append to %s: %v", stream, err)
						}
					}
				})
			}
			othersDone := make(chan struct{})
			go func() { others.Wait(); close(othersDone) }()
			select {
			case <-othersDone:
			case err := <-held:
				t.Fatalf("the unit of work ended before the other appends did: %v", err)
			}
			close(release)
			if err := <-held; err != nil {
				t.Fatalf("unit of work: %v", err)
			}
			busy.Wait()
			got, err := collect(s.ReadStream(ctx, "busy"))
			if err != nil || len(got) != 1+1+16*3 {
				t.Errorf("busy stream: %d events, %v; want %d", len(got), err, 1+1+16*3)
			}
		})
	}
}

// TestUnitsOfWorkWithDefaultPool: with the pool's default size, two units of
// work each hold a stream's row while many appends to those streams queue up;
// each unit of work can still read through the pool (the writers do not sit
// on connections waiting for the rows), and every append commits after.
func TestUnitsOfWorkWithDefaultPool(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	release := make(chan struct{})
	var appends sync.WaitGroup
	var units []<-chan error
	started := make(chan struct{})
	for _, stream := range []string{"a", "b"} {
		if _, err := s.Append(ctx, stream, testEvents("E", 1)); err != nil {
			t.Fatal(err)
		}
		holding, done := holdInTx(t, db, stream, release, func(tx *Tx) error {
			<-started
			ctx, cancel := context.WithTimeout(ctx, guard)
			defer cancel()
			got, err := collect(s.ReadStream(ctx, stream))
			if err != nil || len(got) != 1 {
				return fmt.Errorf("ReadStream(%s) inside the unit of work: %d events, %v; want the 1 committed", stream, len(got), err)
			}
			return nil
		})
		<-holding
		units = append(units, done)
		for range 8 {
			appends.Go(func() {
				if _, err := s.Append(ctx, stream, testEvents("E", 1)); err != nil {
					t.Errorf("append to %s: %v", stream, err)
				}
			})
		}
	}
	time.Sleep(10 * time.Millisecond) // let the appends reach the writers
	close(started)
	close(release)
	for _, done := range units {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	appends.Wait()
	for _, stream := range []string{"a", "b"} {
		if got, err := collect(s.ReadStream(ctx, stream)); err != nil || len(got) != 1+1+8 {
			t.Errorf("%s: %d events, %v; want 10", stream, len(got), err)
		}
	}
}

// TestParkedAppendAbandoned: an append parked behind a unit of work whose
// caller gives up returns its context's error (nothing was written) and is
// not written after the unit of work ends.
func TestParkedAppendAbandoned(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	release := make(chan struct{})
	holding, held := holdInTx(t, db, "busy", release, nil)
	<-holding
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := s.Append(short, "busy", testEvents("Abandoned", 1)); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, eventstore.ErrUnknownOutcome) {
		t.Errorf("append given up while parked: %v, want the context's error alone", err)
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "busy", testEvents("After", 1)); err != nil {
		t.Fatal(err)
	}
	got, err := collect(s.ReadStream(ctx, "busy"))
	if err != nil || len(got) != 2 || got[0].Type != "InTx" || got[1].Type != "After" {
		t.Errorf("busy = %v, %v; want the unit of work's event and the one after", got, err)
	}
}
