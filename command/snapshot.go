package command

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command/driver"
)

// Snapshot is an aggregate's state folded from its stream up to a version,
// kept so that loading it reads only the events that follow. See the fields
// of driver.Snapshot.
type Snapshot = driver.Snapshot

// DefaultMaxSnapshot is the default of [SnapshotConfig.MaxData].
const DefaultMaxSnapshot = 16 << 20

// maxEventIDLen bounds a snapshot's event ID, as the event store does.
const maxEventIDLen = 255

// SnapshotConfig sets a SnapshotStore's clock and limit. The zero value is
// ready to use.
type SnapshotConfig struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxData is the largest encoded state kept, in bytes; a larger one is
	// not saved ([ErrTooLarge]). Default 16 MiB.
	MaxData int
}

// SnapshotStore keeps the latest snapshot of each stream. Each backend's DB
// hands one out (memory.DB.Snapshots, ...); a [Repository] uses it when
// told to. Snapshots are an optimisation: a load with one folds the same
// state as a load without.
type SnapshotStore struct {
	d   driver.Snapshots
	now func() time.Time
	cfg SnapshotConfig
}

// NewSnapshotStore returns the front over d. Backends call it; applications
// get a SnapshotStore from their backend's DB.
func NewSnapshotStore(d driver.Snapshots, cfg SnapshotConfig) *SnapshotStore {
	if cfg.MaxData <= 0 {
		cfg.MaxData = DefaultMaxSnapshot
	}
	return &SnapshotStore{d: d, now: clock(cfg.Now), cfg: cfg}
}

// Save stores snap as its stream's snapshot, in the unit of work tx or, when
// tx is nil, in a transaction of its own, unless the stored snapshot has the
// same schema and a version as late or later. It sets snap.Time and reports
// whether it stored it.
func (s *SnapshotStore) Save(ctx context.Context, tx recado.Tx, snap Snapshot) (bool, error) {
	fail := func(err error) (bool, error) { return false, &Error{Op: "snapshot", ID: snap.Stream, Err: err} }
	checks := []error{
		checkName("stream", snap.Stream, MaxStreamLen),
		checkName("schema", snap.Schema, MaxSchemaLen),
		checkName("event ID", snap.EventID, maxEventIDLen),
	}
	for _, err := range checks {
		if err != nil {
			return fail(invalid("%v", err))
		}
	}
	if snap.Version == 0 {
		return fail(invalid("version 0: a snapshot folds at least one event"))
	}
	if len(snap.Data) > s.cfg.MaxData {
		return fail(fmt.Errorf("%w: a snapshot of %d bytes, more than %d", ErrTooLarge, len(snap.Data), s.cfg.MaxData))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	snap.Data = bytes.Clone(snap.Data)
	if snap.Data == nil {
		snap.Data = []byte{}
	}
	snap.Time = stamp(s.now)
	stored, err := s.d.Save(ctx, tx, snap)
	if err != nil {
		return fail(driverError(err))
	}
	return stored, nil
}

// Load returns the snapshot of stream if it has one of schema; found is
// false otherwise (a snapshot of another schema is of a state shape this
// code does not read).
func (s *SnapshotStore) Load(ctx context.Context, stream, schema string) (snap Snapshot, found bool, err error) {
	fail := func(err error) (Snapshot, bool, error) {
		return Snapshot{}, false, &Error{Op: "snapshot", ID: stream, Err: err}
	}
	if err := checkName("stream", stream, MaxStreamLen); err != nil {
		return fail(invalid("%v", err))
	}
	if err := checkName("schema", schema, MaxSchemaLen); err != nil {
		return fail(invalid("%v", err))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	snap, found, err = s.d.Get(ctx, stream)
	if err != nil {
		return fail(driverError(err))
	}
	if !found || snap.Schema != schema {
		return Snapshot{}, false, nil
	}
	return snap, true, nil
}

// Delete deletes the snapshot of stream, if there is one.
func (s *SnapshotStore) Delete(ctx context.Context, stream string) error {
	if err := checkName("stream", stream, MaxStreamLen); err != nil {
		return &Error{Op: "snapshot", ID: stream, Err: invalid("%v", err)}
	}
	if err := ctx.Err(); err != nil {
		return &Error{Op: "snapshot", ID: stream, Err: err}
	}
	if err := s.d.Delete(ctx, stream); err != nil {
		return &Error{Op: "snapshot", ID: stream, Err: driverError(err)}
	}
	return nil
}
