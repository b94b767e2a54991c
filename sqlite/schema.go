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
	return []contract{
		{name: "events", steps: []string{eventsV1, eventsV2}},
		{name: "deadletters", steps: []string{deadLettersV1}},
		{name: "idempotency", steps: []string{idempotencyV1}},
		{name: "inbox", steps: []string{inboxV1}},
		{name: "leases", steps: []string{leasesV1}},
		{name: "commands", steps: []string{commandsV1}},
		{name: "snapshots", steps: []string{snapshotsV1}},
		{name: "checkpoints", steps: []string{checkpointsV1}},
	}
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

// Times in the recoverability stores' tables are Unix microseconds (UTC),
// NULL for none; unsigned 64-bit numbers (versions, positions, tokens) are
// kept as the signed integer of the same bits.

// deadLettersV1 is version 1 of the "deadletters" contract: a row per letter.
// state is the driver's State (1 failed, 2 parked, 3 requested: open; 4
// replayed, 5 discarded: final). AUTOINCREMENT keeps an ID from ever being
// given again, even once the highest letter is cleaned up.
const deadLettersV1 = `
CREATE TABLE recado_dead_letters (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	source        TEXT    NOT NULL,
	seq_key       TEXT    NOT NULL, -- the sequence key; '' for none
	state         INTEGER NOT NULL,
	msg_id        TEXT    NOT NULL,
	msg_stream    TEXT    NOT NULL,
	msg_version   INTEGER NOT NULL,
	msg_pos       INTEGER NOT NULL,
	msg_pos_minor INTEGER NOT NULL,
	msg_type      TEXT    NOT NULL,
	msg_data      BLOB,
	msg_metadata  BLOB,
	msg_time      INTEGER,
	error         TEXT    NOT NULL,
	class         INTEGER NOT NULL,
	attempts      INTEGER NOT NULL,
	added         INTEGER NOT NULL,
	first_failure INTEGER,
	last_failure  INTEGER,
	requested     INTEGER,
	handled       INTEGER,
	reason        TEXT    NOT NULL
);
-- The queues of the keys: their heads, and the blocked keys.
CREATE INDEX recado_dead_letters_queue ON recado_dead_letters (source, seq_key, id) WHERE state <= 3;
-- A source's letters in pages.
CREATE INDEX recado_dead_letters_source ON recado_dead_letters (source, id);
-- The audit records that cleanup deletes.
CREATE INDEX recado_dead_letters_handled ON recado_dead_letters (handled) WHERE state >= 4;
`

// idempotencyV1 is version 1 of the "idempotency" contract: a row per scope
// and key. A rowid table, not WITHOUT ROWID: responses may be large.
const idempotencyV1 = `
CREATE TABLE recado_idempotency_keys (
	scope       TEXT    NOT NULL,
	key         TEXT    NOT NULL,
	fingerprint BLOB    NOT NULL,
	state       INTEGER NOT NULL, -- 1 in progress, 2 completed
	token       INTEGER NOT NULL,
	response    BLOB,
	created     INTEGER NOT NULL,
	locked      INTEGER NOT NULL,
	UNIQUE (scope, key)
);
CREATE INDEX recado_idempotency_keys_created ON recado_idempotency_keys (created);
`

// inboxV1 is version 1 of the "inbox" contract: a row per consumer and
// message handled.
const inboxV1 = `
CREATE TABLE recado_inbox (
	consumer   TEXT    NOT NULL,
	message_id TEXT    NOT NULL,
	time       INTEGER NOT NULL,
	PRIMARY KEY (consumer, message_id)
) WITHOUT ROWID;
CREATE INDEX recado_inbox_time ON recado_inbox (time);
`

// leasesV1 is version 1 of the "leases" contract: a row per lease.
const leasesV1 = `
CREATE TABLE recado_leases (
	name     TEXT    PRIMARY KEY,
	holder   TEXT    NOT NULL, -- '' once released
	token    INTEGER NOT NULL,
	acquired INTEGER NOT NULL,
	expires  INTEGER NOT NULL
) WITHOUT ROWID;
`

// commandsV1 is version 1 of the "commands" contract: a row per command
// record. seq is the record's Seq: AUTOINCREMENT never gives a number again,
// even once the highest record is cleaned up. idem_key is NULL for a record
// without an idempotency key (NULLs are distinct in a UNIQUE constraint).
// status is the driver's Status (1 accepted, 2 running: pending; 3
// succeeded, 4 failed, 5 dead-lettered: final).
const commandsV1 = `
CREATE TABLE recado_commands (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT    NOT NULL UNIQUE,
	queue       TEXT    NOT NULL,
	scope       TEXT    NOT NULL,
	idem_key    TEXT,
	fingerprint BLOB,
	type        TEXT    NOT NULL,
	data        BLOB,
	metadata    BLOB,
	seq_key     TEXT    NOT NULL, -- the ordering key; '' for none
	key_hash    INTEGER NOT NULL,
	status      INTEGER NOT NULL,
	attempts    INTEGER NOT NULL,
	accepted    INTEGER NOT NULL,
	updated     INTEGER NOT NULL,
	not_before  INTEGER,
	stream      TEXT    NOT NULL,
	version     INTEGER NOT NULL,
	pos         INTEGER NOT NULL,
	pos_minor   INTEGER NOT NULL,
	location    TEXT    NOT NULL,
	problem     BLOB,
	letter      INTEGER NOT NULL,
	UNIQUE (queue, scope, idem_key)
);
-- The pending records of a queue, in the order the workers scan them.
CREATE INDEX recado_commands_pending ON recado_commands (queue, seq) WHERE status <= 2;
-- The final records that cleanup deletes.
CREATE INDEX recado_commands_final ON recado_commands (updated) WHERE status >= 3;
`

// snapshotsV1 is version 1 of the "snapshots" contract: a row per stream,
// its latest snapshot. A rowid table, not WITHOUT ROWID: states may be
// large.
const snapshotsV1 = `
CREATE TABLE recado_snapshots (
	stream   TEXT    NOT NULL UNIQUE,
	schema   TEXT    NOT NULL,
	version  INTEGER NOT NULL,
	event_id TEXT    NOT NULL,
	data     BLOB,
	time     INTEGER
);
`

// checkpointsV1 is version 1 of the "checkpoints" contract (projection
// checkpoints): a row per projection, with its active copy, the copy being
// rebuilt (0 and 0 for none) and the copy being retired (0 for none); a row
// per partition of each copy, with how far it has gone (a position's two
// parts) and whether it has caught up with the log once (0 or 1).
const checkpointsV1 = `
CREATE TABLE recado_projections (
	name                TEXT    PRIMARY KEY,
	active_copy         INTEGER NOT NULL,
	active_partitions   INTEGER NOT NULL,
	building_copy       INTEGER NOT NULL,
	building_partitions INTEGER NOT NULL,
	retiring            INTEGER NOT NULL,
	updated             INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE recado_checkpoints (
	name      TEXT    NOT NULL,
	copy      INTEGER NOT NULL,
	partition INTEGER NOT NULL,
	pos       INTEGER NOT NULL,
	pos_minor INTEGER NOT NULL,
	caught_up INTEGER NOT NULL,
	updated   INTEGER NOT NULL,
	PRIMARY KEY (name, copy, partition)
) WITHOUT ROWID;
`

// migrate creates and upgrades the schema of every contract in one write
// transaction. Two processes opening a new file at once are serialised by
// BEGIN IMMEDIATE (and the busy timeout): the second sees the first's work
// and does nothing.
func migrate(ctx context.Context, conn *sql.Conn, path string) error {
	return migrateContracts(ctx, conn, path, contracts())
}

// migrateContracts brings each of cs to its latest version.
func migrateContracts(ctx context.Context, conn *sql.Conn, path string, cs []contract) (err error) {
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
	for _, c := range cs {
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
