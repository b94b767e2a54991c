// Package driver is the contract between package checkpoint's Store front
// and the backends that keep projection checkpoints (memory, SQLite,
// PostgreSQL). Applications do not use it: they call the front,
// *checkpoint.Store, which every backend's DB hands out.
//
// The rules live once, in the front: which copy of a projection may move
// its checkpoints, that a checkpoint never moves backwards, when a rebuilt
// copy may replace the active one. A backend stores and finds two kinds of
// records: one per projection, one per partition of each of its copies. It
// runs the front's function in a transaction with a [Writer] whose reads
// lock what they return.
package driver

import (
	"context"
	"errors"
	"time"

	"github.com/recado-dev/recado"
)

// Driver is what a backend implements. The front calls it only with checked
// input: names within the limits of package checkpoint, times in UTC
// truncated to the microsecond.
type Driver interface {
	// Update runs fn in a transaction: tx's when tx is not nil (then
	// [ErrForeignTx] if tx is not the driver's own, live, unit of work),
	// else one of its own, committed if fn returns nil and rolled back
	// otherwise. fn reads and writes records through w. The front's fn
	// reads everything it needs before it writes, and returns an error only
	// before its first write (or with the error of a write).
	Update(ctx context.Context, tx recado.Tx, fn func(w Writer) error) error

	// Get returns the committed record of the projection name.
	Get(ctx context.Context, name string) (p Projection, found bool, err error)

	// Checkpoints returns the committed checkpoints of copy of the
	// projection name, by ascending partition (only the partitions that
	// have one).
	Checkpoints(ctx context.Context, name string, copy uint64) ([]Checkpoint, error)

	// Names returns the names of every projection that has a record, in
	// ascending order.
	Names(ctx context.Context) ([]string, error)

	// Changed returns a channel closed after the next commit that may have
	// changed a record, by this process at least (a backend that cannot
	// see other processes' commits may leave them to the front's polling),
	// and when the driver's DB closes.
	Changed() <-chan struct{}
}

// Writer reads and writes records inside one transaction of
// [Driver.Update]. It sees the transaction's own writes. What its reads
// return stays locked until the transaction ends: a projection's record
// read by one transaction cannot be written by another until the first
// ends (a shared lock is enough for a record that is read and not written,
// so that the partitions of one projection save their checkpoints side by
// side), and a checkpoint read by one cannot be written by another.
type Writer interface {
	// Get returns the record of the projection name.
	Get(name string) (p Projection, found bool, err error)
	// Put stores p in place of the record of p.Name, or as a new one.
	Put(p Projection) error
	// Checkpoint returns the checkpoint of one partition of one copy.
	Checkpoint(name string, copy uint64, partition int) (c Checkpoint, found bool, err error)
	// PutCheckpoint stores c in place of the checkpoint of its name, copy
	// and partition, or as a new one.
	PutCheckpoint(c Checkpoint) error
	// DeleteCheckpoints deletes every checkpoint of copy of the projection
	// name.
	DeleteCheckpoints(name string, copy uint64) error
}

var (
	// ErrClosed: the backend's DB was closed.
	ErrClosed = errors.New("checkpoint: store closed")
	// ErrForeignTx: the unit of work given is not one of this backend's DB,
	// or it has ended. The front reports it as checkpoint.ErrInvalid.
	ErrForeignTx = errors.New("checkpoint: unit of work of another DB, or finished")
)

// Copy is one copy of a projection's read model: the one queries read, or
// one being rebuilt from the start of the log.
type Copy struct {
	// Number names the copy: 1 for the first, one more for each rebuild.
	// 0 means no copy.
	Number uint64
	// Partitions is how many partitions the copy's streams are spread over;
	// each has its own checkpoint.
	Partitions int
}

// Projection is what a backend keeps of one projection.
type Projection struct {
	Name string
	// Active is the copy queries read.
	Active Copy
	// Building is the copy being rebuilt; Number 0 when none is.
	Building Copy
	// Retiring is the number of a copy that a rebuild replaced and whose
	// dead letters are still to be retired; 0 for none.
	Retiring uint64
	// Updated is when the record last changed.
	Updated time.Time
}

// Checkpoint is how far one partition of one copy of a projection has
// gone: every event of the partition up to Position is applied, or parked
// in the dead-letter queue.
type Checkpoint struct {
	Name      string
	Copy      uint64
	Partition int
	Position  recado.Position
	// CaughtUp reports that the partition has reached the end of the log at
	// least once.
	CaughtUp bool
	// Updated is when the checkpoint was last saved.
	Updated time.Time
}
