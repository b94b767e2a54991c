package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"github.com/recado-dev/recado/eventstore/driver"
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
		db.events.hooks.beforeWrite = func(*pgx.Conn) {
			if blocked.CompareAndSwap(false, true) {
				<-release // hold the writer so that the next two appends queue up
			}
		}
		db.events.hooks.afterCommit = func(appends int) error {
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
		db.events.hooks = testHooks{}
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

// appendRaw appends events to stream through the driver alone, as the front
// would (times set), but without its checks: what PostgreSQL itself refuses
// reaches the group commit.
func appendRaw(ctx context.Context, db *DB, stream string, events []recado.Event) (*driver.Request, error) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	for i := range events {
		if events[i].Time.IsZero() {
			events[i].Time = now
		}
	}
	r := &driver.Request{Stream: stream, Events: events}
	return r, db.events.Append(ctx, r)
}

// TestBadAppendFailsAlone: appends whose input PostgreSQL refuses (a NUL byte
// in an ID or a type, a time out of its range, an ID or a stream name too big
// for its index) share group commits with good appends: each fails on its
// own, with a known outcome, and every good append commits. The front refuses
// such input before the driver sees it; the driver does not count on it.
func TestBadAppendFailsAlone(t *testing.T) {
	big := make([]byte, 3000)
	_, _ = rand.Read(big) // incompressible: the index entry stays too big
	bigText := hex.EncodeToString(big)
	bad := []struct {
		name   string
		stream string
		event  func() recado.Event
	}{
		{"NULInID", "s", func() recado.Event { e := testEvents("E", 1)[0]; e.ID += "\x00"; return e }},
		{"NULInType", "s", func() recado.Event { e := testEvents("E", 1)[0]; e.Type = "T\x00"; return e }},
		{"TimeOutOfRange", "s", func() recado.Event {
			e := testEvents("E", 1)[0]
			e.Time = time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC)
			return e
		}},
		{"IDTooBigForIndex", "s", func() recado.Event { e := testEvents("E", 1)[0]; e.ID = bigText; return e }},
		{"StreamTooBigForIndex", bigText, func() recado.Event { return testEvents("E", 1)[0] }},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t, Options{})
			ctx := t.Context()
			var wg sync.WaitGroup
			var mu sync.Mutex
			want := map[string]bool{}
			for g := range 48 {
				wg.Go(func() {
					for i := range 5 {
						if g%12 == 0 && i == 2 {
							_, err := appendRaw(ctx, db, tc.stream, []recado.Event{tc.event()})
							if err == nil || errors.Is(err, eventstore.ErrUnknownOutcome) {
								t.Errorf("bad append: %v, want an error with a known outcome", err)
							}
							continue
						}
						events := testEvents("E", 2)
						r, err := appendRaw(ctx, db, fmt.Sprintf("good-%d", g%7), events)
						if err != nil || r.Outcome != driver.Written {
							t.Errorf("good append beside a bad one: outcome %d, %v", r.Outcome, err)
							continue
						}
						mu.Lock()
						want[events[0].ID], want[events[1].ID] = true, true
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			got, err := collect(db.Events().ReadAll(ctx, recado.Position{}))
			if err != nil {
				t.Fatal(err)
			}
			checkLog(t, "the log", got, want)
		})
	}
}

// TestLargeAppendsConcurrently: 72 appends of 16 MB each at once, more than
// one PostgreSQL message can carry (1 GiB) together: groups are bounded by
// bytes, so all commit. One append larger than a message is refused with
// ErrInvalid.
func TestLargeAppendsConcurrently(t *testing.T) {
	if testing.Short() {
		t.Skip("writes over 1 GB")
	}
	db := openTest(t, Options{})
	s := db.Events()
	ctx := t.Context()
	data := bytes.Repeat([]byte("recado 16 MB! "), 16<<20/14) // compressible: little disk
	var wg sync.WaitGroup
	var failed atomic.Int32
	for g := range 72 {
		wg.Go(func() {
			e := recado.NewEvent("Big", data)
			if _, err := s.Append(ctx, fmt.Sprintf("big-%d", g), []recado.Event{e}); err != nil {
				if failed.Add(1) <= 3 {
					t.Errorf("append %d of 16 MB: %v", g, err)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of 72 appends of 16 MB failed", n)
	}
	var n int
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM "+db.schema+".events WHERE length(data) = $1", len(data)).Scan(&n); err != nil || n != 72 {
		t.Errorf("%d events of 16 MB stored, %v; want 72", n, err)
	}

	e := recado.NewEvent("Huge", make([]byte, maxMessageBytes))
	if _, err := s.Append(ctx, "huge", []recado.Event{e}); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("append of 1 GiB: %v, want ErrInvalid", err)
	}
}

// TestMessageTooLargeIsKnown: the error pgx returns when it refuses to send a
// message larger than PostgreSQL accepts says that nothing was sent (the
// outcome is known) and that the group may be split, not retried whole.
func TestMessageTooLargeIsKnown(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds a 1 GiB message (run without -short and -race)")
	}
	db := openTest(t, Options{})
	_, err := db.pool.Exec(t.Context(), "SELECT length($1::bytea)", make([]byte, maxMessageBytes))
	if err == nil {
		t.Fatal("pgx sent a message of 1 GiB")
	}
	if mayHaveCommitted(err, true) || retryable(err) || !isolable(err) {
		t.Errorf("pgx's refusal %q: may have committed %v, retryable %v, isolable %v; want false, false, true",
			err, mayHaveCommitted(err, true), retryable(err), isolable(err))
	}
}
