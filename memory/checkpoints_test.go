package memory_test

import (
	"testing"

	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/projection/checkpoint/checkpointtest"
)

func TestCheckpoints(t *testing.T) {
	checkpointtest.Run(t, func(tb testing.TB, cfg checkpoint.Config) checkpointtest.Backend {
		db := newDB(tb)
		return checkpointtest.Backend{Store: db.Checkpoints(cfg), Tx: eventstoretest.UnitOfWork(db)}
	})
}
