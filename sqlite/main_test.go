package sqlite

import (
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openTest opens a DB in a fresh directory and closes it when the test ends.
func openTest(tb testing.TB, opts Options) *DB {
	tb.Helper()
	db, err := Open(filepath.Join(tb.TempDir(), "recado.db"), opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return db
}
