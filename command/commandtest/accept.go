package commandtest

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
)

func testAccept(t *testing.T, e *env) {
	md := recado.Metadata{CorrelationID: "corr-1", Fields: map[string]string{"tenant": "acme"}}
	rc := e.accept(place("1"), command.WithMetadata(md))
	if rc.ID == "" || rc.Type != "PlaceOrder" || rc.State != command.Accepted || rc.Existing {
		t.Errorf("receipt = %+v, want a new accepted PlaceOrder", rc)
	}
	if want := "/commands/PlaceOrder/" + rc.ID; rc.Location != want {
		t.Errorf("receipt location = %q, want %q", rc.Location, want)
	}
	if !rc.Accepted.Equal(T0) {
		t.Errorf("receipt accepted at %v, want the store's clock, %v", rc.Accepted, T0)
	}
	st, err := e.queue.Status(t.Context(), rc.ID)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.State != command.Accepted || st.Attempts != 0 || st.Type != "PlaceOrder" || st.Key != OrderStream("1") ||
		st.Queue != command.DefaultQueue || !st.Accepted.Equal(T0) || !st.Updated.Equal(T0) {
		t.Errorf("status = %+v, want accepted PlaceOrder of key %s, no attempt, at %v", st, OrderStream("1"), T0)
	}
	if st.Accepted.Location() != time.UTC {
		t.Errorf("status time in %v, want UTC", st.Accepted.Location())
	}
	var got PlaceOrder
	if err := json.Unmarshal(st.Data, &got); err != nil || !reflect.DeepEqual(got, place("1")) {
		t.Errorf("status data = %s (%v), want the command %+v", st.Data, err, place("1"))
	}
	if st.Metadata.CorrelationID != "corr-1" || st.Metadata.Fields["tenant"] != "acme" {
		t.Errorf("status metadata = %+v, want %+v", st.Metadata, md)
	}
	if _, err := e.queue.Status(t.Context(), recado.NewID()); !errors.Is(err, command.ErrNotFound) {
		t.Errorf("Status of an unknown ID = %v, want ErrNotFound", err)
	}
	if _, err := e.queue.Status(t.Context(), ""); !errors.Is(err, command.ErrInvalid) {
		t.Errorf("Status of an empty ID = %v, want ErrInvalid", err)
	}
}

// unregistered is a command type no handler is registered for.
type unregistered struct{ X int }

func testAcceptRefused(t *testing.T, e *env) {
	big := place("big")
	big.Items = []string{strings.Repeat("x", maxData)}
	tests := []struct {
		name string
		v    any
		opts []command.Option
		want error
	}{
		{"unknown type", unregistered{1}, nil, command.ErrUnknownCommand},
		{"nil pointer", (*PlaceOrder)(nil), nil, command.ErrInvalid},
		{"invalid command", PlaceOrder{OrderID: "2"}, nil, command.ErrInvalid},
		{"too large", big, nil, command.ErrTooLarge},
		{"an ID", place("3"), []command.Option{command.WithID("mine")}, command.ErrInvalid},
		{"empty key", place("4"), []command.Option{command.WithIdempotencyKey("alice", "")}, command.ErrInvalid},
		{"long key", place("5"), []command.Option{command.WithIdempotencyKey("alice", strings.Repeat("k", command.MaxIdempotencyKeyLen+1))}, command.ErrInvalid},
		{"long scope", place("6"), []command.Option{command.WithIdempotencyKey(strings.Repeat("s", command.MaxScopeLen+1), "k")}, command.ErrInvalid},
		{"bad metadata", place("7"), []command.Option{command.WithMetadata(recado.Metadata{Fields: map[string]string{"causation_id": "x"}})}, command.ErrInvalid},
		{"key not UTF-8", PlaceOrder{OrderID: "\xff", Items: []string{"a"}}, nil, command.ErrInvalid},
	}
	for _, tc := range tests {
		rc, err := e.queue.Accept(t.Context(), tc.v, tc.opts...)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Accept = %+v, %v; want %v", tc.name, rc, err, tc.want)
		}
		var ce *command.Error
		if err != nil && !errors.As(err, &ce) {
			t.Errorf("%s: error %T is not a *command.Error", tc.name, err)
		}
		if rc.ID != "" {
			t.Errorf("%s: a refused accept returned the receipt %+v", tc.name, rc)
		}
	}
	var unknown *command.UnknownCommandError
	if _, err := e.queue.Accept(t.Context(), unregistered{}); !errors.As(err, &unknown) || !strings.Contains(unknown.Type, "unregistered") {
		t.Errorf("Accept of an unregistered type = %v, want an *UnknownCommandError naming the type", err)
	}
	// A pointer to a registered type is accepted as the value.
	if rc := e.accept(&PlaceOrder{OrderID: "8", Items: []string{"a"}}); rc.Type != "PlaceOrder" {
		t.Errorf("Accept(*PlaceOrder) type = %q", rc.Type)
	}
}

func testIdempotent(t *testing.T, e *env) {
	key := command.WithIdempotencyKey("alice", "key-1")
	first := e.accept(place("1"), key)
	again := e.accept(place("1"), key)
	if again.ID != first.ID || !again.Existing || first.Existing || again.Location != first.Location || !again.Accepted.Equal(first.Accepted) {
		t.Errorf("re-accept = %+v, want the first receipt %+v, marked existing", again, first)
	}
	other := place("1")
	other.Total++
	if rc, err := e.queue.Accept(t.Context(), other, key); !errors.Is(err, command.ErrMismatch) || rc.ID != "" {
		t.Errorf("accept of another command with the key = %+v, %v; want ErrMismatch", rc, err)
	}
	if _, err := e.queue.Accept(t.Context(), AddLine{OrderID: "1", Line: 1, Item: "cup"}, key); !errors.Is(err, command.ErrMismatch) {
		t.Errorf("accept of another command type with the key = %v, want ErrMismatch", err)
	}
	bob := e.accept(place("1"), command.WithIdempotencyKey("bob", "key-1"))
	if bob.ID == first.ID || bob.Existing {
		t.Errorf("another caller's key = %+v, want a command of its own (not %s)", bob, first.ID)
	}
	noKey1, noKey2 := e.accept(place("1")), e.accept(place("1"))
	if noKey1.ID == noKey2.ID || noKey1.ID == first.ID {
		t.Errorf("accepts without a key share an ID: %s, %s, %s", noKey1.ID, noKey2.ID, first.ID)
	}
	st, err := e.queue.Status(t.Context(), first.ID)
	if err != nil || st.Scope != "alice" || st.IdempotencyKey != "key-1" || st.Metadata.IdempotencyKey != "key-1" {
		t.Errorf("status = %+v, %v; want scope alice, key key-1 (in the metadata too)", st, err)
	}
	// After it has run, the key still returns its receipt, now with its state.
	e.start(e.workerConfig(), nil)
	e.wait(first.ID)
	done := e.accept(place("1"), key)
	if done.ID != first.ID || done.State != command.Succeeded || !done.Existing {
		t.Errorf("re-accept after the run = %+v, want %s, succeeded", done, first.ID)
	}
}

func testConcurrentAccepts(t *testing.T, e *env) {
	const n = 16
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			rc, err := e.queue.Accept(t.Context(), place("1"), command.WithIdempotencyKey("alice", "same"))
			ids[i], errs[i] = rc.ID, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("accept %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("concurrent accepts of one key got IDs %v, want one", ids)
		}
	}
}

func testAcceptInTx(t *testing.T, e *env) {
	errRollback := errors.New("roll back")
	var rolledBack, committed command.Receipt
	err := e.Tx(t.Context(), func(tx recado.Tx) error {
		var err error
		rolledBack, err = e.queue.Accept(t.Context(), place("1"), command.InTx(tx), command.WithIdempotencyKey("alice", "k"))
		if err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx = %v, want the function's error", err)
	}
	if _, err := e.queue.Status(t.Context(), rolledBack.ID); !errors.Is(err, command.ErrNotFound) {
		t.Errorf("Status of a command accepted in a unit that rolled back = %v, want ErrNotFound", err)
	}
	err = e.Tx(t.Context(), func(tx recado.Tx) error {
		var err error
		committed, err = e.queue.Accept(t.Context(), place("1"), command.InTx(tx), command.WithIdempotencyKey("alice", "k"))
		return err
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if committed.Existing || committed.ID == rolledBack.ID {
		t.Errorf("accept after the rollback = %+v: the key must be free again", committed)
	}
	if st, err := e.queue.Status(t.Context(), committed.ID); err != nil || st.State != command.Accepted {
		t.Errorf("Status of a command accepted in a unit that committed = %+v, %v", st, err)
	}
	err = e.Tx(t.Context(), func(tx recado.Tx) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var ended recado.Tx
	if err := e.Tx(t.Context(), func(tx recado.Tx) error { ended = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.queue.Accept(t.Context(), place("2"), command.InTx(ended)); !errors.Is(err, command.ErrInvalid) {
		t.Errorf("Accept in a unit of work that has ended = %v, want ErrInvalid", err)
	}
}

func testWait(t *testing.T, e *env) {
	rc := e.accept(place("1"))
	st, err := e.queue.Wait(t.Context(), rc.ID, 20*time.Millisecond)
	if err != nil || st.State != command.Accepted {
		t.Errorf("Wait with no worker = %v, %v; want the accepted status when the time is up", st.State, err)
	}
	if st, err := e.queue.Wait(t.Context(), rc.ID, 0); err != nil || st.ID != rc.ID {
		t.Errorf("Wait(0) = %+v, %v; want one look", st, err)
	}
	if _, err := e.queue.Wait(t.Context(), recado.NewID(), time.Second); !errors.Is(err, command.ErrNotFound) {
		t.Errorf("Wait for an unknown command = %v, want ErrNotFound", err)
	}
	e.start(e.workerConfig(), nil)
	if st := e.wait(rc.ID); st.State != command.Succeeded {
		t.Errorf("Wait with a worker = %v, want succeeded", st.State)
	}
}
