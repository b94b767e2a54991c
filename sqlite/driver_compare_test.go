//go:build sqlite_ncruces

package sqlite

// The driver comparison behind docs/benchmarks-sqlite.md: the raw and store
// benchmarks with both pure-Go drivers in one run. Only with
//
//	go test -tags sqlite_ncruces -run '^$' -bench Drivers ./sqlite/
//
// so that the package itself carries one driver.

import (
	"testing"

	// github.com/ncruces/go-sqlite3 (SQLite compiled to Wasm and translated to
	// Go) registers the database/sql driver "sqlite3".
	_ "github.com/ncruces/go-sqlite3/driver"

	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

func BenchmarkDrivers(b *testing.B) {
	for _, d := range []struct{ name, driver string }{{"modernc", "sqlite"}, {"ncruces", "sqlite3"}} {
		b.Run(d.name, func(b *testing.B) {
			b.Run("RawInsertBatch100", func(b *testing.B) { benchRawInsertBatch100(b, d.driver) })
			b.Run("RawScan", func(b *testing.B) { benchRawScan(b, d.driver) })
			b.Run("Store", func(b *testing.B) {
				eventstoretest.Bench(b, func(tb testing.TB) eventstore.Store {
					return openTest(tb, Options{driver: d.driver}).Events()
				})
			})
		})
	}
}

// TestDriverConformance runs the conformance suite on the other driver too.
func TestDriverConformanceNcruces(t *testing.T) {
	eventstoretest.Run(t, func(tb testing.TB) eventstore.Store {
		return openTest(tb, Options{driver: "sqlite3"}).Events()
	})
}
