package memory_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore(tb testing.TB) eventstore.Store {
	s := memory.New()
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) { eventstoretest.Run(t, newStore) }

func BenchmarkStore(b *testing.B) { eventstoretest.Bench(b, newStore) }
