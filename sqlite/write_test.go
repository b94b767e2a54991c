package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// whileWriterHeld runs during while a Tx holds the writer, so that appends sent
// meanwhile queue up and the writer takes them as one batch once it returns.
func whileWriterHeld(t *testing.T, db *DB, during func()) {
	t.Helper()
	if err := db.Tx(t.Context(), func(*Tx) error { during(); return nil }); err != nil {
		t.Fatalf("Tx: %v", err)
	}
}

// waitQueued waits until n appends wait in the writer's queue. The bound only
// keeps a broken test from hanging; nothing is timed.
func waitQueued(t *testing.T, db *DB, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for db.waiting.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%d appends queued, want %d", db.waiting.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGroupCommitConflictsFailAlone(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	// One existing event whose ID a later append reuses in second place.
	taken := events("taken", 1)
	if _, err := s.Append(ctx, "other", taken); err != nil {
		t.Fatal(err)
	}
	before := db.Stats()

	const own, racing = 20, 10
	type outcome struct {
		stream string
		res    eventstore.AppendResult
		err    error
	}
	results := make(chan outcome, own+racing+1)
	var wg sync.WaitGroup
	whileWriterHeld(t, db, func() {
		for i := range own {
			wg.Go(func() {
				stream := fmt.Sprintf("own-%d", i)
				res, err := s.Append(ctx, stream, events("e", 2), eventstore.Expect(eventstore.NoStream))
				results <- outcome{stream, res, err}
			})
		}
		for range racing {
			wg.Go(func() {
				res, err := s.Append(ctx, "shared", events("e", 1), eventstore.Expect(eventstore.NoStream))
				results <- outcome{"shared", res, err}
			})
		}
		wg.Go(func() {
			// A fresh first event, then an ID stored elsewhere: written in part
			// before the clash, so the batch must roll it back alone.
			bad := append(events("e", 1), recado.Event{ID: taken[0].ID, Type: "x", Data: []byte("{}")})
			res, err := s.Append(ctx, "partial", bad)
			results <- outcome{"partial", res, err}
		})
		waitQueued(t, db, own+racing+1)
	})
	wg.Wait()
	close(results)

	won, conflicts := 0, 0
	for o := range results {
		switch o.stream {
		case "shared":
			var ce *eventstore.ConflictError
			switch {
			case o.err == nil:
				won++
			case errors.As(o.err, &ce) && errors.Is(o.err, eventstore.ErrConflict) && ce.Actual == 1:
				conflicts++
			default:
				t.Errorf("racing append: %v, want success or a conflict at version 1", o.err)
			}
		case "partial":
			if !errors.Is(o.err, eventstore.ErrDuplicateID) {
				t.Errorf("append reusing a stored ID in second place: %v, want ErrDuplicateID", o.err)
			}
		default:
			if o.err != nil || o.res.FirstVersion != 1 || o.res.LastVersion != 2 {
				t.Errorf("append to %s = %+v, %v; want versions 1..2", o.stream, o.res, o.err)
			}
		}
	}
	if won != 1 || conflicts != racing-1 {
		t.Errorf("racing appends: %d won, %d conflicts; want 1 and %d", won, conflicts, racing-1)
	}
	for e, err := range s.ReadStream(ctx, "partial") {
		if !errors.Is(err, eventstore.ErrStreamNotFound) {
			t.Errorf("stream of the failed append: %v %v, want not found", e.ID, err)
		}
	}
	after := db.Stats()
	if got, want := after.Appends-before.Appends, uint64(own+1); got != want {
		t.Errorf("Stats().Appends grew by %d, want %d", got, want)
	}
	if got := after.Commits - before.Commits; got != 1 {
		t.Errorf("the %d queued appends took %d commits, want 1 (one group commit)", own+racing+1, got)
	}
	// The log has no gap: positions 1..n.
	all := readAll(t, s)
	for i, e := range all {
		if p, _ := e.Position.Parts(); p != uint64(i+1) {
			t.Fatalf("event %d at position %d, want %d (gap-free log)", i, p, i+1)
		}
	}
	if want := 1 + own*2 + 1; len(all) != want {
		t.Errorf("log holds %d events, want %d", len(all), want)
	}
}

func TestGroupCommitSameStreamInOrder(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	const n = 30
	var wg sync.WaitGroup
	errs := make(chan error, n)
	whileWriterHeld(t, db, func() {
		for i := range n {
			wg.Go(func() {
				_, err := s.Append(ctx, "seq", []recado.Event{recado.NewEvent("e", fmt.Appendf(nil, "%d", i))})
				errs <- err
			})
		}
		waitQueued(t, db, n)
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := readStream(t, s, "seq")
	for i, e := range got {
		if e.Version != uint64(i+1) {
			t.Fatalf("event %d has version %d", i, e.Version)
		}
	}
	if len(got) != n {
		t.Fatalf("stream holds %d events, want %d", len(got), n)
	}
}

func TestGroupCommitMaxBatch(t *testing.T) {
	db := openTest(t, Options{MaxBatch: 4})
	s := db.Events()
	var wg sync.WaitGroup
	whileWriterHeld(t, db, func() {
		for i := range 4 {
			wg.Go(func() {
				if _, err := s.Append(t.Context(), fmt.Sprintf("s-%d", i), events("e", 1)); err != nil {
					t.Error(err)
				}
			})
		}
		waitQueued(t, db, 4)
		for i := range 8 {
			wg.Go(func() {
				if _, err := s.Append(t.Context(), fmt.Sprintf("t-%d", i), events("e", 1)); err != nil {
					t.Error(err)
				}
			})
		}
	})
	wg.Wait()
	st := db.Stats()
	if st.Appends != 12 || st.Commits < 3 {
		t.Errorf("Stats = %+v, want 12 appends in at least 3 commits of at most 4", st)
	}
}

func TestIdempotentRetry(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	evs := events("e", 3)
	first, err := s.Append(ctx, "st", evs, eventstore.Expect(eventstore.NoStream))
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Append(ctx, "st", evs, eventstore.Expect(eventstore.NoStream))
	if err != nil || !again.Duplicate {
		t.Fatalf("retry = %+v, %v; want Duplicate", again, err)
	}
	again.Duplicate = false
	if again != first {
		t.Errorf("retry result = %+v, want the original %+v", again, first)
	}
	changed := append([]recado.Event(nil), evs...)
	changed[1].Data = []byte(`{"other":1}`)
	_, err = s.Append(ctx, "st", changed)
	var de *eventstore.DuplicateIDError
	if !errors.As(err, &de) || de.Stream != "st" {
		t.Errorf("retry with changed data: %v, want a DuplicateIDError naming st", err)
	}
	if _, err := s.Append(ctx, "elsewhere", evs[:1]); !errors.Is(err, eventstore.ErrDuplicateID) {
		t.Errorf("same ID in another stream: %v, want ErrDuplicateID", err)
	}
	if got := len(readAll(t, s)); got != 3 {
		t.Errorf("log holds %d events, want 3", got)
	}
}

func TestCancelWhileQueued(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	whileWriterHeld(t, db, func() {
		go func() {
			_, err := s.Append(ctx, "gave-up", events("e", 1))
			done <- err
		}()
		waitQueued(t, db, 1)
		cancel()
		// Not yet taken by the writer: a plain context error, nothing sent.
		if err := <-done; !errors.Is(err, context.Canceled) || errors.Is(err, eventstore.ErrUnknownOutcome) {
			t.Errorf("Append cancelled while queued = %v, want context.Canceled alone", err)
		}
	})
	if _, err := s.Append(t.Context(), "after", events("e", 1)); err != nil {
		t.Fatal(err)
	}
	for _, e := range readAll(t, s) {
		if e.Stream == "gave-up" {
			t.Errorf("the cancelled append was stored")
		}
	}
	if _, err := s.Append(ctx, "s", events("e", 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a done context = %v, want context.Canceled", err)
	}
}

func TestCloseWhileAppendsWait(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "c.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := db.Events()
	const n = 8
	errs := make(chan error, n)
	closed := make(chan error, 1)
	whileWriterHeld(t, db, func() {
		for i := range n {
			go func() {
				_, err := s.Append(context.Background(), fmt.Sprintf("s-%d", i), events("e", 1))
				errs <- err
			}()
		}
		waitQueued(t, db, n)
		go func() { closed <- db.Close() }()
		// Close fails the queued appends at once, then waits for this Tx.
		for range n {
			if err := <-errs; !errors.Is(err, eventstore.ErrClosed) {
				t.Errorf("append waiting at Close = %v, want ErrClosed", err)
			}
		}
	})
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}
