package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/driver"
)

// Durability says when a commit is safe.
type Durability int

const (
	// Durable (the default) syncs the write-ahead log to disk before a commit
	// returns (synchronous=FULL): a committed append survives a power loss.
	Durable Durability = iota
	// SurviveCrash syncs only at checkpoints (synchronous=NORMAL): a committed
	// append survives the process crashing, but the last commits before a power
	// loss or an operating-system crash may be lost (never corrupted). Commits
	// are cheaper; group commit makes the difference small under concurrency.
	SurviveCrash
)

func (d Durability) String() string {
	switch d {
	case Durable:
		return "durable"
	case SurviveCrash:
		return "survive-crash"
	}
	return fmt.Sprintf("Durability(%d)", int(d))
}

func (d Durability) synchronous() string {
	if d == SurviveCrash {
		return "NORMAL"
	}
	return "FULL"
}

// Options configure a [DB]. The zero value is the recommended setting.
type Options struct {
	// Durability: [Durable] by default.
	Durability Durability
	// Logger receives the few events worth logging (a failed group commit, a
	// failed rollback). Default: nothing is logged.
	Logger *slog.Logger
	// PollInterval is how often an idle subscription reads the log again, to see
	// events that another process wrote to the file (commits in this process
	// wake subscribers at once). Default 1s.
	PollInterval time.Duration
	// MaxBatch is the most appends one group commit gathers. Default 256, at
	// most 65,536 (the queue holds MaxBatch appends).
	MaxBatch int
	// BusyTimeout is how long a connection waits for another process's lock on
	// the file before failing. Default 5s, at most 24h (SQLite counts it in
	// milliseconds in 32 bits).
	BusyTimeout time.Duration
	// ReadConns is the number of connections that serve reads concurrently.
	// Default 4, at most 64 (each connection is a SQLite instance with its own
	// memory and page cache).
	ReadConns int
}

const (
	defaultPollInterval = time.Second
	defaultMaxBatch     = 256
	defaultBusyTimeout  = 5 * time.Second
	defaultReadConns    = 4

	maxMaxBatch    = 1 << 16
	maxBusyTimeout = 24 * time.Hour
	maxReadConns   = 64
)

// Validate reports settings that cannot work: negative durations or sizes,
// sizes or a busy timeout above the maxima given on each field, an unknown
// durability.
func (o Options) Validate() error {
	switch {
	case o.Durability != Durable && o.Durability != SurviveCrash:
		return fmt.Errorf("sqlite: options: unknown durability %d (want Durable or SurviveCrash)", int(o.Durability))
	case o.PollInterval < 0:
		return fmt.Errorf("sqlite: options: negative PollInterval %v", o.PollInterval)
	case o.MaxBatch < 0 || o.MaxBatch > maxMaxBatch:
		return fmt.Errorf("sqlite: options: MaxBatch %d out of range (0 for the default, 1 to %d)", o.MaxBatch, maxMaxBatch)
	case o.BusyTimeout < 0 || o.BusyTimeout > maxBusyTimeout:
		return fmt.Errorf("sqlite: options: BusyTimeout %v out of range (0 for the default, up to %v)", o.BusyTimeout, maxBusyTimeout)
	case o.ReadConns < 0 || o.ReadConns > maxReadConns:
		return fmt.Errorf("sqlite: options: ReadConns %d out of range (0 for the default, 1 to %d)", o.ReadConns, maxReadConns)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PollInterval == 0 {
		o.PollInterval = defaultPollInterval
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = defaultMaxBatch
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = defaultBusyTimeout
	}
	if o.ReadConns == 0 {
		o.ReadConns = defaultReadConns
	}
	return o
}

// DB is one SQLite file and everything recado keeps in it. It owns the single
// writer connection (shared by group commit and [DB.Tx]), the pool of read
// connections, and the schema. Open one DB per file per process.
type DB struct {
	path string // as given to Open, for Path and messages
	file string // the file opened: path, or a temporary file for ":memory:"
	temp bool   // file is the temporary file of ":memory:", removed by Close
	opts Options
	log  *slog.Logger

	write *sql.DB     // one connection: the only writer
	conn  *sql.Conn   // that connection, held for the DB's life
	stmts *writeStmts // its hot statements, on the driver's direct API
	reads *readPool   // readers (WAL lets them run beside the writer)
	pages sync.Pool   // *rawPage buffers of reads

	// writeLock (capacity 1) is held by whoever uses conn: the group-commit
	// writer for one batch, or a Tx for its whole life.
	writeLock chan struct{}
	queue     chan *appendReq
	closing   chan struct{} // closed by Close
	done      chan struct{} // closed when the writer goroutine has returned
	closeOnce sync.Once
	closeErr  error

	waiting atomic.Int64 // group-commit writes sent and not yet taken or given up, for tests

	signal        driver.Signal // events committed
	checkpointSig driver.Signal // projection checkpoints committed (DB.Checkpoints)
	stats         struct{ commits, appends, events, txs atomic.Uint64 }
	events        *eventDriver      // the event store's driver
	store         *eventstore.Store // the front over it
}

// Memory is the path that opens a private, throwaway database (for tests,
// say): each Open of it gets a database of its own, which every connection of
// that DB sees and Close deletes. It lives in a temporary file (in
// os.TempDir), synced never: SQLite's own in-memory databases are private to
// one connection, and this build of SQLite has no shared cache to share them.
const Memory = ":memory:"

// Open opens (creating if needed) the SQLite database at path, brings its
// schema up to date and starts the writer. The directory must exist. path is
// a file path, not a SQLite URI; [Memory] opens a throwaway database.
func Open(path string, opts Options) (*DB, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	file, temp, err := dbFile(path)
	if err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	db := &DB{
		path:      path,
		file:      file,
		temp:      temp,
		opts:      opts,
		log:       opts.Logger,
		writeLock: make(chan struct{}, 1),
		queue:     make(chan *appendReq, opts.MaxBatch),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	if err := db.open(); err != nil {
		db.closeConns()
		db.removeTemp()
		return nil, err
	}
	db.events = &eventDriver{db: db}
	db.store = eventstore.New(db.events)
	go db.writer()
	return db, nil
}

// dbFile returns the file to open for path, checking that its directory
// exists; for [Memory], a new temporary file.
func dbFile(path string) (file string, temp bool, err error) {
	switch {
	case path == "":
		return "", false, errors.New("sqlite: open: empty path")
	case path == Memory:
		f, err := os.CreateTemp("", "recado-memory-*.db")
		if err != nil {
			return "", false, fmt.Errorf("sqlite: open %s: %w", path, err)
		}
		return f.Name(), true, f.Close()
	case strings.HasPrefix(path, "file:"):
		return "", false, fmt.Errorf("sqlite: open %s: a SQLite URI; Open takes a file path (or %q)", path, Memory)
	}
	if dir := filepath.Dir(path); dir != "" {
		if fi, err := os.Stat(dir); err != nil {
			return "", false, fmt.Errorf("sqlite: open %s: %w", path, err)
		} else if !fi.IsDir() {
			return "", false, fmt.Errorf("sqlite: open %s: %s is not a directory", path, dir)
		}
	}
	return path, false, nil
}

// removeTemp deletes the temporary file of a [Memory] database and its WAL.
func (db *DB) removeTemp() error {
	if !db.temp {
		return nil
	}
	var errs []error
	for _, f := range []string{db.file, db.file + "-wal", db.file + "-shm"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// synchronous is the PRAGMA synchronous of the writer: as Durability says,
// but never a sync for a [Memory] database, which Close deletes anyway.
func (db *DB) synchronous() string {
	if db.temp {
		return "OFF"
	}
	return db.opts.Durability.synchronous()
}

func (db *DB) open() error {
	ctx := context.Background()
	busy := pragma("busy_timeout", db.opts.BusyTimeout.Milliseconds())
	db.write = openSQL(dsn(db.file, busy, pragma("synchronous", db.synchronous())))
	var err error
	if db.conn, err = db.write.Conn(ctx); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", db.path, err)
	}
	err = db.conn.Raw(func(dc any) error {
		c, err := rawConn(dc)
		if err == nil {
			err = setWAL(c, db.opts.BusyTimeout)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", db.path, err)
	}
	if err := migrate(ctx, db.conn, db.path); err != nil {
		return err
	}
	err = db.conn.Raw(func(dc any) error {
		c, err := rawConn(dc)
		if err == nil {
			db.stmts, err = prepareWrite(c)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", db.path, err)
	}
	db.reads = newReadPool(dsn(db.file, busy, "query_only(1)"), db.opts.ReadConns)
	return nil
}

// setWAL puts the file in WAL mode (a no-op once it is). Switching needs the
// file's exclusive lock, and SQLite refuses at once (SQLITE_BUSY, without
// waiting for the busy timeout) when another connection is switching it at the
// same time, as when several processes open a new file together: retry until
// timeout.
func setWAL(c *sqlite3.Conn, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.Exec("PRAGMA journal_mode=WAL")
		if err == nil || !errors.Is(err, sqlite3.BUSY) || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("set journal_mode WAL: %w", err)
			}
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// onWriter runs f with the writer's statements, under database/sql's lock of
// the writer connection (the statements live on that connection, below
// database/sql). The caller holds the write lock. f must not call db.conn.
func (db *DB) onWriter(f func(w *writeStmts) error) error {
	var ferr error
	if err := db.conn.Raw(func(any) error { ferr = f(db.stmts); return nil }); err != nil {
		return err
	}
	return ferr
}

func (db *DB) closeConns() error {
	var errs []error
	if db.reads != nil {
		errs = append(errs, db.reads.close())
	}
	if db.stmts != nil {
		errs = append(errs, db.onWriter(func(w *writeStmts) error { return w.close() }))
	}
	if db.conn != nil {
		errs = append(errs, db.conn.Close())
	}
	if db.write != nil {
		errs = append(errs, db.write.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close %s: %w", db.path, err)
	}
	return nil
}

// Close stops the writer and closes the file. Appends waiting in the queue
// fail with ErrClosed (of package eventstore); a group commit already
// under way finishes first, and so does a running [DB.Tx]. Subscriptions
// waiting for events end at once with ErrClosed. Close is safe to call more
// than once; later calls return nil.
func (db *DB) Close() error {
	first := false
	db.closeOnce.Do(func() {
		first = true
		close(db.closing)
		db.signal.Notify() // wake idle subscriptions: their next read reports ErrClosed
		db.checkpointSig.Notify()
		<-db.done
		db.writeLock <- struct{}{} // wait for a running Tx; never released
		db.closeErr = db.closeConns()
		if err := db.removeTemp(); err != nil {
			db.closeErr = errors.Join(db.closeErr, fmt.Errorf("sqlite: close %s: %w", db.path, err))
		}
	})
	if !first {
		return nil
	}
	return db.closeErr
}

// Events returns the event store kept in this file.
func (db *DB) Events() *eventstore.Store { return db.store }

// Path returns the file's path as given to Open ([Memory] for a throwaway
// database).
func (db *DB) Path() string { return db.path }

// Stats are counters since Open, for monitoring and tests.
type Stats struct {
	// Commits is the number of group commits (transactions the writer committed
	// with at least one append in them).
	Commits uint64
	// Appends and Events are the appends and events those commits stored.
	// Appends/Commits is the mean group size.
	Appends, Events uint64
	// Txs is the number of units of work ([DB.Tx]) committed.
	Txs uint64
}

// Stats returns the counters.
func (db *DB) Stats() Stats {
	return Stats{
		Commits: db.stats.commits.Load(),
		Appends: db.stats.appends.Load(),
		Events:  db.stats.events.Load(),
		Txs:     db.stats.txs.Load(),
	}
}

func (db *DB) isClosing() bool {
	select {
	case <-db.closing:
		return true
	default:
		return false
	}
}

// lockWrite takes the writer connection, waiting for ctx.
func (db *DB) lockWrite(ctx context.Context) error {
	if db.isClosing() {
		return driver.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case db.writeLock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-db.closing:
		return driver.ErrClosed
	}
	if db.isClosing() { // Close may have begun while we waited
		<-db.writeLock
		return driver.ErrClosed
	}
	return nil
}

func (db *DB) unlockWrite() { <-db.writeLock }
