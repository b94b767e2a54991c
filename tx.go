package recado

import "context"

// Tx is a unit of work in progress: one transaction of one backend's DB, which
// every store of that DB can join (the event store through
// eventstore.InTx(tx), the other stores through their tx argument). What is
// done in it commits together, or not at all.
//
// A Tx is valid only inside the function given to [UnitOfWork.Tx], and only on
// that function's goroutine. A store given a Tx of another DB, or one that has
// ended, refuses it with its package's invalid-argument error
// (eventstore.ErrInvalid, deadletter.ErrInvalid, ...).
type Tx interface {
	// OnCommit registers f to run after the unit of work commits, on the
	// goroutine that called Tx, before Tx returns. It does not run if the unit
	// rolls back. Stores use it to wake their readers.
	OnCommit(f func())
}

// UnitOfWork is a DB that runs units of work: memory.DB, sqlite.DB and
// postgres.DB are UnitOfWork[*memory.Tx], UnitOfWork[*sqlite.Tx] and
// UnitOfWork[*postgres.Tx]. Generic code (command handlers, projections,
// sagas) takes a UnitOfWork[T] and the stores of the same DB, and commits an
// append together with a status, a checkpoint or an inbox claim without
// importing a backend.
type UnitOfWork[T Tx] interface {
	// Tx runs fn in one transaction: it commits if fn returns nil and rolls
	// back if fn returns an error or panics (the panic goes on after the
	// rollback). The error fn returns is returned as it is.
	Tx(ctx context.Context, fn func(tx T) error) error
}
