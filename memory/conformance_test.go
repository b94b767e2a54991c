package memory_test

import (
	"testing"

	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

func newBackend(tb testing.TB) eventstoretest.Backend {
	db := newDB(tb)
	return eventstoretest.Backend{
		Store:    db.Events(),
		Close:    db.Close,
		Tx:       eventstoretest.UnitOfWork(db),
		Features: eventstoretest.Features{Delete: true, UnitOfWork: true, Close: true, LeakCheck: true},
	}
}

func TestConformance(t *testing.T) { eventstoretest.Run(t, newBackend) }

func BenchmarkStore(b *testing.B) { eventstoretest.Bench(b, newBackend) }
