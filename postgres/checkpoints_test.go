package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/projection"
	"github.com/recado-dev/recado/projection/checkpoint"
	"github.com/recado-dev/recado/projection/checkpoint/checkpointtest"
	"github.com/recado-dev/recado/projection/checkpoint/driver"
	"github.com/recado-dev/recado/projection/projectiontest"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/resiliencetest"
)

func TestCheckpoints(t *testing.T) {
	testURL(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			checkpointtest.Run(t, func(tb testing.TB, cfg checkpoint.Config) checkpointtest.Backend {
				return checkpointBackend(tb, cfg, m.configure)
			})
		})
	}
}

func checkpointBackend(tb testing.TB, cfg checkpoint.Config, configure func(*pgxpool.Config)) checkpointtest.Backend {
	db, reopen := storeDB(tb, configure)
	var backend func(db *DB) checkpointtest.Backend
	backend = func(db *DB) checkpointtest.Backend {
		return checkpointtest.Backend{Store: db.Checkpoints(cfg), Tx: eventstoretest.UnitOfWork(db),
			Reopen: func() checkpointtest.Backend { return backend(reopen()) }}
	}
	return backend(db)
}

// projectionBackend is db's stores for the projection runner, on the clock
// now.
func projectionBackend(db *DB, now func() time.Time) projectiontest.Backend {
	return projectiontest.Backend{
		Stores: projection.Stores{
			Events:      db.Events(),
			Checkpoints: db.Checkpoints(checkpoint.Config{Now: now}),
			Leases:      db.Leases(lease.Config{Now: now}),
			DeadLetters: db.DeadLetters(deadletter.Config{Now: now}),
		},
		Tx: eventstoretest.UnitOfWork(db),
	}
}

func TestProjections(t *testing.T) {
	testURL(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			projectiontest.Run(t, func(tb testing.TB, now func() time.Time) projectiontest.Backend {
				db, _ := storeDB(tb, m.configure)
				return projectionBackend(db, now)
			})
		})
	}
}

// TestCheckpointUpgradeNoDeadlock: two changes that both read a
// projection's row (under the shared lock) before either writes it do not
// deadlock: the first to write starts again from its savepoint with the
// row locked exclusively, and each sees the other's write (no update is
// lost). In units of work and in transactions of their own.
func TestCheckpointUpgradeNoDeadlock(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	if _, err := db.Checkpoints(checkpoint.Config{}).Register(ctx, "orders", 1); err != nil {
		t.Fatal(err)
	}
	c := newCheckpoints(db)
	for _, inUnit := range []bool{true, false} {
		t.Run(fmt.Sprintf("unit=%v", inUnit), func(t *testing.T) {
			before, _, err := c.Get(ctx, "orders")
			if err != nil {
				t.Fatal(err)
			}
			var read sync.WaitGroup // both have read the row before either writes
			read.Add(2)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			runs := make([]int, 2)
			for i := range 2 {
				wg.Go(func() {
					fn := func(w driver.Writer) error {
						runs[i]++
						p, found, err := w.Get("orders")
						if err != nil || !found {
							return fmt.Errorf("Get: %v, %v", found, err)
						}
						if runs[i] == 1 {
							read.Done()
							read.Wait()
						}
						p.Retiring++
						return w.Put(p)
					}
					if !inUnit {
						errs[i] = c.Update(ctx, nil, fn)
						return
					}
					errs[i] = db.Tx(ctx, func(tx *Tx) error { return c.Update(ctx, tx, fn) })
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("change %d: %v", i, err)
				}
			}
			after, _, err := c.Get(ctx, "orders")
			if err != nil || after.Retiring != before.Retiring+2 {
				t.Errorf("Retiring went from %d to %d (%v), want +2", before.Retiring, after.Retiring, err)
			}
			if runs[0]+runs[1] < 3 {
				t.Errorf("runs of fn = %v, want one of them started again", runs)
			}
		})
	}
}

// TestCheckpointSavesSideBySide: units of work of two partitions hold their
// saves at once; a swap waits for both to end, and then finds the copy it
// replaces no longer saved by them.
func TestCheckpointSavesSideBySide(t *testing.T) {
	dbs, apps := twoDBs(t)
	ctx := t.Context()
	stores := [2]*checkpoint.Store{dbs[0].Checkpoints(checkpoint.Config{}), dbs[1].Checkpoints(checkpoint.Config{})}
	if _, err := stores[0].Register(ctx, "orders", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[0].Rebuild(ctx, "orders", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[0].Save(ctx, nil, checkpoint.Checkpoint{Name: "orders", Copy: 2, Position: recado.NewPosition(9, 0), CaughtUp: true}); err != nil {
		t.Fatal(err)
	}

	saved := make(chan int, 2)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			err := dbs[0].Tx(ctx, func(tx *Tx) error {
				if _, err := stores[0].Save(ctx, tx, checkpoint.Checkpoint{Name: "orders", Copy: 1, Partition: i,
					Position: recado.NewPosition(uint64(5+i), 0)}); err != nil {
					return err
				}
				saved <- i
				<-release
				return nil
			})
			if err != nil {
				t.Errorf("unit of work of partition %d: %v", i, err)
			}
		})
	}
	<-saved
	<-saved // both units hold their saves: neither waited for the other
	swapped := make(chan error, 1)
	go func() {
		_, err := stores[1].Swap(ctx, nil, "orders", 2)
		swapped <- err
	}()
	waitUntil(t, "the swap waits for the units of work in flight", func() bool { return waitingForLock(t, apps[1]) })
	select {
	case err := <-swapped:
		t.Fatalf("Swap returned while saves of the copy it replaces were in flight: %v", err)
	default:
	}
	close(release)
	wg.Wait()
	if err := <-swapped; err != nil {
		t.Fatalf("Swap: %v", err)
	}
	p, err := stores[1].Get(ctx, "orders")
	if err != nil || p.Active.Number != 2 || p.Retiring != 1 {
		t.Errorf("after the swap: %+v, %v; want copy 2 active, 1 retiring", p, err)
	}
	var n int
	if err := dbs[0].pool.QueryRow(ctx, "SELECT count(*) FROM "+dbs[0].schema+".projection_checkpoints WHERE copy = 1").Scan(&n); err != nil || n != 0 {
		t.Errorf("checkpoints of the replaced copy = %d, %v; want none", n, err)
	}
	if _, err := stores[0].Save(ctx, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: recado.NewPosition(7, 0)}); !errors.Is(err, checkpoint.ErrRetired) {
		t.Errorf("Save to the replaced copy = %v, want ErrRetired", err)
	}
}

// TestCheckpointInsertRaces: a first save that meets the row another unit
// of work is inserting waits for it, and decides on what it committed (a
// position before it is refused), or inserts its own if it rolled back. Of
// concurrent Registers from two DBs with different partitions, one record
// is made and every caller gets it.
func TestCheckpointInsertRaces(t *testing.T) {
	dbs, apps := twoDBs(t)
	ctx := t.Context()
	stores := [2]*checkpoint.Store{dbs[0].Checkpoints(checkpoint.Config{}), dbs[1].Checkpoints(checkpoint.Config{})}
	if _, err := stores[0].Register(ctx, "orders", 2); err != nil {
		t.Fatal(err)
	}
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			partition := 0
			if !commit {
				partition = 1
			}
			cp := func(major uint64) checkpoint.Checkpoint {
				return checkpoint.Checkpoint{Name: "orders", Copy: 1, Partition: partition, Position: recado.NewPosition(major, 0)}
			}
			second := make(chan error, 1)
			errRollback := errors.New("roll back")
			err := dbs[0].Tx(ctx, func(tx *Tx) error {
				if _, err := stores[0].Save(ctx, tx, cp(5)); err != nil {
					return err
				}
				go func() {
					_, err := stores[1].Save(ctx, nil, cp(3))
					second <- err
				}()
				waitUntil(t, "the second save waits for the first's insert", func() bool { return waitingForLock(t, apps[1]) })
				if !commit {
					return errRollback
				}
				return nil
			})
			if err != nil && !errors.Is(err, errRollback) {
				t.Fatal(err)
			}
			err = <-second
			cps, cerr := stores[1].Checkpoints(ctx, "orders", 1)
			if cerr != nil {
				t.Fatal(cerr)
			}
			got := cps[partition].Position
			switch {
			case commit && (!errors.Is(err, checkpoint.ErrBackwards) || got != recado.NewPosition(5, 0)):
				t.Errorf("second save = %v, checkpoint %s; want ErrBackwards, the first's 5/0", err, got)
			case !commit && (err != nil || got != recado.NewPosition(3, 0)):
				t.Errorf("second save = %v, checkpoint %s; want its own 3/0", err, got)
			}
		})
	}

	var mu sync.Mutex
	var records []checkpoint.Projection
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			p, err := stores[i%2].Register(ctx, "invoices", 1+i)
			if err != nil {
				t.Errorf("Register %d: %v", i, err)
				return
			}
			mu.Lock()
			records = append(records, p)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, p := range records {
		if p.Active != records[0].Active || p.Updated != records[0].Updated {
			t.Fatalf("concurrent Registers returned %+v and %+v, want one record", records[0], p)
		}
	}
	if names, err := stores[1].Names(ctx); err != nil || !slices.Equal(names, []string{"invoices", "orders"}) {
		t.Errorf("Names = %v, %v", names, err)
	}
}

// TestCheckpointChangedOnUnitCommit: Changed wakes after a unit of work
// that saved a checkpoint commits, not before, and not after one that rolls
// back.
func TestCheckpointChangedOnUnitCommit(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	s := db.Checkpoints(checkpoint.Config{})
	if _, err := s.Register(ctx, "orders", 1); err != nil {
		t.Fatal(err)
	}
	save := func(tx *Tx, major uint64) error {
		_, err := s.Save(ctx, tx, checkpoint.Checkpoint{Name: "orders", Copy: 1, Position: recado.NewPosition(major, 0)})
		return err
	}
	woken := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	errRollback := errors.New("roll back")
	ch := s.Changed()
	err := db.Tx(ctx, func(tx *Tx) error {
		if err := save(tx, 1); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) || woken(ch) {
		t.Fatalf("a rolled-back save: %v, woken %v; want no wake-up", err, woken(ch))
	}
	err = db.Tx(ctx, func(tx *Tx) error {
		if err := save(tx, 2); err != nil {
			return err
		}
		if woken(ch) {
			t.Error("Changed woke before the unit of work committed")
		}
		return nil
	})
	if err != nil || !woken(ch) {
		t.Errorf("a committed save: %v, woken %v; want a wake-up", err, woken(ch))
	}
	ch = s.Changed()
	db.Close()
	if !woken(ch) || !woken(s.Changed()) {
		t.Error("Changed does not wake on Close")
	}
	if _, err := s.Get(ctx, "orders"); !errors.Is(err, checkpoint.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Save(ctx, nil, checkpoint.Checkpoint{Name: "orders", Copy: 1}); !errors.Is(err, checkpoint.ErrClosed) {
		t.Errorf("Save after Close = %v, want ErrClosed", err)
	}
}

// BenchmarkProjection runs projectiontest.Bench. The transactional read
// model is a row per event in a table of the DB's schema, inserted in the
// runner's unit of work: one INSERT per event (CatchUp/ToReadModel), or one
// per unit of work with the events' columns as arrays
// (CatchUp/ToReadModelBatch, the PostgresToPostgres).
func BenchmarkProjection(b *testing.B) {
	testURL(b)
	projectiontest.Bench(b, func(tb testing.TB) projectiontest.BenchBackend {
		db := openTest(tb, Options{})
		table := db.schema + ".bench_read_model"
		if _, err := db.pool.Exec(tb.Context(), `CREATE TABLE `+table+` (projection text, copy bigint, id text,
stream text NOT NULL, version bigint NOT NULL, PRIMARY KEY (projection, copy, id))`); err != nil {
			tb.Fatal(err)
		}
		insert := `INSERT INTO ` + table + ` (projection, copy, id, stream, version) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`
		insertMany := `INSERT INTO ` + table + ` (projection, copy, id, stream, version)
SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::bigint[]) ON CONFLICT DO NOTHING`
		return projectiontest.BenchBackend{
			Backend: projectionBackend(db, time.Now),
			Apply: func(ctx context.Context, tx recado.Tx, e projection.Event) error {
				tag, err := tx.(*Tx).Exec(ctx, insert, e.Projection, int64(e.Copy), e.ID, e.Stream, int64(e.Version))
				if err == nil && tag.RowsAffected() != 1 {
					err = fmt.Errorf("event %s applied twice", e.ID)
				}
				return err
			},
			ApplyBatch: func(ctx context.Context, tx recado.Tx, events []projection.Event) error {
				ids, streams, versions := make([]string, len(events)), make([]string, len(events)), make([]int64, len(events))
				for i, e := range events {
					ids[i], streams[i], versions[i] = e.ID, e.Stream, int64(e.Version)
				}
				e := events[0]
				tag, err := tx.(*Tx).Exec(ctx, insertMany, e.Projection, int64(e.Copy), ids, streams, versions)
				if err == nil && tag.RowsAffected() != int64(len(events)) {
					err = fmt.Errorf("%d of %d events applied before", int64(len(events))-tag.RowsAffected(), len(events))
				}
				return err
			},
		}
	})
}

// priceModel is a read model of a row per event with a positive price, a
// CHECK of its table: a BatchHandler whose multi-row insert fails as a
// whole when one event is bad.
type priceModel struct {
	table   string
	batches atomic.Int64 // ApplyBatch calls that succeeded
}

func (m *priceModel) Apply(ctx context.Context, tx *Tx, e projection.Event) error {
	return m.ApplyBatch(ctx, tx, []projection.Event{e})
}

func (m *priceModel) ApplyBatch(ctx context.Context, tx *Tx, events []projection.Event) error {
	ids, streams, versions, prices := []string{}, []string{}, []int64{}, []int64{}
	for _, e := range events {
		var v struct{ Price int64 }
		if err := json.Unmarshal(e.Data, &v); err != nil {
			return err
		}
		ids, streams, versions, prices = append(ids, e.ID), append(streams, e.Stream), append(versions, int64(e.Version)), append(prices, v.Price)
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+m.table+` SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])`,
		ids, streams, versions, prices)
	if err == nil && len(events) > 1 {
		m.batches.Add(1)
	}
	return err
}

// TestProjectionBatchFails: a BatchHandler's insert that PostgreSQL refuses
// (a CHECK fails on one event) ends the unit's transaction; the runner
// applies the events one at a time in new units, the bad event goes to the
// dead-letter queue with its stream's next event parked behind it, and
// every other event is in the read model once. Later batches are written
// whole again.
func TestProjectionBatchFails(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	m := &priceModel{table: db.schema + ".prices"}
	if _, err := db.pool.Exec(ctx, `CREATE TABLE `+m.table+` (id text PRIMARY KEY, stream text NOT NULL, version bigint NOT NULL,
price bigint NOT NULL CHECK (price > 0))`); err != nil {
		t.Fatal(err)
	}
	prices := func(stream string, ps ...int) eventstore.AppendResult {
		events := make([]recado.Event, len(ps))
		for i, p := range ps {
			events[i] = recado.NewEvent("Priced", fmt.Appendf(nil, `{"price": %d}`, p))
		}
		res, err := db.Events().Append(ctx, stream, events)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	prices("order-1", 10, 20, 30, 40, 50)
	prices("order-2", 10, -1, 30)
	res := prices("order-3", 10, 20, 30, 40)
	be := projectionBackend(db, time.Now)
	r, err := projection.NewRunner(db, be.Stores, projection.Options[*Tx]{Name: "prices", Handler: m,
		PollInterval: 10 * time.Millisecond, Retry: resilience.RetryConfig{MaxAttempts: 2},
		Clock: resiliencetest.NewAutoClock(time.Now())})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	wait, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := r.WaitFor(wait, res.LastPosition); err != nil {
		t.Fatal(err)
	}
	res = prices("order-4", 1, 2, 3)
	if err := r.WaitFor(wait, res.LastPosition); err != nil {
		t.Fatal(err)
	}
	rows, err := db.pool.Query(ctx, `SELECT stream, count(*), string_agg(version::text, ',' ORDER BY version) FROM `+m.table+` GROUP BY 1 ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
		var stream, versions string
		var n int
		err := row.Scan(&stream, &n, &versions)
		return fmt.Sprintf("%s:%s", stream, versions), err
	})
	want := []string{"order-1:1,2,3,4,5", "order-2:1", "order-3:1,2,3,4", "order-4:1,2,3"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("read model = %v, %v; want %v", got, err, want)
	}
	letters, err := be.Stores.DeadLetters.List(ctx, deadletter.Query{Source: projection.Source("prices", 1)})
	if err != nil || len(letters) != 2 || letters[0].Message.Version != 2 || letters[0].State != deadletter.Failed ||
		letters[1].State != deadletter.Parked {
		t.Errorf("letters = %+v, %v; want order-2's version 2 failed and version 3 parked", letters, err)
	}
	if m.batches.Load() == 0 {
		t.Error("no batch was written whole")
	}
}
