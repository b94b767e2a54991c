package postgres

import (
	"context"
	"errors"
	"testing"

	"github.com/recado-dev/recado/eventstore"
)

// TestReadStreamChangedBetweenPages: a stream deleted (soft, tombstoned, or
// deleted and written again) while a ReadStream is between pages ends the
// read with an error, never with part of the stream as if it were all of it.
func TestReadStreamChangedBetweenPages(t *testing.T) {
	tests := []struct {
		name   string
		change func(ctx context.Context, s *EventStore) error
		want   error
	}{
		{"Deleted", func(ctx context.Context, s *EventStore) error { return s.Delete(ctx, "s") }, eventstore.ErrStreamNotFound},
		{"Tombstoned", func(ctx context.Context, s *EventStore) error { return s.Tombstone(ctx, "s") }, eventstore.ErrStreamDeleted},
		{"DeletedAndWrittenAgain", func(ctx context.Context, s *EventStore) error {
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
	h, err := s.Horizon(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Age <= 0 || h.PID == 0 || h.HeldBack != 0 {
		t.Errorf("Horizon with a session idle in a transaction and nothing committed since = %+v, want an Age and a PID with HeldBack 0", h)
	}
	if _, err := s.Append(ctx, "s", testEvents("E", 1)); err != nil {
		t.Fatal(err)
	}
	if h, err = s.Horizon(ctx); err != nil || h.Age <= 0 || h.HeldBack != 1 {
		t.Errorf("Horizon after an event committed behind the idle transaction = %+v, %v; want an Age and HeldBack 1", h, err)
	}
}
