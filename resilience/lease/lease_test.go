package lease_test

import (
	"context"
	"sync"
	"testing"

	"github.com/recado-dev/recado/resilience/lease"
	"github.com/recado-dev/recado/resilience/lease/driver"
	"github.com/recado-dev/recado/resilience/lease/leasetest"
)

// fake is a driver in a map, without units of work: enough to run the
// suite's rules against the front.
type fake struct {
	mu   sync.Mutex
	recs map[string]driver.Record
}

func (f *fake) Apply(ctx context.Context, r *driver.Request) error {
	if r.Tx != nil {
		return driver.ErrForeignTx
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, found := f.recs[r.Name]
	if r.Decide(cur, found) {
		f.recs[r.Name] = r.Next
	}
	return nil
}

func (f *fake) Get(ctx context.Context, name string) (driver.Record, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec, ok := f.recs[name]
	return rec, ok, nil
}

func TestFake(t *testing.T) {
	leasetest.Run(t, func(tb testing.TB, cfg lease.Config) leasetest.Backend {
		return leasetest.Backend{Store: lease.New(&fake{recs: map[string]driver.Record{}}, cfg)}
	})
}
