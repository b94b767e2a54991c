package inboxtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/resilience/inbox"
)

// Bench measures what an inbox claim adds to a consumer's unit of work: b.N
// times, one unit of work that appends an event and claims its message, and
// one that only appends, one after the other. It reports with-ops/s and
// without-ops/s (units of work per second) and with/without, the ratio of the
// two rates. It needs the backend's Tx and Events.
//
//	func BenchmarkInbox(b *testing.B) { inboxtest.Bench(b, newBackend) }
func Bench(b *testing.B, newBackend Factory) {
	be := newBackend(b, inbox.Config{})
	if be.Tx == nil || be.Events == nil {
		b.Skip("Bench needs the backend's Tx and Events")
	}
	with, without := make([]recado.Event, b.N), make([]recado.Event, b.N) // made before the timer
	for i := range b.N {
		with[i] = recado.NewEvent("InvoiceIssued", fmt.Appendf(nil, `{"i":%d}`, i))
		without[i] = recado.NewEvent("InvoiceIssued", fmt.Appendf(nil, `{"i":%d}`, i))
	}
	unit := func(e recado.Event, claim bool) {
		stream := "invoices-without"
		if claim {
			stream = "invoices-with"
		}
		err := be.Tx(b.Context(), func(tx recado.Tx) error {
			if claim {
				first, err := be.Store.Claim(b.Context(), tx, "billing", e.ID)
				if err != nil || !first {
					return fmt.Errorf("claim: %v, %v", first, err)
				}
			}
			_, err := be.Events.Append(b.Context(), stream, []recado.Event{e}, eventstore.InTx(tx))
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	var tWith, tWithout time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		unit(with[i], true)
		mid := time.Now()
		unit(without[i], false)
		tWith, tWithout = tWith+mid.Sub(start), tWithout+time.Since(mid)
	}
	b.StopTimer()
	rateWith, rateWithout := float64(b.N)/tWith.Seconds(), float64(b.N)/tWithout.Seconds()
	b.ReportMetric(rateWith, "with-ops/s")
	b.ReportMetric(rateWithout, "without-ops/s")
	b.ReportMetric(rateWith/rateWithout, "with/without")
}
