package rabbitmq

import (
	"testing"
	"time"
)

func TestDelayStep(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{time.Nanosecond, 1},
		{time.Millisecond, 1},
		{1100 * time.Microsecond, 2},
		{7 * time.Millisecond, 8},
		{9 * time.Millisecond, 10},
		{700 * time.Millisecond, 800},
		{time.Second, 1000},
		{1001 * time.Millisecond, 1200},
		{90 * time.Second, 100000},
		{time.Hour, 4000000},
		{100 * 24 * time.Hour, 4e9},
	} {
		if got := delayStep(tc.d); got != tc.want {
			t.Errorf("delayStep(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
	for i := 1; i < len(delaySteps); i++ {
		if prev, s := delaySteps[i-1], delaySteps[i]; s <= prev || float64(s) > 1.5*float64(prev)+1 {
			t.Errorf("step %d after %d: not increasing by at most half", s, prev)
		}
	}
}
