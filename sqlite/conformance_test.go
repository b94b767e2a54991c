package sqlite

import (
	"testing"

	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

// newStore is the conformance suite's factory: a fresh file per store, with
// the default (durable) options.
func newStore(tb testing.TB) eventstore.Store { return openTest(tb, Options{}).Events() }

func TestConformance(t *testing.T) { eventstoretest.Run(t, newStore) }
