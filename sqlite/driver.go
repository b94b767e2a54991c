package sqlite

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/ncruces/go-sqlite3"
)

// The driver is github.com/ncruces/go-sqlite3 (SQLite compiled to Wasm and
// translated to Go: pure Go, no cgo), used through its direct API: the hot
// statements (reads, group commit) directly, the unit of work through
// database/sql over the same API (sqlconn.go). docs/benchmarks.md (SQLite) says
// why this driver.

// dsn returns the URI that opens path with the given pragmas; sqlite3.Open runs
// the _pragma parameters on every new connection, in order (busy_timeout
// first).
func dsn(path string, pragmas ...string) string {
	q := make(url.Values, 2)
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	return "file:" + escapePath(path) + "?" + q.Encode()
}

// escapePath escapes the characters a SQLite URI path cannot hold as they are.
func escapePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

func pragma(name string, value any) string { return fmt.Sprintf("%s(%v)", name, value) }

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
