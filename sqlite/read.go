package sqlite

import (
	"errors"
	"fmt"

	"github.com/ncruces/go-sqlite3"

	"github.com/recado-dev/recado/eventstore/driver"
)

// readConn is one read-only connection with its prepared statements. Reads
// run on the library's direct API: no database/sql between the rows and the
// events, so a row costs no allocations of its own (see readPage).
type readConn struct {
	conn                                         *sqlite3.Conn
	allFwd, allBack, streamFwd, streamBack, stat *sqlite3.Stmt
	begin, commit                                *sqlite3.Stmt
	// inTx: a read transaction is open (begin ran), which readPage ends.
	inTx bool
	// cache holds the other stores' statements.
	cache stmtCache
}

const eventColumns = "pos, id, stream, version, type, data, metadata, time"

func openReadConn(uri string) (*readConn, error) {
	c, err := sqlite3.Open(uri)
	if err != nil {
		return nil, err
	}
	r := &readConn{conn: c, cache: stmtCache{conn: c}}
	err = prepare(c, []stmtDef{
		{&r.allFwd, "SELECT " + eventColumns + " FROM recado_events WHERE pos > ? ORDER BY pos LIMIT ?"},
		{&r.allBack, "SELECT " + eventColumns + " FROM recado_events WHERE pos < ? ORDER BY pos DESC LIMIT ?"},
		{&r.streamFwd, "SELECT " + eventColumns + " FROM recado_events WHERE stream = ? AND version >= ? ORDER BY version LIMIT ?"},
		{&r.streamBack, "SELECT " + eventColumns + " FROM recado_events WHERE stream = ? AND version <= ? AND version > ? ORDER BY version DESC LIMIT ?"},
		{&r.stat, "SELECT version, deleted_through, tombstoned FROM recado_streams WHERE name = ?"},
		{&r.begin, "BEGIN"},
		{&r.commit, "COMMIT"},
	})
	if err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return r, nil
}

func (r *readConn) close() error {
	return errors.Join(closeStmts(r.allFwd, r.allBack, r.streamFwd, r.streamBack, r.stat, r.begin, r.commit),
		r.cache.close(), r.conn.Close())
}

// beginRead opens a read transaction, so that the statements that follow see
// one snapshot of the file.
func (r *readConn) beginRead() error {
	if err := r.begin.Exec(); err != nil {
		return err
	}
	r.inTx = true
	return nil
}

// readPool holds up to n read connections, opened when first needed. Each
// slot of the channel is a connection or nil (not opened yet): taking a slot
// is the right to use or open one, so at most n exist and Close can wait for
// every one to come back.
type readPool struct {
	uri   string
	slots chan *readConn
}

func newReadPool(uri string, n int) *readPool {
	p := &readPool{uri: uri, slots: make(chan *readConn, n)}
	for range n {
		p.slots <- nil
	}
	return p
}

// get takes a connection, waiting while all are in use; it gives up with
// driver.ErrClosed when closing is closed first.
func (p *readPool) get(closing <-chan struct{}) (*readConn, error) {
	var r *readConn
	select {
	case r = <-p.slots:
	case <-closing:
		return nil, driver.ErrClosed
	}
	if r != nil {
		return r, nil
	}
	r, err := openReadConn(p.uri)
	if err != nil {
		p.slots <- nil
		return nil, fmt.Errorf("open read connection: %w", err)
	}
	return r, nil
}

// put gives a connection back. A connection whose statement could not be
// reset is closed (its slot stays free) rather than kept with a read
// transaction open.
func (p *readPool) put(r *readConn, broken bool) {
	if broken {
		_ = r.close()
		r = nil
	}
	p.slots <- r
}

// close waits for every connection to come back and closes them.
func (p *readPool) close() error {
	var errs []error
	for range cap(p.slots) {
		if r := <-p.slots; r != nil {
			errs = append(errs, r.close())
		}
	}
	return errors.Join(errs...)
}
