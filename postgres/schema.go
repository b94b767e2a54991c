package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrSchemaTooNew is returned by [Open] for a schema migrated by a newer
// version of recado: this code could misread or damage what it does not know,
// so it writes nothing.
var ErrSchemaTooNew = errors.New("postgres: schema is newer than this version of recado knows")

// A contract's schema evolves through its own numbered migrations, recorded in
// schema_versions, so two contracts can change in parallel without colliding.
// Migrations never change once released: a change is a new migration.
type contract struct {
	name       string
	migrations []string // migrations[i] takes the contract to version i+1; "%[1]s" is the schema
}

var contracts = [...]contract{
	{name: "eventstore", migrations: []string{eventstoreV1, eventstoreV2}},
}

// eventstoreV1 creates the event store.
//
// streams holds one row per stream written, locked by every append to it:
// version is the last version, deleted_version the version at the last soft
// delete (events up to it are hidden), major the position major of the
// stream's last event. events.(major, seq) is the global position, its primary
// key the index readers scan.
const eventstoreV1 = `
CREATE TABLE %[1]s.streams (
	stream          text    PRIMARY KEY,
	version         bigint  NOT NULL DEFAULT 0,
	deleted_version bigint  NOT NULL DEFAULT 0,
	tombstoned      boolean NOT NULL DEFAULT false,
	major           bigint  NOT NULL DEFAULT 0
);
CREATE SEQUENCE %[1]s.events_seq AS bigint INCREMENT BY 1024; -- one value is a block of seqBlock numbers
CREATE TABLE %[1]s.events (
	major    bigint      NOT NULL,
	seq      bigint      NOT NULL,
	id       text        NOT NULL,
	stream   text        NOT NULL,
	version  bigint      NOT NULL,
	type     text        NOT NULL,
	data     bytea       NOT NULL,
	metadata bytea       NOT NULL,
	time     timestamptz NOT NULL,
	PRIMARY KEY (major, seq),
	CONSTRAINT events_id_key UNIQUE (id),
	CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);
`

// eventstoreV2 compares stream names and event IDs bytewise (collation "C")
// instead of by the database's collation: the indexes every append writes
// (on IDs, on stream and version, on stream rows) compare with memcmp, and
// stream rows sort in the order the writer sorts them in Go. Only the indexes
// on those columns are rebuilt; the rows are not rewritten.
const eventstoreV2 = `
ALTER TABLE %[1]s.events ALTER COLUMN id TYPE text COLLATE "C", ALTER COLUMN stream TYPE text COLLATE "C";
ALTER TABLE %[1]s.streams ALTER COLUMN stream TYPE text COLLATE "C";
`

// migrateLockKey is the first key of the transaction-scoped advisory lock that
// serializes migrations of one schema across processes; the second is the
// schema name's hash.
const migrateLockKey = 0x7265_6361 // "reca"

func (db *DB) migrate(ctx context.Context) error {
	tx, err := db.pool.BeginTx(ctx, ownTxOptions)
	if err != nil {
		return fmt.Errorf("postgres: migrate schema %s: %w", db.schema, err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", migrateLockKey, db.opts.Schema); err != nil {
		return fmt.Errorf("postgres: migrate schema %s: lock: %w", db.schema, err)
	}
	setup := fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE IF NOT EXISTS %[1]s.schema_versions (
	contract   text        NOT NULL,
	version    integer     NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (contract, version)
)`, db.schema)
	if _, err := tx.Exec(ctx, setup); err != nil {
		return fmt.Errorf("postgres: migrate schema %s: %w", db.schema, err)
	}
	for _, c := range allContracts() {
		if err := db.migrateContract(ctx, tx, c); err != nil {
			return err
		}
	}
	if err := db.checkCounter(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: migrate schema %s: commit: %w", db.schema, err)
	}
	return nil
}

// checkCounter refuses a log whose positions run ahead of the cluster's
// transaction counter, as after a logical dump restored into a new cluster:
// readers would not see those events until the counter caught up, and new
// streams would sort before them. pg_upgrade and physical backups keep the
// counter; pg_resetwal -x can advance it.
func (db *DB) checkCounter(ctx context.Context, tx pgx.Tx) error {
	var newest, next int64
	err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce((SELECT major FROM %s.events ORDER BY major DESC, seq DESC LIMIT 1), 0),
pg_snapshot_xmax(pg_current_snapshot())::text::bigint`, db.schema)).Scan(&newest, &next)
	if err != nil {
		return fmt.Errorf("postgres: open schema %s: %w", db.schema, err)
	}
	if newest >= next {
		return fmt.Errorf("postgres: open schema %s: the log's newest position major %d is ahead of the cluster's next transaction id %d "+
			"(restored from a logical dump into another cluster?): advance the counter past it (pg_resetwal -x) before use",
			db.schema, newest, next)
	}
	return nil
}

func (db *DB) migrateContract(ctx context.Context, tx pgx.Tx, c contract) error {
	var current int
	err := tx.QueryRow(ctx, fmt.Sprintf("SELECT coalesce(max(version), 0) FROM %s.schema_versions WHERE contract = $1", db.schema),
		c.name).Scan(&current)
	if err != nil {
		return fmt.Errorf("postgres: migrate %s in schema %s: %w", c.name, db.schema, err)
	}
	if current > len(c.migrations) {
		return fmt.Errorf("%w: schema %s, contract %s is at version %d, this code knows up to %d",
			ErrSchemaTooNew, db.schema, c.name, current, len(c.migrations))
	}
	for v := current + 1; v <= len(c.migrations); v++ {
		sql := fmt.Sprintf(c.migrations[v-1], db.schema)
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("postgres: migrate %s in schema %s to version %d: %w", c.name, db.schema, v, err)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s.schema_versions (contract, version) VALUES ($1, $2)", db.schema),
			c.name, v); err != nil {
			return fmt.Errorf("postgres: migrate %s in schema %s to version %d: %w", c.name, db.schema, v, err)
		}
		db.log.Info("postgres: migrated", "schema", db.opts.Schema, "contract", c.name, "version", v)
	}
	return nil
}

// streamChanged starts the error of a compare-and-set of stream rows that
// found one changed by another writer.
const streamChanged = "recado: stream changed by another writer"

// seqBlock is how many sequence numbers one nextval of events_seq stands for
// (the sequence's increment).
const seqBlock = 1024

// seqBlockSQL is seqBlock in SQL text.
const seqBlockSQL = "1024"

// quoteLiteral quotes s as a PostgreSQL string literal, whatever the
// server's standard_conforming_strings (as libpq's PQescapeLiteral does).
func quoteLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

// queries are the SQL statements of one schema, built once.
type queries struct {
	channel string

	lockStreams  string
	heldStreams  string
	readStreams  string
	casStreams   string
	newStreams   string
	storedIDs    string
	xidAndSeqs   string
	insertEvents string
	insertInTx   string
	deleteEvents string
	updateStream string
	notify       string
	ownSettings  string

	fast         fastStmts // the one-round-trip group commit's
	customPlans  string
	restorePlans string

	horizon     string
	readAll     string
	readAllBack string
	readStream  string
	readBack    string
	lockStream  string
	streamState string
	setDeleted  string
	setTomb     string
	horizonInfo string
	// The horizon and the session of the transaction holding it (0 if none
	// or a prepared one).
	horizonHolder string
}

func newQueries(schema, channel string) queries {
	// $S is the quoted schema, an identifier; $Q is the events sequence's
	// name as a string literal, for nextval's regclass argument.
	r := strings.NewReplacer("$S", schema, "$Q", quoteLiteral(schema+".events_seq"))
	const cols = "major, seq, id, stream, version, type, data, metadata, time"
	return queries{
		channel: channel,
		fast:    newFastStmts(r, cols),
		// Upserting in stream order locks every stream row of a batch in one
		// order, so two batches never deadlock.
		lockStreams: r.Replace(`INSERT INTO $S.streams AS s (stream) SELECT unnest($1::text[]) ORDER BY 1
ON CONFLICT (stream) DO UPDATE SET stream = EXCLUDED.stream
RETURNING stream, version, deleted_version, tombstoned, major`),
		// The streams whose rows another transaction holds: those that
		// exist and cannot be locked without waiting.
		heldStreams: r.Replace(`WITH free AS (SELECT stream FROM $S.streams WHERE stream = ANY($1::text[]) FOR UPDATE SKIP LOCKED)
SELECT stream FROM $S.streams WHERE stream = ANY($1::text[]) EXCEPT SELECT stream FROM free`),
		storedIDs:    r.Replace(`SELECT id, stream, version, type, data, major, seq FROM $S.events WHERE id = ANY($1::text[])`),
		readStreams:  r.Replace(`SELECT stream, version, deleted_version, tombstoned, major FROM $S.streams WHERE stream = ANY($1::text[])`),
		xidAndSeqs:   r.Replace(`SELECT pg_current_xact_id()::text::bigint, nextval($Q) FROM generate_series(1, $1::int)`),
		insertEvents: r.Replace(`INSERT INTO $S.events (` + cols + `) ` + unnestEvents),
		// In a unit of work: insert the events but those whose ID is stored
		// meanwhile, update the stream rows only if none was, and return the
		// IDs inserted.
		insertInTx: r.Replace(`WITH ins AS (INSERT INTO $S.events (` + cols + `) ` + unnestEvents + `
	ON CONFLICT (id) DO NOTHING RETURNING id),
upd AS (UPDATE $S.streams AS s SET version = u.version, major = u.major
	FROM unnest($10::text[], $11::bigint[], $12::bigint[]) AS u(stream, version, major)
	WHERE s.stream = u.stream AND (SELECT count(*) FROM ins) = cardinality($3::text[]))
SELECT coalesce(array_agg(id), '{}') FROM ins`),
		deleteEvents: r.Replace(`DELETE FROM $S.events WHERE id = ANY($1::text[])`),
		updateStream: r.Replace(`UPDATE $S.streams AS s SET version = u.version, major = u.major
FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(stream, version, major) WHERE s.stream = u.stream`),
		// The optimistic group commit read the stream rows without locking them:
		// the update goes ahead only if none changed meanwhile, and otherwise
		// fails the transaction (with an error naming the cause) to be retried
		// with locks.
		casStreams: r.Replace(`WITH c AS (
	UPDATE $S.streams AS s SET version = u.version, major = u.major
	FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) AS u(stream, version, major, old_version, old_deleted)
	WHERE s.stream = u.stream AND s.version = u.old_version AND s.deleted_version = u.old_deleted AND NOT s.tombstoned
	RETURNING 1)
SELECT CASE WHEN count(*) = $6 THEN 0 ELSE ('` + streamChanged + ` ' || count(*))::int END FROM c`),
		newStreams: r.Replace(`INSERT INTO $S.streams (stream, version, major) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])`),
		notify:     `SELECT pg_notify($1, '')`,
		// Transaction-local: returns the setting it replaces.
		customPlans: `SELECT current_setting('plan_cache_mode'), set_config('plan_cache_mode', 'force_custom_plan', true)`,
		// A group commit's settings: customPlans and its timeouts.
		ownSettings: `SELECT current_setting('plan_cache_mode'), set_config('plan_cache_mode', 'force_custom_plan', true), ` +
			ownTimeouts(groupLockWait),
		restorePlans: `SELECT set_config('plan_cache_mode', $1, true)`,

		// The horizon: the oldest transaction still running, and the newest event
		// committed. Events with major below xmin are final.
		horizon: r.Replace(`SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,
coalesce((SELECT major FROM $S.events ORDER BY major DESC, seq DESC LIMIT 1), 0)`),
		readAll: r.Replace(`SELECT ` + cols + ` FROM $S.events
WHERE (major, seq) > ($1, $2) AND major < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY major, seq LIMIT $3`),
		readAllBack: r.Replace(`SELECT ` + cols + ` FROM $S.events
WHERE (major, seq) < ($1, $2) AND major < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY major DESC, seq DESC LIMIT $3`),
		// The first page of a stream read comes with the stream's state, in one
		// statement so both are of one snapshot; $2 is the exclusive bound.
		readStream: r.Replace(`SELECT s.version, s.deleted_version, s.tombstoned, e.* FROM $S.streams s
LEFT JOIN LATERAL (SELECT ` + cols + ` FROM $S.events e WHERE e.stream = s.stream
AND e.version > greatest(s.deleted_version, $2) ORDER BY e.version LIMIT $3) e ON true
WHERE s.stream = $1`),
		readBack: r.Replace(`SELECT s.version, s.deleted_version, s.tombstoned, e.* FROM $S.streams s
LEFT JOIN LATERAL (SELECT ` + cols + ` FROM $S.events e WHERE e.stream = s.stream
AND e.version > s.deleted_version AND e.version < $2 ORDER BY e.version DESC LIMIT $3) e ON true
WHERE s.stream = $1`),
		lockStream: r.Replace(`INSERT INTO $S.streams AS s (stream) VALUES ($1)
ON CONFLICT (stream) DO UPDATE SET stream = EXCLUDED.stream
RETURNING version, deleted_version, tombstoned`),
		streamState: r.Replace(`SELECT version, deleted_version, tombstoned FROM $S.streams WHERE stream = $1`),
		setDeleted:  r.Replace(`UPDATE $S.streams SET deleted_version = version WHERE stream = $1`),
		setTomb:     r.Replace(`UPDATE $S.streams SET tombstoned = true WHERE stream = $1`),
		horizonHolder: `SELECT x, coalesce((SELECT pid FROM pg_stat_activity WHERE backend_xid::text::bigint = x % 4294967296 LIMIT 1), 0)
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x) h`,
		// The oldest transaction with an id (the one the horizon is), by the age
		// of its id, with how many committed events it holds back.
		horizonInfo: r.Replace(`SELECT coalesce(extract(epoch FROM now() - o.since), 0)::float8, coalesce(o.pid, 0),
	(SELECT count(*) FROM $S.events WHERE major >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint)
FROM (SELECT 1) one LEFT JOIN (
	SELECT since, pid FROM (
		SELECT xact_start AS since, pid, age(backend_xid) AS age FROM pg_stat_activity WHERE backend_xid IS NOT NULL
		UNION ALL
		SELECT prepared, NULL, age(transaction) FROM pg_prepared_xacts
	) x ORDER BY age DESC LIMIT 1
) o ON true`),
	}
}

// unnestEvents selects the rows of an insert from nine arrays, one per
// column: the parameters $1 to $9. The arrays are unnested in the select list
// (a ProjectSet), not in FROM, where a function scan would first copy every
// row into a tuplestore.
const unnestEvents = `SELECT unnest($1::bigint[]) AS major, unnest($2::bigint[]) AS seq, unnest($3::text[]) AS id,
	unnest($4::text[]) AS stream, unnest($5::bigint[]) AS version, unnest($6::text[]) AS type,
	unnest($7::bytea[]) AS data, unnest($8::bytea[]) AS metadata, unnest($9::timestamptz[]) AS time`

// newFastStmts returns the statements of the one-round-trip group commit
// (see fastCommit); r puts the schema in.
func newFastStmts(r *strings.Replacer, cols string) fastStmts {
	const (
		text, int8, int4 = oidText, oidInt8, oidInt4
		texts, int8s     = 1009, 1016 // text[], int8[]
		byteas, times    = 1001, 1185 // bytea[], timestamptz[]
	)
	return fastStmts{
		begin:  newFastStmt(beginOwn),
		commit: newFastStmt("commit"),
		notify: newFastStmt(`SELECT pg_notify($1, '')`, text),
		// Its timeouts, and generic plans (or custom ones, for a group that
		// updates rows).
		settings:     newFastStmt(`SELECT set_config('plan_cache_mode', 'force_generic_plan', true), ` + ownTimeouts(groupLockWait)),
		settingsCAS:  newFastStmt(`SELECT set_config('plan_cache_mode', 'force_custom_plan', true), ` + ownTimeouts(groupLockWait)),
		genericPlans: newFastStmt(`SELECT set_config('plan_cache_mode', 'force_generic_plan', true)`),
		// New stream rows, at the transaction's id: a unique violation if
		// one exists.
		newStreams: newFastStmt(r.Replace(`INSERT INTO $S.streams (stream, version, major)
SELECT u.stream, u.version, pg_current_xact_id()::text::bigint FROM unnest($1::text[], $2::bigint[]) AS u(stream, version)`),
			texts, int8s),
		// Existing stream rows, only if each is still as predicted (its
		// major too); otherwise the transaction fails, naming the cause. The
		// new major is the transaction's id, or the row's major if that is
		// larger.
		cas: newFastStmt(r.Replace(`WITH c AS (
	UPDATE $S.streams AS s SET version = u.version, major = greatest(pg_current_xact_id()::text::bigint, s.major)
	FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) AS u(stream, version, old_version, old_deleted, old_major)
	WHERE s.stream = u.stream AND s.version = u.old_version AND s.deleted_version = u.old_deleted AND NOT s.tombstoned AND s.major = u.old_major
	RETURNING 1)
SELECT CASE WHEN count(*) = $6 THEN 0 ELSE ('`+streamChanged+` ' || count(*))::int END FROM c`),
			texts, int8s, int8s, int8s, int8s, int8),
		// The events, each at major greatest(transaction id, its stream's
		// major before) and at the sequence number its ordinal ($2) picks
		// from blocks taken now (after the stream rows were written: see
		// fastCommit); returns the transaction id and the blocks.
		insert: newFastStmt(r.Replace(`WITH k AS MATERIALIZED (SELECT pg_current_xact_id()::text::bigint AS xid,
	ARRAY(SELECT nextval($Q) FROM generate_series(1, $10::int) ORDER BY 1) AS blocks),
ins AS (INSERT INTO $S.events (`+cols+`)
	SELECT greatest(k.xid, u.major), k.blocks[u.seq / `+seqBlockSQL+` + 1] + u.seq % `+seqBlockSQL+`, u.id, u.stream, u.version, u.type, u.data, u.metadata, u.time
	FROM k, (`+unnestEvents+` OFFSET 0) u)
SELECT xid, blocks FROM k`),
			int8s, int8s, texts, texts, int8s, texts, byteas, byteas, times, int4),
	}
}
