package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recado-dev/recado/resilience/idempotency/driver"
)

// Group commit of idempotency keys. A request with a key is two small
// durable writes (a claim, then its completion), so concurrent requests
// spend their time waiting for commits. Concurrent calls without a unit of
// work therefore share a transaction: one caller at a time (of at most
// keyGroupLeaders) takes every call waiting, locks their keys' rows in one
// statement, decides each call in turn on the rows as the calls before it
// leave them, and writes the outcome of all in a second round trip that
// commits. No goroutine runs between calls: the callers themselves lead.
//
// A group that cannot go ahead at once falls back to a transaction per call
// (each waiting as long as its caller's context allows): when a row it needs
// is held by another transaction for longer than keyGroupLockWait (a unit of
// work that claimed the key, say), or when PostgreSQL refuses one of its
// writes. When another process inserts one of its new keys between its two
// round trips, the group is decided again.
const (
	keyGroupLeaders  = 2        // groups in flight at once
	keyGroupMax      = 256      // calls per group
	keyGroupMaxBytes = 16 << 20 // their fingerprints' and responses' bytes
	keyGroupAttempts = 3        // decisions of one group, at most
	// keyGroupLockWait is how long a group waits for a row another
	// transaction holds before it goes call by call.
	keyGroupLockWait = 200 * time.Millisecond
)

// A keyCall is one call on its way through the group commit. The group
// decides its own copy of the caller's request, so that a caller that gives
// up leaves its request alone; the caller takes the copy back with the
// answer.
type keyCall struct {
	ctx   context.Context
	own   driver.Request
	state atomic.Int32 // keyQueued, then keyLeading, keyTaken or keyAbandoned
	done  chan error   // the answer, or errLead
}

const (
	keyQueued    int32 = iota
	keyLeading         // handed the lead: its caller leads the next group
	keyTaken           // in a group being committed
	keyAbandoned       // its caller gave up before a group took it
)

// errLead tells a waiting caller to lead the next group.
var errLead = errors.New("postgres: lead the next group")

// keyGroups is the group commit of one idempotency key store.
type keyGroups struct {
	k       *idempotencyKeys
	mu      sync.Mutex
	queue   []*keyCall
	leaders int
}

// apply runs r in a group, and returns when r is decided and committed.
func (g *keyGroups) apply(ctx context.Context, r *driver.Request) error {
	c := &keyCall{ctx: ctx, own: *r, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	lead := g.leaders < keyGroupLeaders
	if lead {
		g.leaders++
	}
	g.mu.Unlock()
	for {
		if lead {
			g.mu.Lock()
			batch := g.take(c)
			g.mu.Unlock()
			g.commit(batch)
			g.handOff()
		}
		err := c.wait()
		if err != errLead {
			if err == nil {
				*r = c.own
			}
			return err
		}
		lead = true
	}
}

// wait returns c's answer, or errLead. A caller that gives up before a group
// takes its call returns its context's error; one that gives up while its
// group commits returns an error saying the outcome is unknown. A caller
// handed the lead leads, whatever its context.
func (c *keyCall) wait() error {
	select {
	case err := <-c.done:
		return err
	case <-c.ctx.Done():
	}
	if c.state.CompareAndSwap(keyQueued, keyAbandoned) {
		return c.ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	default:
	}
	if c.state.Load() == keyLeading {
		return <-c.done // errLead, sent as the state was set
	}
	return fmt.Errorf("postgres: idempotency key: gave up while its group commit ran, which may commit it: %w", c.ctx.Err())
}

// take takes the calls waiting, self's among them, up to a group's bounds.
// A call handed the lead stays for its own caller to take; abandoned ones
// go. g.mu is held.
func (g *keyGroups) take(self *keyCall) []*keyCall {
	var batch []*keyCall
	size := 0
	rest := g.queue[:0]
	for i, c := range g.queue {
		if len(batch) == keyGroupMax || size > keyGroupMaxBytes {
			rest = append(rest, g.queue[i:]...)
			break
		}
		switch {
		case c.state.CompareAndSwap(keyQueued, keyTaken), c == self && c.state.CompareAndSwap(keyLeading, keyTaken):
			batch = append(batch, c)
			size += len(c.own.Fingerprint) + len(c.own.Response)
		case c.state.Load() == keyLeading:
			rest = append(rest, c)
		}
	}
	clear(g.queue[len(rest):])
	g.queue = rest
	return batch
}

// handOff gives the lead to the first call still waiting, or gives it up.
// g.mu is not held.
func (g *keyGroups) handOff() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.queue {
		if c.state.CompareAndSwap(keyQueued, keyLeading) {
			c.done <- errLead
			return
		}
	}
	g.leaders--
}

// commit commits batch and answers each call, or hands each call to a
// transaction of its own.
func (g *keyGroups) commit(batch []*keyCall) {
	if len(batch) == 0 {
		return
	}
	db := g.k.db
	var err error
	for attempt := 1; ; attempt++ {
		var sent bool
		sent, err = g.k.writeGroup(db.ctx, batch)
		switch {
		case err == nil:
			for _, c := range batch {
				c.done <- nil
			}
			return
		case db.closed.Load():
			for _, c := range batch {
				c.done <- fmt.Errorf("%w (%w)", closedError(driver.ErrClosed), err)
			}
			return
		case sent:
			for _, c := range batch {
				c.done <- fmt.Errorf("postgres: idempotency key: the group commit's outcome is unknown: %w", err)
			}
			return
		}
		if !keyInsertedMeanwhile(err) || attempt == keyGroupAttempts {
			break
		}
	}
	db.log.Debug("postgres: idempotency keys: a group goes call by call", "schema", db.opts.Schema, "calls", len(batch), "err", err)
	for _, c := range batch {
		go func() { c.done <- g.k.applyOwn(c.ctx, &c.own) }()
	}
}

// keyInsertedMeanwhile reports whether err is the unique index refusing a
// new key that another transaction inserted since the group read it.
func keyInsertedMeanwhile(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// keyRow is a key's row as a group's calls leave it.
type keyRow struct {
	rec        driver.Record
	found      bool // the row exists, as the calls before leave it
	stored     bool // the row existed when the group locked it
	dirty      bool
	scope, key string
}

// writeGroup decides and writes batch in one transaction of two round trips
// and commits it. sent reports that the commit was sent and its outcome is
// unknown.
func (k *idempotencyKeys) writeGroup(ctx context.Context, batch []*keyCall) (sent bool, err error) {
	conn, err := k.db.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	healthy := false
	defer func() { release(conn, healthy) }()

	rows := make(map[[2]string]*keyRow, len(batch))
	var scopes, keys []string
	for _, c := range batch {
		id := [2]string{c.own.Scope, c.own.Key}
		if rows[id] == nil {
			rows[id] = &keyRow{scope: c.own.Scope, key: c.own.Key}
			scopes, keys = append(scopes, c.own.Scope), append(keys, c.own.Key)
		}
	}
	b := &pgx.Batch{}
	b.Queue(beginOwn)
	b.Queue(k.groupSettings)
	b.Queue(k.lockMany, scopes, keys).Query(func(rs pgx.Rows) error {
		for rs.Next() {
			var scope, key string
			var rec driver.Record
			var state int16
			var token int64
			if err := rs.Scan(&scope, &key, &rec.Fingerprint, &state, &token, &rec.Response, &rec.Created, &rec.Locked); err != nil {
				return err
			}
			rec.Scope, rec.Key, rec.State, rec.Token = scope, key, driver.State(state), uint64(token)
			rec.Created, rec.Locked = utc(rec.Created), utc(rec.Locked)
			row := rows[[2]string{scope, key}]
			row.rec, row.found, row.stored = rec, true, true
		}
		return rs.Err()
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	if h := k.beforeWrite; h != nil {
		h()
	}
	for _, c := range batch {
		row := rows[[2]string{c.own.Scope, c.own.Key}]
		cur := row.rec
		// The caller takes the record's bytes out: give each its own.
		cur.Fingerprint, cur.Response = bytes.Clone(cur.Fingerprint), bytes.Clone(cur.Response)
		if !c.own.Decide(cur, row.found) {
			continue
		}
		row.dirty = true
		if c.own.Delete {
			row.rec, row.found = driver.Record{}, false
		} else {
			row.rec, row.found = c.own.Next, true
		}
	}

	var ins, upd keyColumns
	var delScopes, delKeys []string
	ids := make([][2]string, 0, len(rows))
	for id, row := range rows {
		if row.dirty {
			ids = append(ids, id)
		}
	}
	// In key order, as other groups lock and insert them.
	slices.SortFunc(ids, cmpPair)
	for _, id := range ids {
		row := rows[id]
		switch {
		case row.found && row.stored:
			upd.add(&row.rec)
		case row.found:
			ins.add(&row.rec)
		case row.stored:
			delScopes, delKeys = append(delScopes, row.scope), append(delKeys, row.key)
		}
	}
	b = &pgx.Batch{}
	if len(ins.scopes) > 0 {
		b.Queue(k.insertMany, ins.args()...)
	}
	if len(upd.scopes) > 0 {
		b.Queue(k.updateMany, upd.args()...)
	}
	if len(delScopes) > 0 {
		b.Queue(k.deleteMany, delScopes, delKeys)
	}
	committed := false
	b.Queue("commit").Exec(func(pgconn.CommandTag) error { committed = true; return nil })
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		if committed {
			healthy = true
			return false, nil
		}
		return commitMayHaveHappened(err), err
	}
	healthy = true
	return false, nil
}

// commitMayHaveHappened reports whether a batch ending in a commit whose
// reply never came may have committed: not if nothing was sent, not if the
// server answered an ERROR (which ends the transaction, commit included);
// otherwise (the connection failed) it may have.
func commitMayHaveHappened(err error) bool {
	if pgconn.SafeToRetry(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		severity := pgErr.SeverityUnlocalized
		if severity == "" {
			severity = pgErr.Severity
		}
		return severity != "ERROR"
	}
	return true
}

func cmpPair(a, b [2]string) int {
	if c := strings.Compare(a[0], b[0]); c != 0 {
		return c
	}
	return strings.Compare(a[1], b[1])
}

// keyColumns are rows of keys as column arrays.
type keyColumns struct {
	scopes, keys           []string
	fingerprints, response [][]byte
	states                 []int16
	tokens                 []int64
	created, locked        []time.Time
}

func (k *keyColumns) add(rec *driver.Record) {
	k.scopes, k.keys = append(k.scopes, rec.Scope), append(k.keys, rec.Key)
	k.fingerprints, k.response = append(k.fingerprints, rec.Fingerprint), append(k.response, rec.Response)
	k.states, k.tokens = append(k.states, int16(rec.State)), append(k.tokens, int64(rec.Token))
	k.created, k.locked = append(k.created, rec.Created), append(k.locked, rec.Locked)
}

func (k *keyColumns) args() []any {
	return []any{k.scopes, k.keys, k.fingerprints, k.states, k.tokens, k.response, k.created, k.locked}
}
