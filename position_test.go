package recado

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestPositionCompare(t *testing.T) {
	tests := []struct {
		p, q Position
		want int
	}{
		{Position{}, Position{}, 0},
		{Position{}, NewPosition(1, 0), -1},
		{NewPosition(2, 0), NewPosition(1, 9), 1},
		{NewPosition(1, 1), NewPosition(1, 2), -1},
		{NewPosition(1, 2), NewPosition(1, 2), 0},
		{NewPosition(1<<63, 0), NewPosition(1, 0), 1},
	}
	for _, tt := range tests {
		if got := tt.p.Compare(tt.q); got != tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.p, tt.q, got, tt.want)
		}
		if got := tt.q.Compare(tt.p); got != -tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.q, tt.p, got, -tt.want)
		}
		if got := tt.p.Before(tt.q); got != (tt.want < 0) {
			t.Errorf("%v.Before(%v) = %v", tt.p, tt.q, got)
		}
	}
}

func TestPositionText(t *testing.T) {
	tests := []struct {
		p    Position
		text string
	}{
		{Position{}, "0"},
		{NewPosition(42, 0), "42"},
		{NewPosition(42, 7), "42:7"},
		{NewPosition(0, 7), "0:7"},
		{NewPosition(^uint64(0), ^uint64(0)), "18446744073709551615:18446744073709551615"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.text {
			t.Errorf("String() = %q, want %q", got, tt.text)
		}
		got, err := ParsePosition(tt.text)
		if err != nil || got != tt.p {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v", tt.text, got, err, tt.p)
		}
		b, err := json.Marshal(tt.p)
		if err != nil {
			t.Fatal(err)
		}
		var back Position
		if err := json.Unmarshal(b, &back); err != nil || back != tt.p {
			t.Errorf("JSON round trip of %v via %s = %v, %v", tt.p, b, back, err)
		}
	}
	if p, err := ParsePosition(""); err != nil || !p.IsZero() {
		t.Errorf(`ParsePosition("") = %v, %v; want zero`, p, err)
	}
}

func TestParsePositionRejects(t *testing.T) {
	for _, s := range []string{"-1", "+1", " 1", "1 ", "0x10", "1:", ":1", "1:2:3", "a", "1.5",
		"18446744073709551616", "99999999999999999999999"} {
		if p, err := ParsePosition(s); !errors.Is(err, ErrBadPosition) {
			t.Errorf("ParsePosition(%q) = %v, %v; want ErrBadPosition", s, p, err)
		}
	}
}

func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"", "0", "1", "1:2", "18446744073709551615:1", "x", "1:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			return
		}
		q, err := ParsePosition(p.String())
		if err != nil || q != p {
			t.Fatalf("%q parsed to %v, whose text %q parses to %v, %v", s, p, p.String(), q, err)
		}
	})
}
