package eventstoretest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

var errorTests = []test{
	{"Messages", testErrorMessages},
}

// testErrorMessages: every error is an *eventstore.Error naming the operation
// and the stream, and reads the same on every backend. Where the cause comes
// from the backend (a read of a missing stream), the message starts with the
// sentinel's text; the backend may add detail after it.
func testErrorMessages(t *testing.T, nb factory) {
	b := nb(t)
	s, ctx := b.Store, t.Context()
	stored := newEvent("Stored", 0)
	mustAppend(t, s, "s", []recado.Event{stored, newEvent("Stored", 1)})
	first := func(seq func(func(recado.Event, error) bool)) error {
		for _, err := range seq {
			if err != nil {
				return err
			}
		}
		return nil
	}
	type errCase struct {
		name, op, stream string
		err              error
		want             string // the whole message, or its start if prefix
		prefix           bool
		is               error
	}
	appendErr := func(stream string, events []recado.Event, opts ...eventstore.AppendOption) error {
		_, err := s.Append(ctx, stream, events, opts...)
		return err
	}
	cases := []errCase{
		{"Conflict", "append", "s", appendErr("s", newEvents("E", 1), eventstore.ExpectVersion(5)),
			`eventstore: append "s": expected version 5, actual version 2 (stream exists)`, false, eventstore.ErrConflict},
		{"ConflictNoStream", "append", "s", appendErr("s", newEvents("E", 1), eventstore.Expect(eventstore.NoStream)),
			`eventstore: append "s": expected version no stream, actual version 2 (stream exists)`, false, eventstore.ErrConflict},
		{"ConflictMissing", "append", "m", appendErr("m", newEvents("E", 1), eventstore.Expect(eventstore.StreamExists)),
			`eventstore: append "m": expected version stream exists, actual version 0 (stream does not exist)`, false, eventstore.ErrConflict},
		{"DuplicateIDOtherStream", "append", "t", appendErr("t", []recado.Event{stored}),
			fmt.Sprintf(`eventstore: append "t": event ID %q already stored in stream "s" for a different event: stored in another stream, not "t"`, stored.ID), false, eventstore.ErrDuplicateID},
		{"DuplicateIDOtherData", "append", "s", appendErr("s", []recado.Event{{ID: stored.ID, Type: stored.Type, Data: []byte(`{}`)}}),
			fmt.Sprintf(`eventstore: append "s": event ID %q already stored in stream "s" for a different event: stored with other data`, stored.ID), false, eventstore.ErrDuplicateID},
		{"Invalid", "append", "s", appendErr("s", nil),
			`eventstore: append "s": eventstore: invalid argument: no events`, false, eventstore.ErrInvalid},
		{"ReadStreamNotFound", "read stream", "m", first(s.ReadStream(ctx, "m")),
			`eventstore: read stream "m": eventstore: stream not found`, true, eventstore.ErrStreamNotFound},
		{"ReadAllInvalid", "read all", "", first(s.ReadAll(ctx, recado.Position{}, eventstore.Limit(-1))),
			`eventstore: read all: eventstore: invalid argument: negative limit -1`, false, eventstore.ErrInvalid},
		{"SubscribeInvalid", "subscribe", "", func() error {
			for _, err := range s.Subscribe(ctx, recado.Position{}, eventstore.WithBatchSize(-1)) {
				return err
			}
			return nil
		}(), `eventstore: subscribe: eventstore: invalid argument: batch size -1`, true, eventstore.ErrInvalid},
		{"StateInvalid", "state", "s", func() error { _, err := s.State(ctx, "s", eventstore.ExpectVersion(2)); return err }(),
			`eventstore: state "s": eventstore: invalid argument: an expected version does not apply to State`, false, eventstore.ErrInvalid},
	}
	if b.Features.Delete {
		mustAppend(t, s, "x", newEvents("E", 1))
		if err := s.Tombstone(ctx, "x"); err != nil {
			t.Fatalf("Tombstone: %v", err)
		}
		cases = append(cases,
			errCase{"DeleteNotFound", "delete", "m", s.Delete(ctx, "m", eventstore.ExpectVersion(4)),
				`eventstore: delete "m": eventstore: stream not found`, false, eventstore.ErrStreamNotFound},
			errCase{"TombstoneConflict", "tombstone", "s", s.Tombstone(ctx, "s", eventstore.ExpectVersion(1)),
				`eventstore: tombstone "s": expected version 1, actual version 2 (stream exists)`, false, eventstore.ErrConflict},
			errCase{"AppendTombstoned", "append", "x", appendErr("x", newEvents("E", 1)),
				`eventstore: append "x": eventstore: stream deleted`, false, eventstore.ErrStreamDeleted},
			errCase{"DeleteTombstoned", "delete", "x", s.Delete(ctx, "x"),
				`eventstore: delete "x": eventstore: stream deleted`, false, eventstore.ErrStreamDeleted},
			errCase{"ReadStreamTombstoned", "read stream", "x", first(s.ReadStream(ctx, "x")),
				`eventstore: read stream "x": eventstore: stream deleted`, true, eventstore.ErrStreamDeleted},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, tc.err, tc.op, tc.stream, tc.is)
			if tc.err == nil {
				return
			}
			msg := tc.err.Error()
			if tc.prefix && !strings.HasPrefix(msg, tc.want) || !tc.prefix && msg != tc.want {
				t.Errorf("message\n\t%s\nwant\n\t%s", msg, tc.want+map[bool]string{true: "..."}[tc.prefix])
			}
		})
	}
}

// wantError checks that err is an *eventstore.Error of operation op on
// stream, wrapping is.
func wantError(tb testing.TB, err error, op, stream string, is error) {
	tb.Helper()
	var e *eventstore.Error
	switch {
	case err == nil:
		tb.Errorf("%s %q: no error, want one wrapping %v", op, stream, is)
	case !errors.As(err, &e):
		tb.Errorf("%s %q: error %v (%T) is not an *eventstore.Error", op, stream, err, err)
	case e.Op != op || e.Stream != stream:
		tb.Errorf("*eventstore.Error{Op: %q, Stream: %q}, want {Op: %q, Stream: %q}", e.Op, e.Stream, op, stream)
	case !errors.Is(err, is):
		tb.Errorf("%s %q: error %v does not wrap %v", op, stream, err, is)
	}
}
