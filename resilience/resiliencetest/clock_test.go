package resiliencetest

import (
	"context"
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func TestClockRunsTimersInOrderAtTheirTime(t *testing.T) {
	c := NewClock(t0)
	var got []string
	at := func(name string) func() {
		return func() { got = append(got, fmt.Sprintf("%s@%v", name, c.Now().Sub(t0))) }
	}
	c.AfterFunc(3*time.Second, at("c"))
	c.AfterFunc(time.Second, at("a"))
	stop := c.AfterFunc(2*time.Second, at("stopped"))
	c.AfterFunc(time.Second, at("b"))
	if !stop() || stop() {
		t.Error("stop: want true once, then false")
	}
	c.Advance(2 * time.Second)
	c.Advance(2 * time.Second)
	if want := "[a@1s b@1s c@3s]"; fmt.Sprint(got) != want {
		t.Errorf("ran %v, want %s", got, want)
	}
	if c.Now() != t0.Add(4*time.Second) || c.Timers() != 0 {
		t.Errorf("now %v, timers %d; want +4s, 0", c.Now().Sub(t0), c.Timers())
	}
}

func TestClockWaitTimers(t *testing.T) {
	c := NewClock(t0)
	go c.AfterFunc(time.Second, func() {})
	if err := c.WaitTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.WaitTimers(ctx, 2); err == nil {
		t.Error("WaitTimers(2) with one timer and a cancelled context: nil error")
	}
}

func TestAutoClock(t *testing.T) {
	c := NewAutoClock(t0)
	ran := false
	c.AfterFunc(5*time.Second, func() { ran = true })
	if !ran || c.Now() != t0.Add(5*time.Second) {
		t.Errorf("ran = %v, now = +%v; want true, +5s", ran, c.Now().Sub(t0))
	}
}
