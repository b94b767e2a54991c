package eventstoretest_test

import (
	"context"
	"errors"
	"iter"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/eventstore/eventstoretest"
	"github.com/recado-dev/recado/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// brokenEnv selects the broken store TestBrokenHelper runs the suite against.
const brokenEnv = "RECADO_EVENTSTORETEST_BROKEN"

// Broken stores: the memory store with one deliberate bug each, as backends
// get them wrong.

// ignoresVersion appends whatever the expected version.
type ignoresVersion struct{ *memory.Store }

func (s ignoresVersion) Append(ctx context.Context, stream string, events []recado.Event, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	return s.Store.Append(ctx, stream, events, append(opts, eventstore.Expect(eventstore.Any))...)
}

// versionFirst checks the expected version before recognising a retry.
type versionFirst struct{ *memory.Store }

func (s versionFirst) Append(ctx context.Context, stream string, events []recado.Event, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	o := eventstore.NewAppendOptions(opts...)
	var last uint64
	exists := false
	for e, err := range s.ReadStream(ctx, stream, eventstore.Backwards(), eventstore.Limit(1)) {
		if err == nil {
			last, exists = e.Version, true
		}
	}
	if stream != "" && len(events) > 0 {
		if err := o.Expected.Check(stream, last, exists); err != nil {
			return eventstore.AppendResult{}, err
		}
	}
	return s.Store.Append(ctx, stream, events, opts...)
}

// skipsAfterCheckpoint loses the first event after a non-zero position: the
// classic off-by-one of a reader resuming from a checkpoint.
type skipsAfterCheckpoint struct{ *memory.Store }

func (s skipsAfterCheckpoint) ReadAll(ctx context.Context, after recado.Position, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	if major, _ := after.Parts(); major > 0 && !eventstore.NewReadOptions(opts...).Backwards {
		after = recado.NewPosition(major+1, 0)
	}
	return s.Store.ReadAll(ctx, after, opts...)
}

// redeliversCheckpoint reads from the checkpoint inclusive, so a resuming
// reader sees its last event twice.
type redeliversCheckpoint struct{ *memory.Store }

func (s redeliversCheckpoint) ReadAll(ctx context.Context, after recado.Position, opts ...eventstore.ReadOption) iter.Seq2[recado.Event, error] {
	if major, _ := after.Parts(); major > 0 && !eventstore.NewReadOptions(opts...).Backwards {
		after = recado.NewPosition(major-1, 0)
	}
	return s.Store.ReadAll(ctx, after, opts...)
}

var brokenStores = map[string]func(*memory.Store) eventstore.Store{
	"ignores-version":        func(s *memory.Store) eventstore.Store { return ignoresVersion{s} },
	"version-first":          func(s *memory.Store) eventstore.Store { return versionFirst{s} },
	"skips-after-checkpoint": func(s *memory.Store) eventstore.Store { return skipsAfterCheckpoint{s} },
	"redelivers-checkpoint":  func(s *memory.Store) eventstore.Store { return redeliversCheckpoint{s} },
}

// TestBrokenHelper runs the suite against the broken store named by
// $RECADO_EVENTSTORETEST_BROKEN, in the subprocess TestSuiteCatchesBrokenStores
// starts.
func TestBrokenHelper(t *testing.T) {
	kind := os.Getenv(brokenEnv)
	if kind == "" {
		t.Skipf("runs only in the subprocess of TestSuiteCatchesBrokenStores, with %s set", brokenEnv)
	}
	wrap, ok := brokenStores[kind]
	if !ok {
		t.Fatalf("%s=%q: no such broken store", brokenEnv, kind)
	}
	eventstoretest.Run(t, func(tb testing.TB) eventstore.Store {
		s := memory.New()
		tb.Cleanup(func() { _ = s.Close() })
		return wrap(s)
	})
}

// TestSuiteCatchesBrokenStores proves the suite fails, naming the broken
// check, against stores with typical bugs.
func TestSuiteCatchesBrokenStores(t *testing.T) {
	cases := []struct {
		kind string
		want []string // in the failing run's output
	}{
		{"ignores-version", []string{
			"--- FAIL: TestBrokenHelper/ExpectedVersion/Table/NoStreamOnExisting",
			"--- FAIL: TestBrokenHelper/ExpectedVersion/Table/ExactTooLow",
			"--- FAIL: TestBrokenHelper/Concurrency/ExactVersionOneWinner",
			"want exactly 1",
			"--- FAIL: TestBrokenHelper/Delete/SoftDelete",
		}},
		{"version-first", []string{
			"--- FAIL: TestBrokenHelper/Idempotency/RetryBeforeVersionCheck",
			"idempotency is checked before the version",
		}},
		{"skips-after-checkpoint", []string{
			"--- FAIL: TestBrokenHelper/ReadAll/Options/After4",
			"--- FAIL: TestBrokenHelper/Concurrency/NoSkippedEventsSubscribe",
			"--- FAIL: TestBrokenHelper/Concurrency/NoSkippedEventsReadAll",
			"(a skipped, repeated or reordered event)",
		}},
		{"redelivers-checkpoint", []string{
			"--- FAIL: TestBrokenHelper/ReadAll/Options/After4",
			"--- FAIL: TestBrokenHelper/Concurrency/NoSkippedEventsSubscribe",
			"--- FAIL: TestBrokenHelper/Concurrency/NoSkippedEventsReadAll",
			"--- FAIL: TestBrokenHelper/Subscribe/CatchUpThenLive",
			"delivered 2 times",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBrokenHelper$", "-test.short", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+tc.kind)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("the suite against the %s store: %v, want a failing exit; output:\n%s", tc.kind, err, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(string(out), want) {
					t.Errorf("the suite's output against the %s store does not contain %q", tc.kind, want)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}
