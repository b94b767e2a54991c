package resilience

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is where every fake clock starts: the real time the tests started, so
// that real contexts with deadlines on the fake timeline are still alive.
var t0 = time.Now().Truncate(time.Second)
