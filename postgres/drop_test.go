package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// terminate ends server sessions with pg_terminate_backend, waiting until they
// are gone: the one with pid, or every one named appName. It may run on
// another goroutine than the test's, so it reports failures with Error.
func terminate(t *testing.T, pid uint32, appName string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testURL(t))
	if err != nil {
		t.Errorf("admin connection: %v", err)
		return 0
	}
	defer conn.Close(ctx)
	var n int
	if appName != "" {
		err = conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
WHERE application_name = $1 AND pid <> pg_backend_pid()) x`, appName).Scan(&n)
	} else {
		err = conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend($1::int, 5000)) x`, int32(pid)).Scan(&n)
	}
	if err != nil {
		t.Errorf("pg_terminate_backend: %v", err)
	}
	return n
}

func appName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "recado-test-" + hex.EncodeToString(b[:])
}

// TestSubscriptionSurvivesDroppedConnections: every connection of the
// subscriber's DB (its listener and its pooled read connections) is
// terminated, several times, while events are appended; the subscriber
// resumes from its checkpoint and delivers every event exactly once, and the
// listener comes back (deliveries after the drop are woken by NOTIFY: the
// poll interval is a minute).
func TestSubscriptionSurvivesDroppedConnections(t *testing.T) {
	schema := newSchema(t)
	writer := openOn(t, newPool(t, ""), Options{Schema: schema})
	app := appName()
	reader := openOn(t, newPool(t, app), Options{Schema: schema})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	live := newDelivery()
	wg.Go(func() {
		follow(ctx, reader.Events(), recado.Position{}, live, eventstore.WithPollInterval(time.Minute))
	})

	want := map[string]bool{}
	appendSome := func(n int) {
		for range n {
			events := testEvents("E", 3)
			if _, err := writer.Events().Append(ctx, "s", events); err != nil {
				t.Error(err) // may run on another goroutine: no Fatal
				return
			}
			for _, e := range events {
				want[e.ID] = true
			}
		}
	}
	appendSome(10)
	live.waitFor(t, want)

	for round := range 3 {
		old := reader.listenPID.Load()
		appending := make(chan struct{})
		go func() { defer close(appending); appendSome(10) }()
		if n := terminate(t, 0, app); n == 0 {
			t.Errorf("round %d: no session of the subscriber's DB to terminate", round)
		}
		<-appending
		if t.Failed() {
			return
		}
		waitUntil(t, "the listener reconnects", func() bool {
			pid := reader.listenPID.Load()
			return pid != 0 && pid != old
		})
		appendSome(5) // woken by the new listener's NOTIFY
		live.waitFor(t, want)
	}
	events, _ := live.snapshot()
	checkLog(t, "subscriber", events, want)
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", guard, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAppendSurvivesDroppedConnection: the group commit's connection dies (or
// its commit's reply is lost) in the middle of an append. The append happens
// exactly once or reports an error; retrying it with the same events is safe.
func TestAppendSurvivesDroppedConnection(t *testing.T) {
	errLost := errors.New("reply lost (test)")
	tests := []struct {
		name string
		// kills and loses say on which attempts to terminate the connection
		// before the write, and to lose the commit's reply.
		kills, loses []bool
		wantErr      error // nil: the append succeeds; errFails: it fails
	}{
		{name: "KilledBeforeWrite", kills: []bool{true}},
		{name: "ReplyLost", loses: []bool{true}},
		{name: "KilledThenReplyLost", kills: []bool{true}, loses: []bool{false, true}},
		// Killed before the write was sent: the outcome is known (nothing
		// stored) unless the connection's end hid the server's last words.
		{name: "KilledEveryAttempt", kills: []bool{true, true, true}, wantErr: errFails},
		{name: "ReplyLostEveryAttempt", loses: []bool{true, true, true}, wantErr: eventstore.ErrUnknownOutcome},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t, Options{Writers: 1})
			s := db.Events()
			var mu sync.Mutex
			attempt := 0
			db.events.hooks.beforeWrite = func(conn *pgx.Conn) {
				mu.Lock()
				defer mu.Unlock()
				attempt++
				if attempt <= len(tc.kills) && tc.kills[attempt-1] {
					terminate(t, conn.PgConn().PID(), "")
				}
			}
			db.events.hooks.afterCommit = func(int) error {
				mu.Lock()
				defer mu.Unlock()
				if attempt <= len(tc.loses) && tc.loses[attempt-1] {
					return errLost
				}
				return nil
			}
			ctx := t.Context()
			events := testEvents("E", 3)
			res, err := s.Append(ctx, "stream", events)
			firstErr := err
			switch {
			case tc.wantErr == errFails && err == nil:
				t.Fatalf("Append succeeded, want an error")
			case tc.wantErr != nil && tc.wantErr != errFails && !errors.Is(err, tc.wantErr):
				t.Fatalf("Append error = %v, want %v", err, tc.wantErr)
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Append: %v, want success after the retry", err)
			case tc.wantErr == nil && (res.Duplicate || res.FirstVersion != 1 || res.LastVersion != 3):
				t.Errorf("Append = %+v, want versions 1..3 stored by this append (not a duplicate)", res)
			}
			db.events.hooks = testHooks{}

			retry, err := s.Append(ctx, "stream", events)
			if err != nil {
				t.Fatalf("retry: %v", err)
			}
			if tc.wantErr == nil && (!retry.Duplicate || retry.FirstPosition != res.FirstPosition || retry.LastPosition != res.LastPosition) {
				t.Errorf("retry = %+v, want the original %+v as a duplicate", retry, res)
			}
			if known := tc.wantErr != nil && !errors.Is(firstErr, eventstore.ErrUnknownOutcome); known && retry.Duplicate {
				t.Errorf("the append failed with a known outcome (%v), but its retry found it stored", firstErr)
			}
			want := map[string]bool{}
			for _, e := range events {
				want[e.ID] = true
			}
			var got []recado.Event
			for e, err := range s.ReadAll(ctx, recado.Position{}) {
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, e)
			}
			checkLog(t, "the log", got, want)
		})
	}
}

// errFails in a test table wants an error, whichever.
var errFails = errors.New("any error")
