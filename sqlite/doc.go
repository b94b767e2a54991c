// Package sqlite keeps recado's stores in one SQLite file: the embedded
// default, pure Go (no cgo).
//
// [Open] returns a [DB], the owner of the file: its connections, its schema and
// its single writer. [DB.Events] is the event store in it, an
// *eventstore.Store over this package's driver (package eventstore/driver):
// the Store validates, copies and reports errors as on every backend, and the
// driver stores, reads and decides each request with the contract's rules
// inside its own transaction. The recoverability stores ([DB.DeadLetters],
// [DB.IdempotencyKeys], [DB.Inbox], [DB.Leases]; package resilience's
// fronts over this package's drivers), package command's stores
// ([DB.Commands], [DB.Snapshots]) and the projections' checkpoint store
// ([DB.Checkpoints], package projection/checkpoint's front) are further parts
// of the same DB and share its file, its writer and its unit of work: a
// projection's read model in a table of the file commits with its
// checkpoint.
//
// # One writer, group commit
//
// The file is in WAL mode: readers (a small pool of read-only connections) run
// beside the one writer connection and never block it. SQLite allows one writer
// at a time anyway, so the DB keeps exactly one and feeds it through a queue. A
// single goroutine takes every append waiting in the queue (up to
// Options.MaxBatch) and, inside one transaction, decides each in queue order
// (a retry, a reused ID, a tombstoned stream, the expected version) on the
// state the appends before it left, and inserts the ones that go ahead; it
// commits once and answers each caller with its own result: an append that
// conflicts fails alone, and appends to the same stream in one batch see each
// other in queue order. One commit (one fsync) thus serves many appends, which
// is how concurrent appenders outrun the disk's flush rate. [DB.Stats] counts
// commits and appends.
//
// Because one writer assigns the global positions (the table's rowid) in commit
// order, the global log has no gaps and a reader that resumes after the last
// position it saw never skips an event.
//
// # Reads
//
// Reads run in pages of 512 events on a small pool of read-only connections
// (Options.ReadConns), each page on a connection held only while its rows are
// stepped through, in a read transaction that ends with the page: an
// iteration broken off early holds nothing. A read longer than a page fetches
// the next one on a second goroutine while the caller handles the current
// one.
//
// # Driver
//
// The driver is github.com/ncruces/go-sqlite3 (SQLite compiled to Wasm and
// translated to Go: pure Go). Reads and the group commit's statements use its
// direct API (prepared statements, bind, step, reset), which allocates
// nothing per row; [Tx] is database/sql over the same writer connection, so a
// unit of work looks like any *sql.Tx. The package registers no database/sql
// driver (it reaches database/sql through a connector of its own), so an
// application may import any other SQLite driver beside it.
//
// # Unit of work
//
// [DB.Tx] runs a function in one write transaction on the writer connection;
// pass the [Tx] to the stores (eventstore.InTx(tx)) and use it for your own
// tables (read models, outbox rows). Everything commits together, or nothing
// does, and subscribers hear of the events once it commits. An append in a Tx
// skips group commit: the Tx's commit is the commit. A *DB is a
// recado.UnitOfWork[*Tx], for code that should not import this package. While a Tx runs it holds
// the writer, so keep it short: never across a network call. Some errors end
// the transaction inside SQLite (an interrupted write, disk full, I/O errors):
// after one, every call of the Tx fails with [ErrTxAborted] and nothing
// commits.
//
// # Recoverability stores
//
// The dead-letter queue, the idempotency keys, the inbox and the leases keep
// their rows in the same file (tables recado_dead_letters,
// recado_idempotency_keys, recado_inbox, recado_leases) and write through the
// same single writer, so each of their writes is serialised with every other
// write of the file: of concurrent claims of one key or message exactly one
// wins, and each decides on what the ones before it stored. Given a [Tx], a
// write joins the unit of work (an inbox claim commits with its effect, a
// dead letter with the consumer moving past its message) and what it read
// stays as it read it until the unit ends: a lease's Guard in a unit of work
// holds off every Acquire of the lease, in this process or another, until
// the unit commits. Without a Tx, a claim, completion or release of an
// idempotency key, an inbox claim and a lease's Acquire, Renew or Release go
// through group commit beside the appends; the dead-letter queue's writes
// and the batched cleanups run in short transactions of their own. Reads
// (a lease, whether a message was handled, the operators' lists) run on the
// read connections and see what has committed.
//
// # Command stores
//
// The command records and the snapshots keep their rows in tables
// recado_commands and recado_snapshots, each under its own schema contract.
// Given a [Tx], an accept, a worker's state change and a snapshot's save
// join the unit of work: a command's events and its "succeeded" state
// commit together. Without one, an accept and a snapshot's save go through
// group commit beside the appends, and a state change runs in a transaction
// of its own. The workers find pending commands through a partial index of
// the pending records, by queue and acceptance order.
//
// # Durability
//
// By default ([Durable]) a commit syncs the WAL before it returns
// (synchronous=FULL), so a committed append survives a power loss.
// [SurviveCrash] (synchronous=NORMAL) survives a crash of the process but may
// lose the last commits on a power loss.
//
// # Several processes
//
// Several processes may open the same file. Writes are serialised by SQLite's
// lock (each DB waits up to Options.BusyTimeout for it); subscriptions wake at
// once on commits of their own process and read the log again every
// Options.PollInterval to see the others'.
//
// # Schema
//
// The package creates its tables (named recado_*) and records each contract's
// schema version in recado_schema; Open migrates in one transaction and refuses
// a file written by a newer recado ([ErrSchemaTooNew]). Event times are kept
// in UTC to the microsecond, from year 1 to year 9999.
//
// [Memory] (":memory:") opens a private database that Close deletes, for
// tests.
package sqlite
