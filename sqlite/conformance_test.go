package sqlite

import (
	"testing"

	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

// closingStore lets the conformance suite close the DB through its store, so
// the suite's Close checks run against SQLite too.
type closingStore struct {
	*EventStore
	db *DB
}

func (s closingStore) Close() error { return s.db.Close() }

// newStore is the conformance suite's factory: a fresh file per store, with
// the default (durable) options.
func newStore(tb testing.TB) eventstore.Store {
	db := openTest(tb, Options{})
	return closingStore{db.Events(), db}
}

func TestConformance(t *testing.T) { eventstoretest.Run(t, newStore) }
