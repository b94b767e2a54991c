package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// FuzzSchemaName opens a DB in a schema of any name. A name PostgreSQL cannot
// hold is refused by Open; any other opens a schema of exactly that name in
// which appends and reads work, and no part of the name ever runs as SQL (the
// seeds try to advance a probe sequence, as an attacker would).
func FuzzSchemaName(f *testing.F) {
	url := testURL(f)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { admin.Close(context.Background()) })
	probeSchema := newSchema(f)
	probe := pgx.Identifier{probeSchema, "probe"}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{probeSchema}.Sanitize()+"; CREATE SEQUENCE "+probe); err != nil {
		f.Fatal(err)
	}
	probeLit := probeSchema + ".probe"
	for _, seed := range []string{
		"recado_fuzz",
		"rv'||nextval('" + probeLit + "')::text||'",
		"x')||nextval('" + probeLit + "')||('",
		`x\'||nextval('` + probeLit + `')||'`,
		"a'b", `a"b`, `a\b`, `"`, `'`, `\`, "a b", "$S", "%[1]s", "%s%d", "a;b", "--", "/*",
		"Café ☕", "UPPER", "tab\there", "line\nbreak",
		strings.Repeat("s", 63), strings.Repeat("é", 31) + "x",
		strings.Repeat("s", 64), strings.Repeat("é", 32),
		"nul\x00byte", "bad\xffutf8", "pg_reserved", "PG_upper",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if name == "" {
			return // the default schema, not a name under test
		}
		if _, err := admin.Exec(ctx, "SELECT setval($1, 1, false)", probe); err != nil {
			t.Fatal(err)
		}
		pool := newPool(t, "")
		db, err := Open(ctx, pool, Options{Schema: name})
		if reason := badSchemaName(name); reason != "" {
			if err == nil {
				db.Close()
				dropSchema(t, admin, name)
				t.Fatalf("Open(%q) succeeded; want it refused (%s)", name, reason)
			}
			if !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("Open(%q) = %v; want an error wrapping ErrInvalid", name, err)
			}
			return
		}
		t.Cleanup(func() { dropSchema(t, admin, name) })
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		defer db.Close()
		var exists bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", name).Scan(&exists); err != nil || !exists {
			t.Errorf("schema %q exists = %v, %v; want a schema of exactly that name", name, exists, err)
		}
		events := testEvents("E", 2)
		res, err := db.Events().Append(ctx, "s", events)
		if err != nil {
			t.Fatalf("schema %q: Append: %v", name, err)
		}
		got, err := collect(db.Events().ReadAll(ctx, recado.Position{}))
		if err != nil || len(got) != 2 || got[1].Position != res.LastPosition {
			t.Errorf("schema %q: ReadAll = %d events, %v; want the 2 appended", name, len(got), err)
		}
		var called bool
		if err := admin.QueryRow(ctx, "SELECT is_called FROM "+probe).Scan(&called); err != nil || called {
			t.Errorf("schema %q: the probe sequence was advanced (%v, %v): the name ran as SQL", name, called, err)
		}
	})
}

// badSchemaName says why PostgreSQL cannot hold name as a schema name, or
// returns "".
func badSchemaName(name string) string {
	switch {
	case len(name) > 63:
		return "longer than 63 bytes"
	case !utf8.ValidString(name):
		return "not UTF-8"
	case strings.IndexByte(name, 0) >= 0:
		return "NUL byte"
	case strings.HasPrefix(name, "pg_"):
		return "pg_ prefix"
	}
	return ""
}

func dropSchema(t *testing.T, conn *pgx.Conn, name string) {
	if _, err := conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("drop schema %q: %v", name, err)
	}
}

// TestOpenRefusesNewerSchema: a schema migrated by a newer recado (a version
// this code does not know) is refused at Open, before anything is written.
func TestOpenRefusesNewerSchema(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	if _, err := db.pool.Exec(ctx, "INSERT INTO "+db.schema+".schema_versions (contract, version) VALUES ('eventstore', 99)"); err != nil {
		t.Fatal(err)
	}
	other, err := Open(ctx, db.pool, Options{Schema: db.opts.Schema})
	if err == nil {
		other.Close()
		t.Fatal("Open of a schema newer than the code succeeded")
	}
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "99") {
		t.Errorf("Open error = %v, want ErrSchemaTooNew naming version 99", err)
	}
}
