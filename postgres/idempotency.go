package postgres

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/idempotency/driver"
)

// idempotencyV1 creates the idempotency key store: a row per scope and key,
// locked by every change of it, and the creation times' index that cleanup
// deletes the oldest rows by.
const idempotencyV1 = `
CREATE TABLE %[1]s.idempotency_keys (
	scope       text COLLATE "C" NOT NULL,
	key         text COLLATE "C" NOT NULL,
	fingerprint bytea       NOT NULL,
	state       smallint    NOT NULL,
	token       bigint      NOT NULL,
	response    bytea,
	created     timestamptz NOT NULL,
	locked      timestamptz NOT NULL,
	PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON %[1]s.idempotency_keys (created);
`

// idempotencyKeys is the idempotency key store's driver.
type idempotencyKeys struct {
	db                                    *DB
	lock, insert, update, delete, cleanup string
	// The group commit's statements.
	groupSettings, lockMany, insertMany, updateMany, deleteMany string

	groups  keyGroups
	noGroup bool // every call in a transaction of its own (tests, benchmarks)
	// beforeWrite, set by tests, runs between a group's two round trips.
	beforeWrite func()
}

var _ driver.Driver = (*idempotencyKeys)(nil)

// IdempotencyKeys returns an idempotency key store of the DB, with cfg's
// clock, limits and retention. Its calls join a unit of work given a [*Tx]
// of this DB: the key's row stays locked until the unit ends, so concurrent
// claims of the key wait for its outcome.
func (db *DB) IdempotencyKeys(cfg idempotency.Config) *idempotency.Store {
	return idempotency.New(newIdempotencyKeys(db), cfg)
}

func newIdempotencyKeys(db *DB) *idempotencyKeys {
	r := strings.NewReplacer("$S", db.schema)
	const cols = "scope, key, fingerprint, state, token, response, created, locked"
	const arrays = "unnest($1::text[], $2::text[], $3::bytea[], $4::smallint[], $5::bigint[], $6::bytea[], $7::timestamptz[], $8::timestamptz[])"
	k := &idempotencyKeys{db: db,
		// Plans for the arguments: a generic plan made while the table was
		// small would scan it for the joins with the arrays.
		groupSettings: `SELECT set_config('plan_cache_mode', 'force_custom_plan', true), ` + ownTimeouts(keyGroupLockWait),
		// Locks the rows in key order, as every group does.
		lockMany: r.Replace(`SELECT ` + cols + ` FROM $S.idempotency_keys
WHERE (scope, key) IN (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY scope, key FOR UPDATE`),
		insertMany: r.Replace(`INSERT INTO $S.idempotency_keys (` + cols + `) SELECT * FROM ` + arrays),
		updateMany: r.Replace(`UPDATE $S.idempotency_keys AS t SET fingerprint = u.fingerprint, state = u.state, token = u.token,
response = u.response, created = u.created, locked = u.locked
FROM ` + arrays + ` AS u(` + cols + `) WHERE t.scope = u.scope AND t.key = u.key`),
		deleteMany: r.Replace(`DELETE FROM $S.idempotency_keys AS t USING unnest($1::text[], $2::text[]) AS d(scope, key)
WHERE t.scope = d.scope AND t.key = d.key`),
		lock: r.Replace(`SELECT fingerprint, state, token, response, created, locked FROM $S.idempotency_keys
WHERE scope = $1 AND key = $2 FOR UPDATE`),
		insert: r.Replace(`INSERT INTO $S.idempotency_keys (scope, key, fingerprint, state, token, response, created, locked)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (scope, key) DO NOTHING`),
		update: r.Replace(`UPDATE $S.idempotency_keys SET fingerprint = $3, state = $4, token = $5, response = $6, created = $7, locked = $8
WHERE scope = $1 AND key = $2`),
		delete: r.Replace(`DELETE FROM $S.idempotency_keys WHERE scope = $1 AND key = $2`),
		cleanup: r.Replace(`DELETE FROM $S.idempotency_keys WHERE (scope, key) IN (
	SELECT scope, key FROM $S.idempotency_keys WHERE created < $1 ORDER BY created LIMIT $2 FOR UPDATE SKIP LOCKED)`),
	}
	k.groups.k = k
	return k
}

// Apply implements [driver.Driver.Apply]. In a unit of work it locks the
// key's row and decides on it there; otherwise it joins a group commit
// (idemgroup.go).
func (k *idempotencyKeys) Apply(ctx context.Context, r *driver.Request) error {
	if r.Tx != nil || k.noGroup {
		return k.applyOwn(ctx, r)
	}
	if k.db.closed.Load() {
		return closedError(driver.ErrClosed)
	}
	return k.groups.apply(ctx, r)
}

// applyOwn runs r in its unit of work, or alone in a transaction of its
// own. A claim tries the insert of a new key first (most keys are new):
// alone that is one round trip; if the row exists (or another transaction
// inserts it meanwhile), it locks the row and decides on what is stored.
func (k *idempotencyKeys) applyOwn(ctx context.Context, r *driver.Request) error {
	s, err := k.db.session(r.Tx, driver.ErrClosed, driver.ErrForeignTx)
	if err != nil {
		return err
	}
	defer s.close()
	return s.fail(k.apply(ctx, s, r), driver.ErrClosed)
}

func (k *idempotencyKeys) apply(ctx context.Context, s *session, r *driver.Request) error {
	if r.Op == driver.Claim {
		r.Decide(driver.Record{}, false) // what a claim of an absent key stores
		if inserted, err := k.insertNext(ctx, s, s.batch(), r); err != nil || inserted {
			return err
		}
	}
	for {
		var rec driver.Record
		var found bool
		b := s.batch()
		b.Queue(k.lock, r.Scope, r.Key).QueryRow(func(row pgx.Row) error {
			var err error
			found, err = scanKey(row, r.Scope, r.Key, &rec)
			return err
		})
		if err := s.send(ctx, b); err != nil {
			return err
		}
		if !r.Decide(rec, found) {
			return s.commit(ctx, nil)
		}
		b = &pgx.Batch{}
		switch {
		case r.Delete:
			b.Queue(k.delete, r.Scope, r.Key)
		case found:
			b.Queue(k.update, recordArgs(&r.Next)...)
		default:
			if inserted, err := k.insertNext(ctx, s, b, r); err != nil || inserted {
				return err
			}
			continue // inserted by another transaction since: decide again
		}
		return s.commit(ctx, b)
	}
}

// insertNext inserts r.Next unless the key has a row, committing an own
// transaction, and reports whether it did.
func (k *idempotencyKeys) insertNext(ctx context.Context, s *session, b *pgx.Batch, r *driver.Request) (inserted bool, err error) {
	b.Queue(k.insert, recordArgs(&r.Next)...).Exec(func(tag pgconn.CommandTag) error {
		inserted = tag.RowsAffected() == 1
		return nil
	})
	err = s.commit(ctx, b)
	return inserted && err == nil, err
}

func recordArgs(n *driver.Record) []any {
	return []any{n.Scope, n.Key, n.Fingerprint, int16(n.State), int64(n.Token), n.Response, n.Created, n.Locked}
}

// scanKey scans a key's row into rec, and reports whether there was one.
func scanKey(row pgx.Row, scope, key string, rec *driver.Record) (bool, error) {
	var state int16
	var token int64
	err := row.Scan(&rec.Fingerprint, &state, &token, &rec.Response, &rec.Created, &rec.Locked)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rec.Scope, rec.Key, rec.State, rec.Token = scope, key, driver.State(state), uint64(token)
	rec.Created, rec.Locked = utc(rec.Created), utc(rec.Locked)
	return true, nil
}

// Cleanup implements [driver.Driver.Cleanup]: one DELETE of at most limit
// rows, the oldest first, in a transaction of its own. Rows another
// transaction holds (a claim taking an expired key over) are left alone.
func (k *idempotencyKeys) Cleanup(ctx context.Context, before time.Time, limit int) (int, error) {
	return k.db.deleteBatch(ctx, driver.ErrClosed, k.cleanup, before, limit)
}
