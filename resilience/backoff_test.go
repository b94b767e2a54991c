package resilience

import (
	"testing"
	"time"
)

// fixed is a constant schedule without jitter, for exact open periods.
func fixed(d time.Duration) Backoff { return Backoff{Initial: d, Multiplier: 1, Jitter: NoJitter} }

// Setting some fields of a Backoff keeps the defaults of the others: the
// cap and the jitter are not lost by setting Initial.
func TestBackoffPartialSettingsKeepDefaults(t *testing.T) {
	b := Backoff{Initial: 50 * time.Millisecond}
	if got := b.Delay(40); got > 10*time.Second {
		t.Errorf("Backoff{Initial: 50ms}.Delay(40) = %v, want the default cap of 10s kept", got)
	}
	jittered := false
	for range 100 {
		d := b.Delay(1)
		if d < 0 || d > 50*time.Millisecond {
			t.Fatalf("Delay(1) = %v, want in [0, 50ms]", d)
		}
		jittered = jittered || d < 50*time.Millisecond
	}
	if !jittered {
		t.Error("Backoff{Initial: 50ms}: no delay below 50ms in 100 draws, want the default full jitter kept")
	}

	r, _ := newTestRetry(t, RetryConfig{Backoff: Backoff{Initial: 50 * time.Millisecond}})
	if got := r.backoff().delay(40, r.random); got != 10*time.Second {
		t.Errorf("retry with Backoff{Initial: 50ms}: delay(40) = %v, want the default cap 10s", got)
	}

	for range 100 {
		d := Backoff{Initial: time.Second, Max: time.Minute}.withDefaults(defaultOpenPeriod).Delay(10)
		if d < 48*time.Second || d > time.Minute {
			t.Fatalf("open period Backoff{Initial: 1s, Max: 1m}.Delay(10) = %v, want in [48s, 1m] (the breaker's 20%% jitter kept)", d)
		}
	}
	if got := (Backoff{Initial: time.Hour}).Delay(1); got > time.Hour || got < 0 {
		t.Errorf("Initial above the default cap: Delay(1) = %v, want at most the hour (Max follows Initial)", got)
	}
}

func TestBackoffNoJitterAndConstant(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 5 * time.Second, Jitter: NoJitter}
	var got []time.Duration
	for n := 1; n <= 5; n++ {
		got = append(got, b.Delay(n))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
	if d := fixed(7 * time.Second).Delay(9); d != 7*time.Second {
		t.Errorf("constant schedule: Delay(9) = %v, want 7s", d)
	}
}

func TestBackoffValidate(t *testing.T) {
	for _, b := range []Backoff{{Initial: -1}, {Max: -1}, {Initial: time.Minute, Max: time.Second},
		{Multiplier: 0.5}, {Jitter: 1.5}, {Jitter: -0.5}} {
		if err := b.Validate(); err == nil {
			t.Errorf("%+v.Validate() = nil, want an error", b)
		}
	}
	for _, b := range []Backoff{{}, {Initial: time.Second}, {Jitter: NoJitter}, {Multiplier: 1}} {
		if err := b.Validate(); err != nil {
			t.Errorf("%+v.Validate() = %v, want nil", b, err)
		}
	}
}
