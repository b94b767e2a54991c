package postgres

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// openTxs counts the sessions named app that are inside a transaction.
func openTxs(t *testing.T, db *DB, app string) int {
	t.Helper()
	var n int
	err := db.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
WHERE application_name = $1 AND xact_start IS NOT NULL AND pid <> pg_backend_pid()`, app).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFailedCommitKeepsConnection: a group commit whose transaction fails
// (here: an append whose second event reuses a stored ID, which the first
// attempt learns from the unique index) rolls the transaction back and hands
// the connection back to the pool healthy, so the pool opens no new
// connection per failure and no transaction stays open holding the horizon.
func TestFailedCommitKeepsConnection(t *testing.T) {
	app := appName()
	pool := newPool(t, app)
	db := openOn(t, pool, Options{Schema: newSchema(t), Writers: 1})
	s := db.Events()
	ctx := t.Context()
	stored := testEvents("E", 1)
	if _, err := s.Append(ctx, "stored", stored); err != nil {
		t.Fatal(err)
	}
	before := pool.Stat().NewConnsCount()
	const failures = 20
	for i := range failures {
		evs := append(testEvents("E", 1), stored[0])
		if _, err := s.Append(ctx, "reuse", evs); !errors.Is(err, eventstore.ErrDuplicateID) {
			t.Fatalf("append %d reusing a stored ID later: %v, want ErrDuplicateID", i, err)
		}
	}
	if n := pool.Stat().NewConnsCount() - before; n > 0 {
		t.Errorf("the pool opened %d connections over %d failed commits, want none (failed commits must roll back, not lose their connection)", n, failures)
	}
	if n := openTxs(t, db, app); n != 0 {
		t.Errorf("%d sessions of the DB's pool are still in a transaction after the failed commits", n)
	}
	if _, err := collect(s.ReadAll(ctx, recado.Position{})); err != nil {
		t.Fatal(err)
	}
}

// TestRetryInLostGroupStaysDuplicate: a genuine retry (its events were stored
// by an earlier append) shares a group commit with a fresh append, and the
// group's commit reply is lost. On the group's retry both find their events
// stored: the fresh append's by its own lost commit (not a duplicate), the
// retry's by the earlier append (a duplicate, as it was before the loss).
func TestRetryInLostGroupStaysDuplicate(t *testing.T) {
	db := openTest(t, Options{Writers: 1})
	s := db.Events()
	ctx := t.Context()
	earlier := testEvents("E", 1)
	first, err := s.Append(ctx, "earlier", earlier)
	if err != nil {
		t.Fatal(err)
	}
	errLost := errors.New("reply lost (test)")
	for round := range 50 {
		var blocked, lost atomic.Bool
		release := make(chan struct{})
		s.hooks.beforeWrite = func(*pgx.Conn) {
			if blocked.CompareAndSwap(false, true) {
				<-release // hold the writer so that the next two appends queue up
			}
		}
		s.hooks.afterCommit = func(appends int) error {
			if appends == 2 && lost.CompareAndSwap(false, true) {
				return errLost
			}
			return nil
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := s.Append(ctx, fmt.Sprintf("blocker-%d", round), testEvents("E", 1)); err != nil {
				t.Error(err)
			}
		})
		for !blocked.Load() {
			runtime.Gosched()
		}
		var retry, fresh eventstore.AppendResult
		var retryErr, freshErr error
		wg.Go(func() { retry, retryErr = s.Append(ctx, "earlier", earlier) })
		wg.Go(func() { fresh, freshErr = s.Append(ctx, fmt.Sprintf("fresh-%d", round), testEvents("E", 1)) })
		time.Sleep(time.Millisecond) // let both reach the queue (a round where they do not is run again)
		close(release)
		wg.Wait()
		s.hooks = testHooks{}
		if retryErr != nil || freshErr != nil {
			t.Fatalf("round %d: retry: %v; fresh append: %v", round, retryErr, freshErr)
		}
		if !lost.Load() {
			continue // the two were not in one group
		}
		if !retry.Duplicate || retry.FirstPosition != first.FirstPosition {
			t.Errorf("genuine retry in a group whose reply was lost = %+v, want the original %+v as a duplicate", retry, first)
		}
		if fresh.Duplicate {
			t.Errorf("fresh append stored by the lost commit = %+v, want it not reported as a duplicate", fresh)
		}
		return
	}
	t.Fatal("the retry and the fresh append never shared a group commit in 50 rounds")
}
