package eventstoretest_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/recado-dev/recado/eventstore/eventstoretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// brokenEnv selects the broken driver TestBrokenHelper runs the suite against.
const brokenEnv = "RECADO_EVENTSTORETEST_BROKEN"

// brokenDrivers are the reference driver with one deliberate bug each, as
// backends get them wrong, and what the suite must say about each: the
// groups and tests to run (to keep the subprocess short) and what the failing
// run's output must contain.
var brokenDrivers = []struct {
	bug    string
	groups string // -run pattern for the group level
	tests  string // -run pattern for the test level
	want   []string
}{
	{"ignores-version", "ExpectedVersion|Concurrency|Delete", "Table|ExactVersionOneWinner|SoftDelete", []string{
		"--- FAIL: TestBrokenHelper/ExpectedVersion/Table/NoStreamOnExisting",
		"--- FAIL: TestBrokenHelper/ExpectedVersion/Table/ExactTooLow",
		"--- FAIL: TestBrokenHelper/Concurrency/ExactVersionOneWinner",
		"want exactly 1",
		"--- FAIL: TestBrokenHelper/Delete/SoftDelete",
	}},
	{"version-first", "Idempotency", "RetryBeforeVersionCheck|DuplicateIDBeforeVersion", []string{
		"--- FAIL: TestBrokenHelper/Idempotency/RetryBeforeVersionCheck",
		"idempotency is checked before the version",
		"--- FAIL: TestBrokenHelper/Idempotency/DuplicateIDBeforeVersion/NewThenStored",
		"want a DuplicateIDError, not a conflict",
	}},
	{"skips-after-checkpoint", "ReadAll|Concurrency", "Options|NoSkippedEvents.*", []string{
		"--- FAIL: TestBrokenHelper/ReadAll/Options/After4",
		"--- FAIL: TestBrokenHelper/Concurrency/NoSkippedEventsSubscribe",
		"--- FAIL: TestBrokenHelper/Concurrency/NoSkippedEventsReadAll",
		"(a skipped, repeated or reordered event)",
	}},
	{"redelivers-checkpoint", "ReadAll|Concurrency|Subscribe", "Options|NoSkippedEvents.*|CatchUpThenLive", []string{
		"--- FAIL: TestBrokenHelper/ReadAll/Options/After4",
		"--- FAIL: TestBrokenHelper/Concurrency/NoSkippedEventsSubscribe",
		"--- FAIL: TestBrokenHelper/Concurrency/NoSkippedEventsReadAll",
		"--- FAIL: TestBrokenHelper/Subscribe/CatchUpThenLive",
		"delivered 2 times",
	}},
	{"drops-empty-metadata", "Append|Ownership", "MetadataEmptyValues|CallerReusesEvents", []string{
		"--- FAIL: TestBrokenHelper/Append/MetadataEmptyValues",
		"--- FAIL: TestBrokenHelper/Ownership/CallerReusesEvents",
		"Metadata {",
	}},
	{"local-time", "Append|Limits", "RoundTrip|Times", []string{
		"--- FAIL: TestBrokenHelper/Append/RoundTrip",
		"--- FAIL: TestBrokenHelper/Limits/Times",
		"is in CET, want UTC",
	}},
	{"nanoseconds", "Limits", "Times", []string{
		"--- FAIL: TestBrokenHelper/Limits/Times",
		"is not truncated to the microsecond",
	}},
	{"recycles-request", "Ownership", "CallerReusesEvents", []string{
		"--- FAIL: TestBrokenHelper/Ownership/CallerReusesEvents",
		"differs from what its caller passed: Data",
	}},
	{"reads-alias-storage", "Ownership", "ReadsAreTheCallers", []string{
		"--- FAIL: TestBrokenHelper/Ownership/ReadsAreTheCallers",
		"after readers changed the events they read",
	}},
	{"delete-version-first", "Delete", "MissingBeforeVersion", []string{
		"--- FAIL: TestBrokenHelper/Delete/MissingBeforeVersion",
		"not-found comes before the expected version",
	}},
	{"state-after-soft-delete", "State", "Lifecycle", []string{
		"--- FAIL: TestBrokenHelper/State/Lifecycle",
		"soft-deleted: State(\"s\") = {Version:3 Exists:true Deleted:false Tombstoned:false}",
	}},
	{"no-rollback", "UnitOfWork|Concurrency", "Rollback.*|NoSkippedEventsUnitOfWork", []string{
		"--- FAIL: TestBrokenHelper/UnitOfWork/RollbackOnError",
		"--- FAIL: TestBrokenHelper/UnitOfWork/RollbackOnPanic",
		"--- FAIL: TestBrokenHelper/Concurrency/NoSkippedEventsUnitOfWork",
		"events of the unit that rolled back",
	}},
}

// TestBrokenHelper runs the suite against the broken driver named by
// $RECADO_EVENTSTORETEST_BROKEN, in the subprocess TestSuiteCatchesBrokenDrivers
// starts.
func TestBrokenHelper(t *testing.T) {
	bug := os.Getenv(brokenEnv)
	if bug == "" {
		t.Skipf("runs only in the subprocess of TestSuiteCatchesBrokenDrivers, with %s set", brokenEnv)
	}
	eventstoretest.Run(t, func(tb testing.TB) eventstoretest.Backend { return newRefBackend(tb, bug) })
}

// TestSuiteCatchesBrokenDrivers proves the suite fails, naming the broken
// check, against drivers with typical bugs.
func TestSuiteCatchesBrokenDrivers(t *testing.T) {
	for _, tc := range brokenDrivers {
		t.Run(tc.bug, func(t *testing.T) {
			t.Parallel()
			run := "^TestBrokenHelper$/^(" + tc.groups + ")$/^(" + tc.tests + ")$"
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.short", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+tc.bug)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("the suite against the %s driver: %v, want a failing exit; output:\n%s", tc.bug, err, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(string(out), want) {
					t.Errorf("the suite's output against the %s driver does not contain %q", tc.bug, want)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}
