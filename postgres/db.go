package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
)

// Options configure a [DB]. The zero value is a sensible default.
type Options struct {
	// Schema is the PostgreSQL schema that holds recado's tables. Default "recado".
	Schema string
	// Logger receives the few things worth telling an operator (a lost listener
	// connection, a retried commit). Default: nothing is logged.
	Logger *slog.Logger
	// MaxBatch is the most events one group commit writes. Default 1024. An
	// append with more events than MaxBatch is committed on its own.
	MaxBatch int
	// MaxBatchBytes bounds the bytes one group commit sends (events' data,
	// IDs, types, streams and metadata). Default 64 MiB. An append larger
	// than MaxBatchBytes is committed on its own; one larger than a
	// PostgreSQL message (1 GiB) is refused with eventstore.ErrInvalid.
	MaxBatchBytes int
	// Writers is how many group commits may be in flight at once, each on a
	// connection of the pool: while one waits for its WAL flush, the next
	// writes. Default 2 (1 for a pool of fewer than 4 connections), leaving
	// the rest of the pool to reads and units of work. More writers make
	// smaller groups: raise it only when commits wait on a remote server or a
	// slow disk, and measure (BenchmarkDesign).
	Writers int
}

func (o *Options) setDefaults() {
	if o.Schema == "" {
		o.Schema = "recado"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 64 << 20
	}
}

// Validate reports whether o can be used. Its errors wrap
// [eventstore.ErrInvalid].
func (o Options) Validate() error {
	if err := validateSchema(o.Schema); err != nil {
		return err
	}
	switch {
	case o.MaxBatch < 0:
		return invalid("negative MaxBatch %d", o.MaxBatch)
	case o.MaxBatchBytes < 0:
		return invalid("negative MaxBatchBytes %d", o.MaxBatchBytes)
	case o.Writers < 0:
		return invalid("negative Writers %d", o.Writers)
	}
	return nil
}

// validateSchema refuses a schema name PostgreSQL cannot hold as given: one
// it would truncate (longer than NAMEDATALEN-1 bytes), one it cannot store
// (NUL, not UTF-8), or one it reserves. Any other name is safe: it is always
// quoted.
func validateSchema(name string) error {
	switch {
	case len(name) > maxIdentLen:
		return invalid("schema name %q is %d bytes, longer than PostgreSQL's %d", name, len(name), maxIdentLen)
	case !utf8.ValidString(name):
		return invalid("schema name %q is not valid UTF-8", name)
	case strings.IndexByte(name, 0) >= 0:
		return invalid("schema name %q contains a NUL byte", name)
	case strings.HasPrefix(name, "pg_"):
		return invalid("schema name %q: names beginning with pg_ are reserved by PostgreSQL", name)
	}
	return nil
}

// maxIdentLen is the longest identifier PostgreSQL keeps whole (NAMEDATALEN-1
// bytes in a default build); longer ones are silently truncated.
const maxIdentLen = 63

// invalid returns an error wrapping eventstore.ErrInvalid.
func invalid(format string, args ...any) error {
	return fmt.Errorf("postgres: %w: %s", eventstore.ErrInvalid, fmt.Sprintf(format, args...))
}

// DB is recado's storage in one PostgreSQL schema. It is safe for concurrent
// use. The pool stays the caller's: Close stops what the DB started and leaves
// the pool open.
type DB struct {
	pool   *pgxpool.Pool
	opts   Options
	log    *slog.Logger
	schema string // quoted identifier
	q      queries
	events *eventDriver      // the event store's driver
	store  *eventstore.Store // the front over it
	units  openUnits
	// checkpointsChanged wakes the checkpoint store's waiters.
	checkpointsChanged driver.Signal

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	// sending are the connections of commits sent and not yet answered:
	// Close gives up on them after closeGrace.
	sending sending
	closed  atomic.Bool
	once    sync.Once
	wg      sync.WaitGroup

	ownPool   bool          // made by Connect: Close closes it
	listening listening     // what the listener knows of subscriptions
	listenPID atomic.Uint32 // backend pid of the LISTEN connection, for tests
}

// Open migrates the schema named in opts (creating it if needed) and returns
// the DB on pool. The caller keeps ownership of pool and closes it after
// [DB.Close].
func Open(ctx context.Context, pool *pgxpool.Pool, opts Options) (*DB, error) {
	if pool == nil {
		return nil, errors.New("postgres: Open: nil pool")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	if opts.Writers == 0 {
		opts.Writers = min(2, max(1, int(pool.Config().MaxConns)/2))
	}
	db := &DB{pool: pool, opts: opts, log: opts.Logger, schema: pgx.Identifier{opts.Schema}.Sanitize()}
	db.listening.wanted = make(chan struct{}, 1)
	db.q = newQueries(db.schema, channelName(opts.Schema))
	if err := db.migrate(ctx); err != nil {
		return nil, err
	}
	db.ctx, db.cancel = context.WithCancel(context.Background())
	db.events = newEvents(db)
	db.store = eventstore.New(db.events)
	db.wg.Add(2 + opts.Writers)
	for range opts.Writers {
		go func() { defer db.wg.Done(); db.events.w.loop() }()
	}
	go func() { defer db.wg.Done(); db.events.w.runPark() }()
	go func() { defer db.wg.Done(); db.listen() }()
	return db, nil
}

// Connect is Open on a new pool made from connString; Close closes that pool
// too.
func Connect(ctx context.Context, connString string, opts Options) (*DB, error) {
	pool, err := pgxpool.New(ctx, connString)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	db, err := Open(ctx, pool, opts)
	if err != nil {
		pool.Close()
		return nil, err
	}
	db.ownPool = true
	return db, nil
}

// Events returns the event store. Subscribers are woken by LISTEN/NOTIFY when
// any process commits to the schema; a subscription polls too
// ([eventstore.WithPollInterval]) in case a notification is lost.
func (db *DB) Events() *eventstore.Store { return db.store }

// Pool returns the pool the DB uses.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Close stops the DB's goroutines: a group commit already sent gets up to
// closeGrace to be answered (a commit waits for a stream row at most
// groupLockWait), appends still waiting fail with [eventstore.ErrClosed]
// (those whose commit was sent and not answered, with
// [eventstore.ErrUnknownOutcome]), and the listener disconnects. Every later
// call returns an error wrapping ErrClosed. Close is safe to call more than
// once.
func (db *DB) Close() error {
	db.once.Do(func() {
		db.closed.Store(true)
		db.cancel()
		db.events.w.close()
		db.events.Notify() // subscriptions read again and see ErrClosed
		db.checkpointsChanged.Notify()
		stopped := make(chan struct{})
		go func() { db.wg.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(db.events.hooks.closeGrace(closeGrace)):
			db.log.Warn("postgres: Close: a commit was not answered in time; giving up on it", "schema", db.opts.Schema)
			db.sending.expire()
			<-stopped
		}
		if db.ownPool {
			db.pool.Close()
		}
	})
	return nil
}

// sending tracks the connections on which a commit was sent and not yet
// answered. A commit is sent without a cancellable context (pgx would watch
// it on every commit), and bounded instead by expire, which ends their reads
// at once: their commits' outcomes are unknown.
type sending struct {
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	expired bool // after Close's grace: every commit sent is given up on
}

func (s *sending) enter(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	if s.expired {
		_ = c.SetDeadline(time.Now())
	}
}

func (s *sending) leave(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *sending) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expired = true
	for c := range s.conns {
		_ = c.SetDeadline(time.Now()) // safe from another goroutine
	}
}

// closeGrace is how long Close waits for the answer to a commit already sent
// (the server or the network may be stuck) before it gives up on it.
const closeGrace = 5 * time.Second

// Every transaction recado runs for itself (a group commit, a delete, a
// migration) sets its isolation and timeouts rather than inherit the role's or
// the database's defaults: the compare-and-set of stream rows relies on READ
// COMMITTED (under REPEATABLE READ or SERIALIZABLE a concurrent update fails
// the transaction instead of being seen), and a role's lock_timeout,
// statement_timeout or idle_in_transaction_session_timeout would fail, or
// kill the session of, a commit that only waited for its turn.
const beginOwn = "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE"

// ownTimeouts is an expression (one text value) of set_config calls
// (transaction-local) that give one of recado's own transactions its
// timeouts: lockTimeout (0 waits for as long as the context allows) and no
// statement, idle or transaction timeout (the context bounds them).
// transaction_timeout exists from PostgreSQL 17 on.
func ownTimeouts(lockTimeout time.Duration) string {
	return fmt.Sprintf(`concat(set_config('lock_timeout', '%dms', true), set_config('statement_timeout', '0', true),
set_config('idle_in_transaction_session_timeout', '0', true),
CASE WHEN current_setting('transaction_timeout', true) IS NOT NULL THEN set_config('transaction_timeout', '0', true) END)`,
		lockTimeout.Milliseconds())
}

// ownTxOptions begin one of recado's own transactions that waits for locks
// as long as its context allows, in one round trip.
var ownTxOptions = pgx.TxOptions{BeginQuery: beginOwn + "; SELECT " + ownTimeouts(0)}

func (db *DB) errClosed(op string) error {
	return fmt.Errorf("postgres: %s: %w", op, eventstore.ErrClosed)
}

// channelName is the NOTIFY channel of a schema's event store.
func channelName(schema string) string {
	name := "recado:" + schema
	if len(name) > maxIdentLen {
		h := fnv.New64a()
		h.Write([]byte(schema))
		name = fmt.Sprintf("recado:%x", h.Sum64())
	}
	return name
}
