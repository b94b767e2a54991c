package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// The unit of work ([Tx]) is database/sql over the writer connection, so that
// it is used like any *sql.Tx. database/sql is reached through sql.OpenDB and
// the connector below, over the library's direct API, and no driver is
// registered: a package that claimed the global name "sqlite3" (as the
// library's own database/sql driver does when imported) would make every
// application that also imports another SQLite driver panic at start.
//
// The connector does what the unit of work needs and no more: statements with
// positional or named parameters; int64, float64, bool, string, []byte,
// time.Time (stored as RFC 3339 text) and nil values; columns declared
// BOOLEAN scan as bool and columns declared DATE, DATETIME, TIMESTAMP or
// TIME as time.Time. A statement runs until its context ends: SQLite is
// interrupted then.

// connector opens connections to one URI. It satisfies driver.Connector.
type connector struct{ uri string }

func (c connector) Connect(ctx context.Context) (driver.Conn, error) {
	raw, err := sqlite3.OpenContext(ctx, c.uri)
	if err != nil {
		return nil, err
	}
	return &sqlConn{raw: raw}, nil
}

// Driver is required of a driver.Connector; nothing registers it.
func (c connector) Driver() driver.Driver { return sqlDriver{} }

type sqlDriver struct{}

func (sqlDriver) Open(uri string) (driver.Conn, error) {
	return connector{uri}.Connect(context.Background())
}

// openSQL returns a database/sql handle of one connection to uri.
func openSQL(uri string) *sql.DB {
	db := sql.OpenDB(connector{uri})
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	return db
}

// sqlConn is a database/sql connection over the direct API's connection.
type sqlConn struct {
	raw *sqlite3.Conn
	// lastErr is the last error a statement returned, so that a Tx can name
	// the error that ended its transaction even when it surfaced while the
	// caller stepped through rows.
	lastErr error
}

var (
	_ driver.ConnPrepareContext = (*sqlConn)(nil)
	_ driver.ConnBeginTx        = (*sqlConn)(nil)
	_ driver.ExecerContext      = (*sqlConn)(nil)
)

// asSQLConn returns the connection under a database/sql connection opened by
// openSQL (the argument of sql.Conn.Raw's function).
func asSQLConn(dc any) (*sqlConn, error) {
	c, ok := dc.(*sqlConn)
	if !ok {
		return nil, fmt.Errorf("database/sql connection %T is not one of package sqlite", dc)
	}
	return c, nil
}

// rawConn returns the library's connection under a database/sql connection
// opened by openSQL.
func rawConn(dc any) (*sqlite3.Conn, error) {
	c, err := asSQLConn(dc)
	if err != nil {
		return nil, err
	}
	return c.raw, nil
}

func (c *sqlConn) Close() error { return c.raw.Close() }

// errNoSQLTx: transactions are begun by SQL statements on the writer (group
// commit, DB.Tx, migrations), never through database/sql.
var errNoSQLTx = errors.New("sqlite: database/sql transactions are not used here: use DB.Tx")

func (c *sqlConn) Begin() (driver.Tx, error) { return nil, errNoSQLTx }

func (c *sqlConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) {
	return nil, errNoSQLTx
}

func (c *sqlConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *sqlConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	defer c.raw.SetInterrupt(c.raw.SetInterrupt(ctx))
	st, tail, err := c.raw.Prepare(query)
	if err != nil {
		return nil, err
	}
	if st == nil { // only whitespace or comments
		return nil, errors.New("sqlite: empty statement")
	}
	if more, _, err := c.raw.Prepare(tail); more != nil || err != nil { // what follows is more than comments
		if more != nil {
			more.Close()
		}
		st.Close()
		return nil, fmt.Errorf("sqlite: more than one statement in a query with arguments or rows: %q", tail)
	}
	return &sqlStmt{c: c, st: st}, nil
}

// ExecContext runs statements without arguments directly, so that a script
// of several statements works; with arguments database/sql prepares one.
func (c *sqlConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if len(args) > 0 {
		return nil, driver.ErrSkip
	}
	defer c.raw.SetInterrupt(c.raw.SetInterrupt(ctx))
	c.raw.SetLastInsertRowID(0)
	before := c.raw.TotalChanges()
	if err := c.raw.Exec(query); err != nil {
		c.lastErr = err
		return nil, err
	}
	return sqlResult{id: c.raw.LastInsertRowID(), rows: c.raw.TotalChanges() - before}, nil
}

type sqlResult struct{ id, rows int64 }

func (r sqlResult) LastInsertId() (int64, error) { return r.id, nil }
func (r sqlResult) RowsAffected() (int64, error) { return r.rows, nil }

type sqlStmt struct {
	c  *sqlConn
	st *sqlite3.Stmt
}

var (
	_ driver.StmtExecContext  = (*sqlStmt)(nil)
	_ driver.StmtQueryContext = (*sqlStmt)(nil)
)

func (s *sqlStmt) Close() error { return s.st.Close() }

// NumInput lets database/sql check the count of positional arguments; with
// named or numbered parameters SQLite's binding does.
func (s *sqlStmt) NumInput() int {
	n := s.st.BindCount()
	for i := 1; i <= n; i++ {
		if s.st.BindName(i) != "" {
			return -1
		}
	}
	return n
}

func (s *sqlStmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *sqlStmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

func named(args []driver.Value) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, v := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return nv
}

func (s *sqlStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if err := s.bind(args); err != nil {
		return nil, err
	}
	c := s.c.raw
	defer c.SetInterrupt(c.SetInterrupt(ctx))
	c.SetLastInsertRowID(0)
	before := c.TotalChanges()
	err := s.st.Exec()
	if cerr := s.st.ClearBindings(); err == nil {
		err = cerr
	}
	if err != nil {
		s.c.lastErr = err
		return nil, err
	}
	return sqlResult{id: c.LastInsertRowID(), rows: c.TotalChanges() - before}, nil
}

func (s *sqlStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if err := s.bind(args); err != nil {
		return nil, err
	}
	return &sqlRows{ctx: ctx, s: s}, nil
}

// bind binds each argument by position or by name (:name, @name or $name).
func (s *sqlStmt) bind(args []driver.NamedValue) error {
	for _, a := range args {
		i := a.Ordinal
		if a.Name != "" {
			i = 0
			for _, prefix := range []string{":", "@", "$"} {
				if i = s.st.BindIndex(prefix + a.Name); i != 0 {
					break
				}
			}
			if i == 0 {
				return fmt.Errorf("sqlite: no parameter named %q", a.Name)
			}
		}
		var err error
		switch v := a.Value.(type) {
		case nil:
			err = s.st.BindNull(i)
		case int64:
			err = s.st.BindInt64(i, v)
		case float64:
			err = s.st.BindFloat(i, v)
		case bool:
			err = s.st.BindBool(i, v)
		case string:
			err = s.st.BindText(i, v)
		case []byte:
			err = s.st.BindBlob(i, v)
		case time.Time:
			err = s.st.BindTime(i, v, sqlite3.TimeFormatDefault)
		default:
			err = fmt.Errorf("sqlite: unsupported argument type %T", v)
		}
		if err != nil {
			return fmt.Errorf("sqlite: bind argument %d: %w", a.Ordinal, err)
		}
	}
	return nil
}

type sqlRows struct {
	ctx    context.Context
	s      *sqlStmt
	names  []string
	decl   []columnKind // per column, found on the first row
	failed bool         // Next returned an error: Close does not repeat it
}

// columnKind is how a column's declared type asks its values to scan.
type columnKind uint8

const (
	asStored columnKind = iota
	asBool              // BOOLEAN
	asTime              // DATE, DATETIME, TIMESTAMP, TIME
)

func (r *sqlRows) Columns() []string {
	if r.names == nil {
		r.names = make([]string, r.s.st.ColumnCount())
		for i := range r.names {
			r.names[i] = r.s.st.ColumnName(i)
		}
	}
	return r.names
}

func (r *sqlRows) Close() error {
	err := errors.Join(r.s.st.Reset(), r.s.st.ClearBindings())
	if r.failed {
		return nil // Next reported it
	}
	return err
}

func (r *sqlRows) Next(dest []driver.Value) error {
	st := r.s.st
	c := r.s.c.raw
	old := c.SetInterrupt(r.ctx)
	more := st.Step()
	c.SetInterrupt(old)
	if !more {
		if err := st.Err(); err != nil {
			r.failed = true
			r.s.c.lastErr = err
			return err
		}
		return io.EOF
	}
	if r.decl == nil {
		r.decl = make([]columnKind, len(dest))
		for i := range r.decl {
			switch strings.ToUpper(st.ColumnDeclType(i)) {
			case "BOOLEAN":
				r.decl[i] = asBool
			case "DATE", "DATETIME", "TIMESTAMP", "TIME":
				r.decl[i] = asTime
			}
		}
	}
	for i := range dest {
		dest[i] = r.value(i)
	}
	return nil
}

// value returns column i of the current row as database/sql expects it.
func (r *sqlRows) value(i int) driver.Value {
	st := r.s.st
	var v driver.Value
	switch st.ColumnType(i) {
	case sqlite3.NULL:
		return nil
	case sqlite3.INTEGER:
		n := st.ColumnInt64(i)
		if r.decl[i] == asBool && (n == 0 || n == 1) {
			return n == 1
		}
		v = n
	case sqlite3.FLOAT:
		v = st.ColumnFloat(i)
	case sqlite3.TEXT:
		v = st.ColumnText(i)
	default: // BLOB: a copy the caller may keep
		return st.ColumnBlob(i, []byte{})
	}
	if r.decl[i] == asTime {
		if t, err := sqlite3.TimeFormatAuto.Decode(v); err == nil {
			return t
		}
	}
	return v
}

// errRow returns a *sql.Row whose Scan returns err. database/sql makes a Row
// only from a query, so this runs one on a handle whose connections all fail
// with err.
func errRow(err error) *sql.Row {
	db := sql.OpenDB(failConnector{err})
	defer db.Close()
	return db.QueryRowContext(context.Background(), "")
}

type failConnector struct{ err error }

func (f failConnector) Connect(context.Context) (driver.Conn, error) { return nil, f.err }
func (f failConnector) Driver() driver.Driver                        { return sqlDriver{} }
