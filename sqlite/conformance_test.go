//go:build eventstoretest

// Built with -tags eventstoretest until the rewritten eventstoretest (Backend,
// Run over *eventstore.Store) lands on this branch; then the tag goes.

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
		Store: db.Events(),
		Close: db.Close,
		Tx:    eventstoretest.UnitOfWork(db),
	}
}

func TestConformance(t *testing.T) { eventstoretest.Run(t, newBackend) }
