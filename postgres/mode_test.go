package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

// TestExecModes runs the conformance suite on pools whose statements are not
// prepared, as a transaction pooler (PgBouncer in transaction mode) needs:
// the simple protocol, and the extended protocol without prepared statements
// (exec mode). Results come back in text, not binary (times in the session's
// zone, here one 5:45 ahead of UTC, 5:41:16 before 1920).
func TestExecModes(t *testing.T) {
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			testURL(t)
			eventstoretest.Run(t, func(tb testing.TB) eventstoretest.Backend {
				return newBackend(tb, func(cfg *pgxpool.Config) {
					cfg.ConnConfig.DefaultQueryExecMode = mode
					// Times come back as text in the session's zone.
					cfg.ConnConfig.RuntimeParams["timezone"] = "Asia/Kathmandu"
				})
			})
		})
	}
}
