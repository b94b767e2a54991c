package sqlite

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"
	"time"
)

// otherDriver stands for another SQLite driver an application imports, which
// registers itself as "sqlite3".
type otherDriver struct{}

func (otherDriver) Open(string) (driver.Conn, error) { return nil, errors.New("not a real driver") }

// TestRegistersNoDriver: importing sqlite registers no database/sql driver, so
// an application may register "sqlite3" itself (as other SQLite drivers do)
// without a panic, and the store keeps working. This test binary imports
// sqlite and nothing that registers a driver.
func TestRegistersNoDriver(t *testing.T) {
	if got := sql.Drivers(); len(got) != 0 {
		t.Errorf("database/sql drivers registered in a binary that imports sqlite: %q, want none", got)
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf(`sql.Register("sqlite3") panicked: %v`, r)
			}
		}()
		sql.Register("sqlite3", otherDriver{})
	}()
	db := openTest(t, Options{})
	createOrders(t, db)
	if _, err := db.Events().Append(t.Context(), "s", events("e", 1)); err != nil {
		t.Fatal(err)
	}
}

// TestTxSQL: the unit of work's database/sql layer binds and scans the types
// users' own tables use.
func TestTxSQL(t *testing.T) {
	db := openTest(t, Options{})
	ctx := t.Context()
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
	err := db.Tx(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE kinds (i INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN, at DATETIME, n);
CREATE TABLE other (x)`); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, "INSERT INTO kinds VALUES (?, ?, ?, ?, ?, ?, ?)",
			int64(-7), 2.5, "text", []byte{0, 1, 2}, true, when, nil)
		if err != nil {
			return err
		}
		if id, _ := res.LastInsertId(); id != 1 {
			t.Errorf("LastInsertId = %d, want 1", id)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			t.Errorf("RowsAffected = %d, want 1", n)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO kinds (i, s) VALUES (:i, @s)", sql.Named("i", 8), sql.Named("s", "named")); err != nil {
			return err
		}
		var (
			i  int64
			f  float64
			s  string
			b  []byte
			ok bool
			at time.Time
			n  sql.NullString
		)
		if err := tx.QueryRowContext(ctx, "SELECT i, f, s, b, ok, at, n FROM kinds WHERE i = ?", -7).
			Scan(&i, &f, &s, &b, &ok, &at, &n); err != nil {
			return err
		}
		if i != -7 || f != 2.5 || s != "text" || string(b) != "\x00\x01\x02" || !ok || !at.Equal(when) || n.Valid {
			t.Errorf("scanned %d %v %q %v %v %v %v, want -7 2.5 text [0 1 2] true %v NULL", i, f, s, b, ok, at, n, when)
		}
		rows, err := tx.QueryContext(ctx, "SELECT s FROM kinds ORDER BY i")
		if err != nil {
			return err
		}
		var got []string
		for rows.Next() {
			if err := rows.Scan(&s); err != nil {
				return err
			}
			got = append(got, s)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		if len(got) != 2 || got[0] != "text" || got[1] != "named" {
			t.Errorf("rows = %q, want [text named]", got)
		}
		if _, err := tx.ExecContext(ctx, "SELECT ?", 1, 2); err == nil {
			t.Error("two arguments for one parameter accepted")
		}
		if _, err := tx.QueryContext(ctx, "SELECT ?; SELECT 2", 1); err == nil {
			t.Error("two statements with arguments accepted")
		}
		if _, err := tx.QueryContext(ctx, "SELECT ?; garbage", 1); err == nil {
			t.Error("a statement with arguments and a broken one after it accepted")
		}
		if err := tx.QueryRowContext(ctx, "SELECT ? -- a comment", 3).Scan(&i); err != nil || i != 3 {
			t.Errorf("a statement with a comment after it: %d, %v; want 3", i, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
