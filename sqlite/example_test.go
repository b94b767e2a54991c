package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/sqlite"
)

// Open a file, append events, and commit events together with a row of a
// read model in one unit of work.
func Example() {
	dir, err := os.MkdirTemp("", "recado-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	db, err := sqlite.Open(filepath.Join(dir, "shop.db"), sqlite.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	ctx := context.Background()
	events := db.Events()

	// A plain append goes through group commit.
	res, err := events.Append(ctx, "order-1", []recado.Event{
		recado.NewEvent("OrderPlaced", []byte(`{"total":42}`)),
	}, eventstore.Expect(eventstore.NoStream))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("placed at version", res.LastVersion)

	// A unit of work: the event and the read model's row commit together.
	err = db.Tx(ctx, func(tx *sqlite.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS order_status (id TEXT PRIMARY KEY, status TEXT)`); err != nil {
			return err
		}
		_, err := events.Append(ctx, "order-1", []recado.Event{
			recado.NewEvent("OrderPaid", []byte(`{}`)),
		}, eventstore.ExpectVersion(res.LastVersion), eventstore.InTx(tx))
		if err != nil {
			return err // rolls back everything
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO order_status VALUES ('order-1', 'paid')`)
		return err
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	for e, err := range events.ReadStream(ctx, "order-1") {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(e.Version, e.Type, string(e.Data))
	}
	// Output:
	// placed at version 1
	// 1 OrderPlaced {"total":42}
	// 2 OrderPaid {}
}

// A throwaway database for a test: private to this DB, deleted by Close.
func ExampleOpen_memory() {
	db, err := sqlite.Open(sqlite.Memory, sqlite.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.Events().Append(ctx, "cart-1", []recado.Event{
		recado.NewEvent("ItemAdded", []byte(`{"sku":"tea"}`)),
	}); err != nil {
		fmt.Println(err)
		return
	}
	for e, err := range db.Events().ReadAll(ctx, recado.Position{}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(e.Stream, e.Version, e.Type)
	}
	// Output:
	// cart-1 1 ItemAdded
}

// After an error that made SQLite roll the transaction back (here a
// statement's INSERT OR ROLLBACK; a full disk or an interrupted write do the
// same), every later call of the unit of work fails and nothing commits.
func ExampleDB_Tx_aborted() {
	db, err := sqlite.Open(sqlite.Memory, sqlite.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	ctx := context.Background()
	err = db.Tx(ctx, func(tx *sqlite.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE seen (id TEXT PRIMARY KEY)`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO seen VALUES ('a')`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT OR ROLLBACK INTO seen VALUES ('a')`)
		fmt.Println("duplicate:", errors.Is(err, sqlite.ErrTxAborted))
		// Carrying on is refused: this would otherwise commit on its own.
		_, err = tx.ExecContext(ctx, `INSERT INTO seen VALUES ('b')`)
		fmt.Println("next statement:", errors.Is(err, sqlite.ErrTxAborted))
		return nil
	})
	fmt.Println("Tx:", errors.Is(err, sqlite.ErrTxAborted))
	// Output:
	// duplicate: true
	// next statement: true
	// Tx: true
}

// placeOrder is generic code: it takes any backend's unit of work and the
// event store of the same DB, without importing the backend.
func placeOrder[T recado.Tx](ctx context.Context, u recado.UnitOfWork[T], events *eventstore.Store, id string) error {
	return u.Tx(ctx, func(tx T) error {
		tx.OnCommit(func() { fmt.Println("committed: tell the customer about", id) })
		_, err := events.Append(ctx, "order-"+id, []recado.Event{
			recado.NewEvent("OrderPlaced", []byte(`{}`)),
		}, eventstore.Expect(eventstore.NoStream), eventstore.InTx(tx))
		return err
	})
}

// A *sqlite.DB is a recado.UnitOfWork[*sqlite.Tx]. Functions given to
// OnCommit run once the unit of work has committed, never after a rollback.
func Example_unitOfWork() {
	db, err := sqlite.Open(sqlite.Memory, sqlite.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	ctx := context.Background()
	fmt.Println(placeOrder(ctx, db, db.Events(), "42"))
	err = placeOrder(ctx, db, db.Events(), "42") // the stream exists: rolled back
	fmt.Println(errors.Is(err, eventstore.ErrConflict))
	st, err := db.Events().State(ctx, "order-42")
	fmt.Println(st.Version, st.Exists, err)
	// Output:
	// committed: tell the customer about 42
	// <nil>
	// true
	// 1 true <nil>
}
