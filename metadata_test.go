package recado

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestMetadataRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		md   Metadata
	}{
		{"empty", Metadata{}},
		{"known fields", Metadata{CorrelationID: "order-42", CausationID: "cmd-1", IdempotencyKey: "k1",
			TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "congo=t61rcWkgMzE"}},
		{"user fields", Metadata{CorrelationID: "c", Fields: map[string]string{"tenant": "acme", "user": "ana", "z": "last"}}},
		{"one user field", Metadata{Fields: map[string]string{"tenant": "acme"}}},
		{"escapes", Metadata{CausationID: "quote\" back\\slash\nnewline\ttab\x01", Fields: map[string]string{"k\"ey": "<&>"}}},
		{"unicode", Metadata{CorrelationID: "café ☕ 注文 😀", Fields: map[string]string{"ключ": "значение"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.md.Validate(); err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			b := tt.md.AppendJSON(nil)
			if tt.md.IsZero() != (len(b) == 0) {
				t.Errorf("AppendJSON = %q for IsZero() = %v", b, tt.md.IsZero())
			}
			if len(b) > 0 && !json.Valid(b) {
				t.Fatalf("AppendJSON wrote invalid JSON: %s", b)
			}
			got, err := ParseMetadata(b)
			if err != nil {
				t.Fatalf("ParseMetadata(%s) = %v", b, err)
			}
			if !reflect.DeepEqual(got, tt.md) {
				t.Errorf("round trip via %s:\n got %+v\nwant %+v", b, got, tt.md)
			}
			// encoding/json agrees with the hand-written form.
			jb, err := json.Marshal(tt.md)
			if err != nil {
				t.Fatal(err)
			}
			var back Metadata
			if err := json.Unmarshal(jb, &back); err != nil || !reflect.DeepEqual(back, tt.md) {
				t.Errorf("json round trip via %s = %+v, %v", jb, back, err)
			}
		})
	}
}

func TestMetadataAppendJSONIsStable(t *testing.T) {
	md := Metadata{Fields: map[string]string{"b": "2", "a": "1", "c": "3"}}
	want := `{"a":"1","b":"2","c":"3"}`
	for range 20 {
		if got := string(md.AppendJSON(nil)); got != want {
			t.Fatalf("AppendJSON = %s, want %s", got, want)
		}
	}
	// A field with an empty value is kept: it reads back as present and empty,
	// on every backend. Metadata's own fields are absent when empty.
	md = Metadata{CorrelationID: "", Fields: map[string]string{"a": ""}}
	if got := string(md.AppendJSON(nil)); got != `{"a":""}` {
		t.Errorf("metadata with an empty field value encodes as %q, want {\"a\":\"\"}", got)
	}
	back, err := ParseMetadata(md.AppendJSON(nil))
	if v, ok := back.Fields["a"]; err != nil || !ok || v != "" {
		t.Errorf("empty field value read back as %q, present %v, error %v", v, ok, err)
	}
}

func TestMetadataValidate(t *testing.T) {
	tests := []struct {
		name string
		md   Metadata
	}{
		{"reserved field", Metadata{Fields: map[string]string{"correlation_id": "x"}}},
		{"reserved traceparent", Metadata{Fields: map[string]string{"traceparent": "x"}}},
		{"empty field name", Metadata{Fields: map[string]string{"": "x"}}},
		{"bad utf8 value", Metadata{Fields: map[string]string{"k": "\xff"}}},
		{"bad utf8 key", Metadata{Fields: map[string]string{"\xfe": "v"}}},
		{"bad utf8 known", Metadata{CausationID: "\xff"}},
		{"NUL in value", Metadata{Fields: map[string]string{"k": "a\x00b"}}},
		{"NUL in key", Metadata{Fields: map[string]string{"k\x00": "v"}}},
		{"NUL in known", Metadata{TraceState: "\x00"}},
	}
	for _, tt := range tests {
		if err := tt.md.Validate(); !errors.Is(err, ErrBadMetadata) {
			t.Errorf("%s: Validate() = %v, want ErrBadMetadata", tt.name, err)
		}
		if _, err := json.Marshal(tt.md); err == nil {
			t.Errorf("%s: json.Marshal succeeded on invalid metadata", tt.name)
		}
	}
}

func TestParseMetadataGeneralJSON(t *testing.T) {
	got, err := ParseMetadata([]byte(` { "correlation_id" : "c\u00e9" , "x": "1" } `))
	want := Metadata{CorrelationID: "cé", Fields: map[string]string{"x": "1"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ParseMetadata = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{`{"a":1}`, `[]`, `{"a":"b"`, `"x"`, `{"a":null}x`, `{"a":{"b":"c"}}`} {
		if md, err := ParseMetadata([]byte(bad)); !errors.Is(err, ErrBadMetadata) {
			t.Errorf("ParseMetadata(%s) = %+v, %v; want ErrBadMetadata", bad, md, err)
		}
	}
}

func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"correlation_id":"a","x":"y"}`, `{"a":"\n"}`, `{"a":1}`, `{"a":"b",}`, `{"":""}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		md, err := ParseMetadata(b)
		if err != nil {
			if !errors.Is(err, ErrBadMetadata) {
				t.Fatalf("error %v does not wrap ErrBadMetadata", err)
			}
			return
		}
		// Whatever parses must survive the stored form (dropping empty values and
		// the fields Validate rejects is allowed only if Validate says so).
		if md.Validate() != nil {
			return
		}
		back, err := ParseMetadata(md.AppendJSON(nil))
		if err != nil {
			t.Fatalf("re-parse of %s: %v", md.AppendJSON(nil), err)
		}
		if !reflect.DeepEqual(dropEmpty(back), dropEmpty(md)) {
			t.Fatalf("round trip changed %+v into %+v", md, back)
		}
	})
}

func dropEmpty(m Metadata) Metadata {
	for k, v := range m.Fields {
		if v == "" {
			delete(m.Fields, k)
		}
	}
	if len(m.Fields) == 0 {
		m.Fields = nil
	}
	return m
}

func BenchmarkMetadata(b *testing.B) {
	md := Metadata{CorrelationID: "0193a1b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b", CausationID: "cmd-42", Fields: map[string]string{"tenant": "acme"}}
	buf := md.AppendJSON(nil)
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var out []byte
		for b.Loop() {
			out = md.AppendJSON(out[:0])
		}
	})
	b.Run("Parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseMetadata(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
