package eventstore

import (
	"errors"
	"strings"
	"testing"

	"github.com/recado-dev/recado"
)

func TestValidateAppend(t *testing.T) {
	ok := recado.Event{ID: "id-1", Type: "T"}
	tests := []struct {
		name    string
		stream  string
		events  []recado.Event
		opts    AppendOptions
		wantErr string // substring; "" = valid
	}{
		{"valid", "s", []recado.Event{ok}, AppendOptions{}, ""},
		{"valid unicode", "café-☕-42", []recado.Event{ok, {ID: "id-2", Type: "T"}}, AppendOptions{Expected: Exact(3)}, ""},
		{"empty stream", "", []recado.Event{ok}, AppendOptions{}, "empty stream name"},
		{"bad utf8 stream", "s\xff", []recado.Event{ok}, AppendOptions{}, "not valid UTF-8"},
		{"nul in stream", "s\x00x", []recado.Event{ok}, AppendOptions{}, "NUL"},
		{"no events", "s", nil, AppendOptions{}, "no events"},
		{"no id", "s", []recado.Event{{Type: "T"}}, AppendOptions{}, "has no ID"},
		{"no type", "s", []recado.Event{{ID: "x"}}, AppendOptions{}, "has no type"},
		{"bad utf8 id", "s", []recado.Event{{ID: "\xff", Type: "T"}}, AppendOptions{}, "ID is not valid UTF-8"},
		{"duplicate id", "s", []recado.Event{ok, ok}, AppendOptions{}, "appears twice"},
		{"reserved metadata", "s", []recado.Event{{ID: "x", Type: "T",
			Metadata: recado.Metadata{Fields: map[string]string{"causation_id": "c"}}}}, AppendOptions{}, "reserved"},
		{"bad expected version", "s", []recado.Event{ok}, AppendOptions{Expected: -7}, "expected version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateAppend(tt.stream, tt.events, tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateAppend = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ValidateAppend = %v, want ErrInvalid mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	ao := NewAppendOptions(ExpectVersion(4), InTx("tx"))
	if ao.Expected != Exact(4) || ao.Tx != "tx" {
		t.Errorf("NewAppendOptions = %+v", ao)
	}
	if ao := NewAppendOptions(); ao.Expected != Any || ao.Tx != nil {
		t.Errorf("default AppendOptions = %+v, want Any and no tx", ao)
	}
	ro := NewReadOptions(FromVersion(3), Backwards(), Limit(10))
	if ro != (ReadOptions{From: 3, Backwards: true, Limit: 10}) {
		t.Errorf("NewReadOptions = %+v", ro)
	}
	if err := NewReadOptions(Limit(-1)).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative limit: %v, want ErrInvalid", err)
	}
}

func TestErrorsWrap(t *testing.T) {
	err := UnknownOutcome("s", errors.New("context canceled"))
	if !errors.Is(err, ErrUnknownOutcome) || !strings.Contains(err.Error(), `"s"`) {
		t.Errorf("UnknownOutcome = %v", err)
	}
	var de error = &DuplicateIDError{ID: "e1", Stream: "s", Reason: "other data"}
	if !errors.Is(de, ErrDuplicateID) || !strings.Contains(de.Error(), "e1") {
		t.Errorf("DuplicateIDError = %v", de)
	}
}
