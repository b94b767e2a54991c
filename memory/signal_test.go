package memory

import (
	"context"
	"errors"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Subscriptions wait on Committed: it fires when a unit of work that wrote
// commits, not while it runs, not when it rolls back, and on Close.
func TestCommittedFiresOnCommit(t *testing.T) {
	ctx := context.Background()
	db := New()
	defer db.Close()
	s := db.Events()
	errRollback := errors.New("roll back")

	ch := db.events.Committed()
	err := db.Tx(ctx, func(tx *Tx) error {
		if _, err := s.Append(ctx, "a", []recado.Event{recado.NewEvent("A", nil)}, eventstore.InTx(tx)); err != nil {
			return err
		}
		if closed(ch) {
			t.Error("Committed fired before the unit of work committed")
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx: got %v, want %v", err, errRollback)
	}
	if closed(ch) {
		t.Error("Committed fired after a rollback")
	}
	if err := db.Tx(ctx, func(*Tx) error { return nil }); err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if closed(ch) {
		t.Error("Committed fired after a unit of work that wrote nothing")
	}
	err = db.Tx(ctx, func(tx *Tx) error {
		_, err := s.Append(ctx, "a", []recado.Event{recado.NewEvent("A", nil)}, eventstore.InTx(tx))
		return err
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if !closed(ch) {
		t.Error("Committed did not fire after a unit of work committed")
	}

	ch = db.events.Committed()
	if _, err := s.Append(ctx, "a", []recado.Event{recado.NewEvent("B", nil)}); err != nil {
		t.Fatal(err)
	}
	if !closed(ch) {
		t.Error("Committed did not fire after an append")
	}
	ch = db.events.Committed()
	if _, err := s.Append(ctx, "a", []recado.Event{recado.NewEvent("C", nil)}, eventstore.ExpectVersion(1)); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("stale append: got %v, want %v", err, eventstore.ErrConflict)
	}
	if closed(ch) {
		t.Error("Committed fired after an append that stored nothing")
	}
	db.Close()
	if !closed(ch) {
		t.Error("Committed did not fire on Close")
	}
}
