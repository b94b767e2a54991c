package postgres

import (
	"errors"
	"testing"

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
