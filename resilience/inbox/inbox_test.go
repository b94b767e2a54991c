package inbox_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/resilience/inbox"
	"github.com/recado-dev/recado/resilience/inbox/driver"
	"github.com/recado-dev/recado/resilience/inbox/inboxtest"
)

// fake is a driver in a map, without units of work: enough to run the
// suite's rules against the front.
type fake struct {
	mu      sync.Mutex
	entries map[[2]string]driver.Entry
}

func (f *fake) Claim(ctx context.Context, tx recado.Tx, e driver.Entry) (bool, error) {
	if tx != nil {
		return false, driver.ErrForeignTx
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := [2]string{e.Consumer, e.MessageID}
	if _, ok := f.entries[k]; ok {
		return false, nil
	}
	f.entries[k] = e
	return true, nil
}

func (f *fake) Get(ctx context.Context, consumer, id string) (driver.Entry, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[[2]string{consumer, id}]
	return e, ok, nil
}

func (f *fake) Cleanup(ctx context.Context, before time.Time, limit int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, e := range f.entries {
		if n < limit && e.Time.Before(before) {
			delete(f.entries, k)
			n++
		}
	}
	return n, nil
}

func TestFake(t *testing.T) {
	inboxtest.Run(t, func(tb testing.TB, cfg inbox.Config) inboxtest.Backend {
		return inboxtest.Backend{Store: inbox.New(&fake{entries: map[[2]string]driver.Entry{}}, cfg)}
	})
}
