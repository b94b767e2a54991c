package postgres

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// schemaV1 is the event store's first schema, as released: the DDL a
// database written by the previous version of this package holds.
const schemaV1 = `
CREATE SCHEMA %[1]s;
CREATE TABLE %[1]s.schema_versions (
	contract   text        NOT NULL,
	version    integer     NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (contract, version)
);
CREATE TABLE %[1]s.streams (
	stream          text    PRIMARY KEY,
	version         bigint  NOT NULL DEFAULT 0,
	deleted_version bigint  NOT NULL DEFAULT 0,
	tombstoned      boolean NOT NULL DEFAULT false,
	major           bigint  NOT NULL DEFAULT 0
);
CREATE SEQUENCE %[1]s.events_seq AS bigint INCREMENT BY 1024;
CREATE TABLE %[1]s.events (
	major    bigint      NOT NULL,
	seq      bigint      NOT NULL,
	id       text        NOT NULL,
	stream   text        NOT NULL,
	version  bigint      NOT NULL,
	type     text        NOT NULL,
	data     bytea       NOT NULL,
	metadata bytea       NOT NULL,
	time     timestamptz NOT NULL,
	PRIMARY KEY (major, seq),
	CONSTRAINT events_id_key UNIQUE (id),
	CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);
INSERT INTO %[1]s.schema_versions (contract, version) VALUES ('eventstore', 1);
`

// writeV1 appends events to stream in a database of schema version 1 as the
// previous version of this package did: the stream's row and the events in
// one transaction, at the transaction's id and a block of sequence numbers.
func writeV1(t *testing.T, conn *pgx.Conn, schema, stream string, events []recado.Event, tombstone bool) {
	t.Helper()
	ctx := t.Context()
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var xid, block int64
		if err := tx.QueryRow(ctx, fmt.Sprintf("SELECT pg_current_xact_id()::text::bigint, nextval('%s.events_seq')", schema)).Scan(&xid, &block); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s.streams (stream, version, major, tombstoned) VALUES ($1, $2, $3, $4)", schema),
			stream, len(events), xid, tombstone); err != nil {
			return err
		}
		for i, e := range events {
			_, err := tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s.events (major, seq, id, stream, version, type, data, metadata, time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", schema),
				xid, block+int64(i), e.ID, stream, i+1, e.Type, e.Data, e.Metadata.AppendJSON([]byte{}), e.Time) // empty metadata is zero bytes
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("writing %s as version 1 did: %v", stream, err)
	}
}

// TestOpenMigratesV1: Open migrates a database written by the first schema
// (no other step needed), and the events it holds read, are recognised when
// appended again, and are followed by new ones, on both commit paths.
func TestOpenMigratesV1(t *testing.T) {
	schema := newSchema(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	quoted := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, fmt.Sprintf(schemaV1, quoted)); err != nil {
		t.Fatal(err)
	}
	old := testEvents("Old", 3)
	for i := range old {
		old[i].Metadata = recado.Metadata{CorrelationID: fmt.Sprintf("c-%d", i), Fields: map[string]string{"k": "v"}}
		old[i].Time = old[i].Time.UTC().Truncate(eventstore.TimePrecision)
	}
	writeV1(t, conn, quoted, "order-1", old, false)
	writeV1(t, conn, quoted, "gone", testEvents("Old", 1), true)

	db := openOn(t, newPool(t, ""), Options{Schema: schema})
	s := db.Events()

	var versions []int
	rows, _ := conn.Query(ctx, fmt.Sprintf("SELECT version FROM %s.schema_versions WHERE contract = 'eventstore' ORDER BY 1", quoted))
	if versions, err = pgx.CollectRows(rows, pgx.RowTo[int]); err != nil || !slices.Equal(versions, []int{1, 2}) {
		t.Errorf("schema versions after Open = %v, %v; want [1 2]", versions, err)
	}
	var collations []string
	rows, _ = conn.Query(ctx, `SELECT c.relname || '.' || a.attname || ' ' || coalesce(co.collname, '-') FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = $1 AND (c.relname, a.attname) IN (('events', 'id'), ('events', 'stream'), ('streams', 'stream')) ORDER BY 1`, schema)
	if collations, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil ||
		!slices.Equal(collations, []string{"events.id C", "events.stream C", "streams.stream C"}) {
		t.Errorf("collations after Open = %v, %v; want C for events.id, events.stream, streams.stream", collations, err)
	}

	got, err := collect(s.ReadStream(ctx, "order-1"))
	if err != nil || len(got) != 3 {
		t.Fatalf("ReadStream of the old stream = %d events, %v; want 3", len(got), err)
	}
	for i, e := range got {
		if e.ID != old[i].ID || e.Version != uint64(i+1) || string(e.Data) != string(old[i].Data) ||
			e.Metadata.CorrelationID != old[i].Metadata.CorrelationID || e.Metadata.Fields["k"] != "v" || !e.Time.Equal(old[i].Time) {
			t.Errorf("old event %d read back as %+v, want %+v at version %d", i, e, old[i], i+1)
		}
	}
	// A retry of the old append: a duplicate, at the original positions.
	again, err := s.Append(ctx, "order-1", old)
	if err != nil || !again.Duplicate || again.FirstPosition != got[0].Position || again.LastVersion != 3 {
		t.Errorf("old append again = %+v, %v; want a duplicate at %v", again, err, got[0].Position)
	}
	// The old events' IDs in another stream: refused.
	if _, err := s.Append(ctx, "order-2", old[1:2]); !errors.Is(err, eventstore.ErrDuplicateID) {
		t.Errorf("an old ID in another stream: %v, want ErrDuplicateID", err)
	}
	// New events after the old ones: decided on the rows read (the first),
	// then on the row the first left (the second).
	for _, from := range []uint64{3, 5} {
		res, err := s.Append(ctx, "order-1", testEvents("New", 2), eventstore.ExpectVersion(from))
		if err != nil || res.FirstVersion != from+1 || !got[2].Position.Before(res.FirstPosition) {
			t.Fatalf("Append expecting %d = %+v, %v; want versions %d.. after %v", from, res, err, from+1, got[2].Position)
		}
	}
	if _, err := s.Append(ctx, "gone", testEvents("New", 1)); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Errorf("Append to a stream tombstoned before the migration: %v, want ErrStreamDeleted", err)
	}
	all, err := collect(s.ReadAll(ctx, recado.Position{}))
	if err != nil || len(all) != 8 {
		t.Fatalf("ReadAll = %d events, %v; want 8", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if !all[i-1].Position.Before(all[i].Position) {
			t.Errorf("ReadAll: %v then %v", all[i-1].Position, all[i].Position)
		}
	}
	if v := versionsOf(all, "order-1"); !slices.Equal(v, []uint64{1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("ReadAll: order-1 versions %v, want 1..7 in order", v)
	}
}

func versionsOf(events []recado.Event, stream string) []uint64 {
	var v []uint64
	for _, e := range events {
		if e.Stream == stream {
			v = append(v, e.Version)
		}
	}
	return v
}
