package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

// TestExecModes runs the conformance suite on pools whose statements are not
// prepared, as a transaction pooler (PgBouncer in transaction mode) needs:
// the simple protocol, and the extended protocol without prepared statements
// (exec mode). Results come back in text, not binary (times in the session's
// zone, here one 5:45 ahead of UTC).
func TestExecModes(t *testing.T) {
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			testURL(t)
			eventstoretest.Run(t, func(tb testing.TB) eventstore.Store {
				cfg, err := pgxpool.ParseConfig(testURL(tb))
				if err != nil {
					tb.Fatal(err)
				}
				cfg.ConnConfig.DefaultQueryExecMode = mode
				// Times come back as text in the session's zone.
				cfg.ConnConfig.RuntimeParams["timezone"] = "Asia/Kathmandu"
				pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
				if err != nil {
					tb.Fatal(err)
				}
				tb.Cleanup(pool.Close)
				db := openOn(tb, pool, Options{Schema: newSchema(tb)})
				return closingStore{db.Events(), db}
			})
		})
	}
}
