package idempotency_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/idempotency"
	"github.com/recado-dev/recado/resilience/idempotency/driver"
	"github.com/recado-dev/recado/resilience/idempotency/idempotencytest"
)

// fake is a driver in a map, without units of work: enough to run the
// suite's rules against the front.
type fake struct {
	mu   sync.Mutex
	recs map[[2]string]driver.Record
}

func (f *fake) Apply(ctx context.Context, r *driver.Request) error {
	if r.Tx != nil {
		return driver.ErrForeignTx
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := [2]string{r.Scope, r.Key}
	cur, found := f.recs[k]
	if r.Decide(cur, found) {
		if r.Delete {
			delete(f.recs, k)
		} else {
			f.recs[k] = r.Next
		}
	}
	return nil
}

func (f *fake) Cleanup(ctx context.Context, before time.Time, limit int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, rec := range f.recs {
		if n < limit && rec.Created.Before(before) {
			delete(f.recs, k)
			n++
		}
	}
	return n, nil
}

func TestFake(t *testing.T) {
	idempotencytest.Run(t, func(tb testing.TB, cfg idempotency.Config) idempotencytest.Backend {
		return idempotencytest.Backend{Store: idempotency.New(&fake{recs: map[[2]string]driver.Record{}}, cfg)}
	})
}
