package sqlite

import (
	"fmt"
	"net/url"
	"strings"

	// The pure-Go SQLite driver (no cgo). It registers the database/sql
	// driver "sqlite" in its own init; recado registers nothing.
	_ "modernc.org/sqlite"
)

// driverName is the database/sql driver recado uses. docs/benchmarks-sqlite.md
// says why this one (the comparison runs with -tags sqlite_ncruces).
const driverName = "sqlite"

// dsn returns the URI that opens path with the given pragmas. Both pure-Go
// drivers accept the same form: a "file:" URI whose _pragma parameters run on
// every new connection, busy_timeout first.
func dsn(path string, pragmas ...string) string {
	q := make(url.Values, 2)
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	// Writes start with BEGIN IMMEDIATE: a deferred transaction that later wants
	// to write could fail with SQLITE_BUSY instead of waiting.
	q.Set("_txlock", "immediate")
	return "file:" + escapePath(path) + "?" + q.Encode()
}

// escapePath escapes the characters a SQLite URI path cannot hold as they are.
func escapePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

func pragma(name string, value any) string { return fmt.Sprintf("%s(%v)", name, value) }
