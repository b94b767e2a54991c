package sqlite

import (
	"testing"

	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

// newBackend is the conformance suite's factory: a fresh file per backend,
// with the default (durable) options. The suite may close the DB itself
// (Close is safe twice).
func newBackend(tb testing.TB) eventstoretest.Backend {
	db := openTest(tb, Options{})
	return eventstoretest.Backend{
		Store:    db.Events(),
		Close:    db.Close,
		Tx:       eventstoretest.UnitOfWork(db),
		Features: eventstoretest.Features{Delete: true, UnitOfWork: true, Close: true, LeakCheck: true},
	}
}

func TestConformance(t *testing.T) { eventstoretest.Run(t, newBackend) }
