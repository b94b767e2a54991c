package lease_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/recado-dev/recado/memory"
	"github.com/recado-dev/recado/resilience/lease"
)

// Two processes compete for the lease of a projection. The first holder
// pauses past its lease's expiry; the second takes the lease over with a
// higher fencing token, and the first one's guarded write is refused.
func Example() {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	db := memory.New()
	defer db.Close()
	leases := db.Leases(lease.Config{Now: func() time.Time { return now }})

	a, _ := leases.Acquire(ctx, "projection:orders", "node-a", 10*time.Second)
	fmt.Println("node-a holds it with token", a.Token)

	_, err := leases.Acquire(ctx, "projection:orders", "node-b", 10*time.Second)
	fmt.Println("node-b:", errors.Is(err, lease.ErrHeld))

	now = now.Add(15 * time.Second) // node-a stalls past its expiry
	b, _ := leases.Acquire(ctx, "projection:orders", "node-b", 10*time.Second)
	fmt.Println("node-b holds it with token", b.Token)

	// node-a wakes up and tries to write, guarded by its lease.
	err = db.Tx(ctx, func(tx *memory.Tx) error {
		if err := leases.Guard(ctx, tx, a); err != nil {
			return err
		}
		return nil // the guarded writes would go here
	})
	fmt.Println("node-a's write:", errors.Is(err, lease.ErrLost))
	// Output:
	// node-a holds it with token 1
	// node-b: true
	// node-b holds it with token 2
	// node-a's write: true
}
