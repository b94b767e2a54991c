package postgres

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// throwaway creates a database (and, with roleSettings, a login role owning
// it) with the given settings, both dropped when t ends, and returns a pool
// config for it: for tests of database- and role-level settings, which must
// never be changed on the shared test database.
func throwaway(t *testing.T, dbSettings, roleSettings []string) *pgxpool.Config {
	t.Helper()
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	name := "recado_test_" + appName()[len("recado-test-"):]
	role := ""
	run := func(sql string) {
		t.Helper()
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	owner := ""
	if roleSettings != nil {
		role = name + "_role"
		run("CREATE ROLE " + role + " LOGIN")
		for _, s := range roleSettings {
			run("ALTER ROLE " + role + " SET " + s)
		}
		owner = " OWNER " + role
	}
	run("CREATE DATABASE " + name + owner)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testURL(t))
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		if role != "" {
			if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+role); err != nil {
				t.Errorf("drop role %s: %v", role, err)
			}
		}
	})
	for _, s := range dbSettings {
		run("ALTER DATABASE " + name + " SET " + s)
	}
	cfg, err := pgxpool.ParseConfig(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database = name
	if role != "" {
		cfg.ConnConfig.User = role
	}
	return cfg
}

func poolFor(t *testing.T, cfg *pgxpool.Config) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg.Copy())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestAppendsIgnoreSessionDefaults: recado's own transactions set their
// isolation and timeouts, so a database whose default isolation is
// serializable, or a role with a short lock_timeout, does not fail plain
// appends: DBs of several processes append concurrently to shared streams and
// every append succeeds. (Six DBs on two hot streams: under serializable
// isolation a group commit fails with 40001 more often than it may retry.)
func TestAppendsIgnoreSessionDefaults(t *testing.T) {
	tests := []struct {
		name             string
		dbSettings, role []string
	}{
		{name: "SerializableDatabase", dbSettings: []string{"default_transaction_isolation = 'serializable'"}},
		{name: "RepeatableReadDatabase", dbSettings: []string{"default_transaction_isolation = 'repeatable read'"}},
		{name: "RoleTimeouts", role: []string{"lock_timeout = '1ms'", "idle_in_transaction_session_timeout = '1ms'",
			"statement_timeout = '1h'"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := throwaway(t, tc.dbSettings, tc.role)
			var dbs []*DB
			for range 6 {
				dbs = append(dbs, openOn(t, poolFor(t, cfg), Options{}))
			}
			a := dbs[0]
			ctx := t.Context()
			// What the group commit's transaction runs with.
			var settings atomic.Pointer[string]
			a.events.hooks.beforeWrite = func(conn *pgx.Conn) {
				var got string
				err := conn.QueryRow(ctx, `SELECT concat_ws(' ', current_setting('transaction_isolation'),
current_setting('lock_timeout'), current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout'))`).Scan(&got)
				if err != nil {
					got = err.Error()
				}
				settings.Store(&got)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 48)
			for g := range 48 {
				s := dbs[g%len(dbs)].Events()
				wg.Go(func() {
					for i := range 20 {
						stream := fmt.Sprintf("shared-%d", (g+i)%2)
						if _, err := s.Append(ctx, stream, testEvents("E", 1+i%3)); err != nil {
							errs <- fmt.Errorf("writer %d append %d to %s: %w", g, i, stream, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			n := 0
			for _, stream := range []string{"shared-0", "shared-1"} {
				got, err := collect(a.Events().ReadStream(ctx, stream))
				if err != nil {
					t.Fatal(err)
				}
				n += len(got)
			}
			if want := 48 * (7*1 + 7*2 + 6*3); n != want && !t.Failed() {
				t.Errorf("the shared streams hold %d events, want %d", n, want)
			}
			want := fmt.Sprintf("read committed %dms 0 0", groupLockWait.Milliseconds())
			if got := settings.Load(); got == nil || *got != want {
				t.Errorf("a group commit's isolation and lock, statement and idle timeouts = %v, want %q", got, want)
			}
		})
	}
}
