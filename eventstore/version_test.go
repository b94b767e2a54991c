package eventstore

import (
	"errors"
	"strings"
	"testing"
)

func TestExpectedVersionCheck(t *testing.T) {
	tests := []struct {
		expected ExpectedVersion
		actual   uint64
		exists   bool
		ok       bool
	}{
		{Any, 0, false, true},
		{Any, 7, true, true},
		{Any, 7, false, true}, // soft-deleted
		{NoStream, 0, false, true},
		{NoStream, 3, false, true}, // soft-deleted: does not exist
		{NoStream, 3, true, false},
		{StreamExists, 3, true, true},
		{StreamExists, 0, false, false},
		{StreamExists, 3, false, false},
		{Exact(3), 3, true, true},
		{Exact(3), 3, false, true}, // soft-deleted keeps its version
		{Exact(3), 4, true, false},
		{Exact(3), 0, false, false},
		{Exact(0), 0, false, true},
		{Exact(0), 1, true, false},
	}
	for _, tt := range tests {
		err := tt.expected.Check("s", tt.actual, tt.exists)
		if (err == nil) != tt.ok {
			t.Errorf("%s.Check(actual %d, exists %v) = %v, want ok=%v", tt.expected, tt.actual, tt.exists, err, tt.ok)
			continue
		}
		if err == nil {
			continue
		}
		var ce *ConflictError
		if !errors.Is(err, ErrConflict) || !errors.As(err, &ce) {
			t.Fatalf("error %v is not a ConflictError", err)
		}
		if ce.Stream != "s" || ce.Expected != tt.expected || ce.Actual != tt.actual || ce.Exists != tt.exists {
			t.Errorf("ConflictError = %+v", ce)
		}
		if msg := err.Error(); !strings.Contains(msg, `"s"`) || !strings.Contains(msg, tt.expected.String()) {
			t.Errorf("message %q does not name stream and expected version", msg)
		}
	}
}

func TestExpectedVersionString(t *testing.T) {
	for v, want := range map[ExpectedVersion]string{Any: "any", NoStream: "no stream", StreamExists: "stream exists",
		Exact(12): "12", ExpectedVersion(-9): "invalid(-9)"} {
		if got := v.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
	if v, ok := Exact(5).IsExact(); !ok || v != 5 {
		t.Errorf("Exact(5).IsExact() = %d, %v", v, ok)
	}
	if _, ok := NoStream.IsExact(); ok {
		t.Error("NoStream.IsExact() = true")
	}
}
