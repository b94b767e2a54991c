package driver

import "testing"

func TestSignal(t *testing.T) {
	var s Signal
	s.Notify() // nobody waits: no effect
	a, b := s.Committed(), s.Committed()
	if a != b {
		t.Error("two waiters before a Notify got different channels")
	}
	select {
	case <-a:
		t.Fatal("closed before Notify")
	default:
	}
	s.Notify()
	<-a
	c := s.Committed()
	select {
	case <-c:
		t.Fatal("a channel taken after Notify is already closed")
	default:
	}
}
