package command_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/memory"
)

// An account kept as a struct with methods: the aggregate style.
type (
	accountEvent interface{ isAccountEvent() }
	Opened       struct{ Owner string }
	Deposited    struct{ Amount int }
	Withdrawn    struct{ Amount int }
	Deposit      struct {
		Account string
		Amount  int
	}
	Withdraw struct {
		Account string
		Amount  int
	}
	Account struct {
		Open    bool
		Balance int
	}
)

func (Opened) isAccountEvent()    {}
func (Deposited) isAccountEvent() {}
func (Withdrawn) isAccountEvent() {}

func (a *Account) Apply(e accountEvent) {
	switch e := e.(type) {
	case Opened:
		a.Open = true
	case Deposited:
		a.Balance += e.Amount
	case Withdrawn:
		a.Balance -= e.Amount
	}
}

var errOverdrawn = errors.New("insufficient funds")

func (a *Account) Deposit(c Deposit) ([]accountEvent, error) {
	if !a.Open {
		return []accountEvent{Opened{Owner: c.Account}, Deposited{c.Amount}}, nil
	}
	return []accountEvent{Deposited{c.Amount}}, nil
}

func (a *Account) Withdraw(c Withdraw) ([]accountEvent, error) {
	if c.Amount > a.Balance {
		return nil, errOverdrawn
	}
	return []accountEvent{Withdrawn{c.Amount}}, nil
}

func accounts(t *testing.T, db *memory.DB, snapshots *command.SnapshotStore) (*command.Repository[*Account, accountEvent], *command.Bus) {
	t.Helper()
	reg := recado.NewRegistry(nil)
	if err := errors.Join(recado.Register[Opened](reg, "Opened"), recado.Register[Deposited](reg, "Deposited"),
		recado.Register[Withdrawn](reg, "Withdrawn")); err != nil {
		t.Fatal(err)
	}
	repo, err := command.NewRepository(command.RepositoryConfig[*Account, accountEvent]{
		Events: db.Events(), Registry: reg,
		Initial:   func() *Account { return new(Account) },
		Evolve:    command.Apply[*Account, accountEvent],
		Snapshots: snapshots, SnapshotEvery: 2, SnapshotSchema: "account/v1",
	})
	if err != nil {
		t.Fatal(err)
	}
	bus := command.NewBus(command.BusConfig{Events: db.Events()})
	err = errors.Join(
		command.Handle(bus, command.Route[Deposit]{Name: "Deposit", Key: func(c Deposit) string { return "account-" + c.Account },
			Handle: command.Decide(repo, (*Account).Deposit)}),
		command.Handle(bus, command.Route[Withdraw]{Name: "Withdraw", Key: func(c Withdraw) string { return "account-" + c.Account },
			Handle: command.Decide(repo, (*Account).Withdraw)}),
	)
	if err != nil {
		t.Fatal(err)
	}
	return repo, bus
}

func TestAggregate(t *testing.T) {
	db := memory.New()
	defer db.Close()
	repo, bus := accounts(t, db, db.Snapshots(command.SnapshotConfig{}))
	for _, c := range []any{Deposit{"7", 100}, Withdraw{"7", 30}, Deposit{"7", 5}} {
		if _, err := bus.Dispatch(t.Context(), c); err != nil {
			t.Fatalf("Dispatch(%+v): %v", c, err)
		}
	}
	_, err := bus.Dispatch(t.Context(), Withdraw{"7", 1000})
	if !errors.Is(err, errOverdrawn) {
		t.Errorf("an overdraft = %v, want errOverdrawn", err)
	}
	a, version, err := repo.Load(t.Context(), "account-7")
	if err != nil || version != 4 || !reflect.DeepEqual(a, &Account{Open: true, Balance: 75}) {
		t.Errorf("Load = %+v at %d, %v; want open with 75 at version 4", a, version, err)
	}
	snap, found, err := db.Snapshots(command.SnapshotConfig{}).Load(t.Context(), "account-7", "account/v1")
	if err != nil || !found || snap.Version != 4 || snap.EventID != readAll(t, db.Events(), "account-7")[3].ID {
		t.Errorf("snapshot = %+v, %v, %v; want one at version 4 naming its event", snap, found, err)
	}
	fresh, version, err := repo.Load(t.Context(), "account-none")
	if err != nil || version != 0 || !reflect.DeepEqual(fresh, new(Account)) {
		t.Errorf("Load of a new stream = %+v at %d, %v; want the initial state at 0", fresh, version, err)
	}
}

func TestRepositoryUpdate(t *testing.T) {
	db := memory.New()
	defer db.Close()
	repo, _ := accounts(t, db, nil)
	runs := 0
	out, err := repo.Update(t.Context(), "account-1", func(a *Account) ([]accountEvent, error) {
		if runs++; runs == 1 { // another writer gets in first
			if _, err := db.Events().Append(t.Context(), "account-1", []recado.Event{recado.NewEvent("Opened", []byte(`{}`))}); err != nil {
				t.Fatal(err)
			}
		}
		return a.Deposit(Deposit{"1", 10})
	}, command.WithID("dep-1"))
	if err != nil || runs != 2 || out.LastVersion != 2 || out.ID != "dep-1" {
		t.Errorf("Update after a conflict = %+v, %v after %d runs; want version 2 after 2", out, err, runs)
	}
	if _, err := repo.Update(t.Context(), "account-1", func(a *Account) ([]accountEvent, error) {
		return a.Withdraw(Withdraw{"1", 99})
	}); !errors.Is(err, errOverdrawn) {
		t.Errorf("Update refused = %v, want the decision's error as it is", err)
	}
	// An event the registry does not know fails the load.
	if _, err := db.Events().Append(t.Context(), "account-1", []recado.Event{recado.NewEvent("Frozen", []byte(`{}`))}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := repo.Load(t.Context(), "account-1"); !errors.Is(err, recado.ErrUnknownType) {
		t.Errorf("Load with an unknown event = %v, want ErrUnknownType", err)
	}
}

func TestNewRepositoryErrors(t *testing.T) {
	db := memory.New()
	defer db.Close()
	reg := recado.NewRegistry(nil)
	evolve := func(s int, e any) int { return s + 1 }
	for name, cfg := range map[string]command.RepositoryConfig[int, any]{
		"no events":   {Registry: reg, Evolve: evolve},
		"no registry": {Events: db.Events(), Evolve: evolve},
		"no evolve":   {Events: db.Events(), Registry: reg},
		"no schema":   {Events: db.Events(), Registry: reg, Evolve: evolve, Snapshots: db.Snapshots(command.SnapshotConfig{}), SnapshotEvery: 5},
	} {
		if _, err := command.NewRepository(cfg); err == nil {
			t.Errorf("%s: NewRepository = nil error", name)
		}
	}
}

func TestDecideNeedsKey(t *testing.T) {
	db := memory.New()
	defer db.Close()
	repo, _ := accounts(t, db, nil)
	handle := command.Decide(repo, (*Account).Deposit)
	_, err := handle(context.Background(), &command.Command{Type: "Deposit"}, Deposit{"1", 1})
	if !errors.Is(err, command.ErrInvalid) {
		t.Errorf("Decide without a key = %v, want ErrInvalid", err)
	}
}
