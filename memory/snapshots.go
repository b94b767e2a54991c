package memory

import (
	"bytes"
	"context"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/command/driver"
)

// snapshots is the snapshot store's driver: the latest snapshot of each
// stream.
type snapshots struct {
	db    *DB
	snaps *table[string, driver.Snapshot]
}

var _ driver.Snapshots = (*snapshots)(nil)

// Snapshots returns a snapshot store of the DB, with cfg's clock and limit,
// for package command's repositories. Its Save joins a unit of work given a
// [*Tx] of this DB.
func (db *DB) Snapshots(cfg command.SnapshotConfig) *command.SnapshotStore {
	return command.NewSnapshotStore(db.snapshots, cfg)
}

// Save implements [driver.Snapshots.Save].
func (s *snapshots) Save(ctx context.Context, rtx recado.Tx, snap driver.Snapshot) (stored bool, err error) {
	err = s.db.writeTo(ctx, rtx, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		cur, found := s.snaps.get(tx, snap.Stream)
		if driver.Replaces(cur, found, snap) {
			snap.Data = bytes.Clone(snap.Data)
			s.snaps.put(tx, snap.Stream, snap)
			stored = true
		}
		return nil
	})
	return stored && err == nil, err
}

// Get implements [driver.Snapshots.Get].
func (s *snapshots) Get(ctx context.Context, stream string) (snap driver.Snapshot, found bool, err error) {
	err = s.db.read(ctx, driver.ErrClosed, func() { snap, found = s.snaps.get(nil, stream) })
	snap.Data = bytes.Clone(snap.Data)
	return snap, found, err
}

// Delete implements [driver.Snapshots.Delete].
func (s *snapshots) Delete(ctx context.Context, stream string) error {
	return s.db.writeTo(ctx, nil, driver.ErrClosed, driver.ErrForeignTx, func(tx *Tx) error {
		if _, found := s.snaps.get(tx, stream); found {
			s.snaps.del(tx, stream)
		}
		return nil
	})
}
