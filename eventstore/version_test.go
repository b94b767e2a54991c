package eventstore

import (
	"testing"

	"github.com/recado-dev/recado/eventstore/driver"
)

func TestExpectedVersion(t *testing.T) {
	tests := []struct {
		v     ExpectedVersion
		str   string
		drv   driver.Expected
		exact bool
	}{
		{Any, "any", driver.Expected{Kind: driver.ExpectAny}, false},
		{ExpectedVersion{}, "any", driver.Expected{Kind: driver.ExpectAny}, false},
		{NoStream, "no stream", driver.Expected{Kind: driver.ExpectNoStream}, false},
		{Exact(0), "no stream", driver.Expected{Kind: driver.ExpectNoStream}, false},
		{StreamExists, "stream exists", driver.Expected{Kind: driver.ExpectStreamExists}, false},
		{Exact(12), "12", driver.Expected{Kind: driver.ExpectExact, Version: 12}, true},
		{Exact(MaxVersion + 1), "9223372036854775808", driver.Expected{Kind: driver.ExpectExact, Version: MaxVersion + 1}, true},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.str {
			t.Errorf("String() = %q, want %q", got, tt.str)
		}
		if got := tt.v.driver(); got != tt.drv {
			t.Errorf("%s: driver() = %+v, want %+v", tt.v, got, tt.drv)
		}
		if v, ok := tt.v.IsExact(); ok != tt.exact || ok && v != tt.drv.Version {
			t.Errorf("%s: IsExact() = %d, %v", tt.v, v, ok)
		}
	}
	if Exact(3) != Exact(3) || Exact(3) == Exact(4) || Exact(0) != NoStream || Any == NoStream {
		t.Error("ExpectedVersion values do not compare as their meaning")
	}
}
