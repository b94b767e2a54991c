package sqlite

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/ncruces/go-sqlite3"
	// The database/sql driver over the same library (SQLite compiled to Wasm
	// and translated to Go: pure Go, no cgo). Importing it registers the
	// database/sql driver "sqlite3" in its own init; recado registers nothing.
	"github.com/ncruces/go-sqlite3/driver"
)

// driverName is the database/sql driver of the writer connection, which the
// unit of work ([Tx]) exposes to users' own tables. The hot statements (reads,
// group commit) run on the same library's direct API below database/sql.
// docs/benchmarks.md (SQLite) says why this driver.
const driverName = "sqlite3"

// dsn returns the URI that opens path with the given pragmas. Both the
// database/sql driver and sqlite3.Open run the _pragma parameters on every new
// connection, in order (busy_timeout first).
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

// rawConn returns the library's connection under a database/sql connection of
// driverName.
func rawConn(dc any) (*sqlite3.Conn, error) {
	c, ok := dc.(driver.Conn)
	if !ok {
		return nil, fmt.Errorf("database/sql connection %T is not one of github.com/ncruces/go-sqlite3/driver", dc)
	}
	return c.Raw(), nil
}

// prepare prepares each query on c into its destination, closing the ones
// already prepared if one fails.
func prepare(c *sqlite3.Conn, stmts []stmtDef) error {
	for i, p := range stmts {
		st, tail, err := c.Prepare(p.query)
		if err == nil && strings.TrimSpace(tail) != "" {
			st.Close()
			err = fmt.Errorf("trailing SQL %q", tail)
		}
		if err != nil {
			for _, done := range stmts[:i] {
				(*done.dst).Close()
				*done.dst = nil
			}
			return fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.dst = st
	}
	return nil
}

// stmtDef is a statement to prepare and where to keep it.
type stmtDef struct {
	dst   **sqlite3.Stmt
	query string
}

// closeStmts closes every statement (nil ones are fine).
func closeStmts(stmts ...*sqlite3.Stmt) error {
	var first error
	for _, st := range stmts {
		if err := st.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
