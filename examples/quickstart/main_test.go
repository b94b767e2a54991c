package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestQuickstart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	for run1 := range 2 { // a second run on the same file adds to it
		var out strings.Builder
		if err := run(context.Background(), &out, path); err != nil {
			t.Fatalf("run %d: %v\n%s", run1, err, out.String())
		}
		for _, want := range []string{"duplicate=true", "a stale writer is refused: expected version 1, actual 2",
			"v2 OrderPaid", "caught up at", "done: the late order arrived live"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("run %d: output lacks %q:\n%s", run1, want, out.String())
			}
		}
	}
}
