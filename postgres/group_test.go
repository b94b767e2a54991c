package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// TestGroupCommitRetriesAmongNeighbours puts, in the same group commits as
// fresh appends, retries of earlier multi-event appends (their first ID is
// stored, so the first attempt looks up every ID) and appends whose later event
// has a stored ID (the insert meets the unique index). Each must get its own
// answer, and the fresh appends must all commit.
func TestGroupCommitRetriesAmongNeighbours(t *testing.T) {
	db := openTest(t, Options{})
	s := db.Events()
	ctx := context.Background()
	newEvents := func(prefix string, n int) []recado.Event {
		evs := make([]recado.Event, n)
		for i := range evs {
			evs[i] = recado.Event{ID: fmt.Sprintf("%s-%d-%s", prefix, i, recado.NewID()), Type: "T", Data: []byte(`{}`)}
		}
		return evs
	}
	for round := range 10 {
		earlier := newEvents("earlier", 3)
		first, err := s.Append(ctx, fmt.Sprintf("earlier-%d", round), earlier)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for g := range 24 {
			wg.Go(func() {
				switch g % 3 {
				case 0: // a retry of the earlier append
					res, err := s.Append(ctx, fmt.Sprintf("earlier-%d", round), earlier, eventstore.ExpectVersion(0))
					if err != nil || !res.Duplicate || res.FirstPosition != first.FirstPosition || res.LastPosition != first.LastPosition {
						errs <- fmt.Errorf("round %d: retry = %+v, %v; want the original %+v", round, res, err, first)
					}
				case 1: // a later event reuses a stored ID
					evs := append(newEvents("bad", 1), earlier[1])
					_, err := s.Append(ctx, fmt.Sprintf("bad-%d-%d", round, g), evs)
					if !errors.Is(err, eventstore.ErrDuplicateID) {
						errs <- fmt.Errorf("round %d: reused later ID: %v, want ErrDuplicateID", round, err)
					}
				default: // a fresh append
					stream := fmt.Sprintf("fresh-%d-%d", round, g)
					if _, err := s.Append(ctx, stream, newEvents("fresh", 2), eventstore.Expect(eventstore.NoStream)); err != nil {
						errs <- fmt.Errorf("round %d: fresh append to %s: %v", round, stream, err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	// Nothing of the refused appends was stored.
	n := 0
	for e, err := range s.ReadAll(ctx, recado.Position{}) {
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Stream) > 4 && e.Stream[:4] == "bad-" {
			t.Errorf("event %s of a refused append was stored", e.ID)
		}
		n++
	}
	if want := 10 * (3 + 8*2); n != want {
		t.Errorf("the log holds %d events, want %d", n, want)
	}
}
