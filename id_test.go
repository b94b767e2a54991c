package recado

import (
	"regexp"
	"slices"
	"testing"
	"time"
)

var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewIDForm(t *testing.T) {
	seen := make(map[string]bool)
	for range 10000 {
		id := NewID()
		if !uuidV7.MatchString(id) {
			t.Fatalf("NewID() = %q, not a version 7 UUID", id)
		}
		if seen[id] {
			t.Fatalf("NewID() returned %q twice", id)
		}
		seen[id] = true
	}
}

func TestNewIDSortsByTime(t *testing.T) {
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var ids []string
	// Steps of 1µs: above the 244ns resolution of the sub-millisecond bits.
	for i := range 3000 {
		ids = append(ids, newIDAt(base.Add(time.Duration(i)*time.Microsecond)))
	}
	if !slices.IsSorted(ids) {
		t.Fatal("IDs made at increasing times do not sort in that order")
	}
	if got, want := ids[0][:13], "01a21293-b600"; got != want {
		// 2026-11-25T12:00Z is 1795608000000 ms = 0x01a21293b600, big-endian first.
		t.Errorf("timestamp prefix = %s, want %s", got, want)
	}
}
