package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrSchemaTooNew is returned by Open for a file whose schema was written by a
// newer version of recado than this one: opening it could misread or damage it.
var ErrSchemaTooNew = errors.New("sqlite: schema is newer than this version of recado knows")

// contract is one store's tables and its own sequence of migrations. Step i
// brings the contract to version i+1; steps are only ever appended.
type contract struct {
	name  string
	steps []string
}

// contracts returns the contracts to migrate, in order, each on its own
// version, so stores added later (checkpoints, dead letters, ...) evolve without
// touching the others.
func contracts() []contract {
	return []contract{{name: "events", steps: []string{eventsV1, eventsV2}}}
}

// eventsV1 is version 1 of the "events" contract.
const eventsV1 = `
CREATE TABLE recado_events (
	pos      INTEGER PRIMARY KEY, -- the global position: one writer assigns it in commit order
	id       TEXT    NOT NULL UNIQUE,
	stream   TEXT    NOT NULL,
	version  INTEGER NOT NULL,
	type     TEXT    NOT NULL,
	data     BLOB,
	metadata BLOB,
	time     INTEGER NOT NULL, -- Unix nanoseconds; microseconds from version 2
	UNIQUE (stream, version)
);
CREATE TABLE recado_streams (
	name            TEXT    PRIMARY KEY,
	version         INTEGER NOT NULL,           -- version of the last event
	deleted_through INTEGER NOT NULL DEFAULT 0, -- soft delete: versions up to here are hidden
	tombstoned      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
`

// eventsV2 stores event times in Unix microseconds rather than nanoseconds,
// which held only the years 1678 to 2261; microseconds hold years 1 to 9999.
// Existing times are rounded down (toward the past, as time.Truncate does;
// SQLite's / rounds toward zero).
const eventsV2 = `
UPDATE recado_events SET time = time / 1000 - (time < 0 AND time % 1000 != 0);
`

// migrate creates and upgrades the schema in one write transaction. Two
// processes opening a new file at once are serialised by BEGIN IMMEDIATE (and
// the busy timeout): the second sees the first's work and does nothing.
func migrate(ctx context.Context, conn *sql.Conn, path string) (err error) {
	fail := func(err error) error { return fmt.Errorf("sqlite: migrate schema of %s: %w", path, err) }
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fail(err)
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS recado_schema (
	contract TEXT PRIMARY KEY,
	version  INTEGER NOT NULL
)`); err != nil {
		return fail(err)
	}
	for _, c := range contracts() {
		var have int
		err := conn.QueryRowContext(ctx, "SELECT version FROM recado_schema WHERE contract = ?", c.name).Scan(&have)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fail(err)
		}
		if have > len(c.steps) {
			return fmt.Errorf("%w: %s: contract %q is at version %d, this code knows up to %d",
				ErrSchemaTooNew, path, c.name, have, len(c.steps))
		}
		for v := have; v < len(c.steps); v++ {
			if _, err := conn.ExecContext(ctx, c.steps[v]); err != nil {
				return fail(fmt.Errorf("contract %q step %d: %w", c.name, v+1, err))
			}
		}
		if have < len(c.steps) {
			if _, err := conn.ExecContext(ctx, `INSERT INTO recado_schema (contract, version) VALUES (?, ?)
ON CONFLICT (contract) DO UPDATE SET version = excluded.version`, c.name, len(c.steps)); err != nil {
				return fail(err)
			}
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fail(err)
	}
	return nil
}
