package outbox

import (
	"bytes"
	"encoding/json"
	"testing"
)

// scanCases are inputs the scanner must agree on with encoding/json.
var scanCases = []string{
	`{}`, ` { } `, `{"a":1}`, `{"a":1,"a":2}`, `{"a":{"b":[1,2,{"c":null}]},"d":"x"}`,
	`{"a\u0041":true}`, `{"a\\"b":false}`, `{"e":-0.5e+10,"f":0,"g":1E3,"h":-12.25}`,
	`{"s":"tab\tinside"}`, `{"s":"\ud800"}`, `{"a":1,}`, `{"a" 1}`, `{"a":01}`, `{"a":.5}`,
	`{"a":1.}`, `{"a":1e}`, `{"a":tru}`, `{"a":"unterminated}`, `{"a":"bad \x escape"}`,
	`[1,2]`, `null`, `"s"`, `{"a":1} x`, "{\"k\xff\":1}", "{\"v\":\"\xff\"}", `{"a":[1,2,]}`,
	`{"a":-}`, `{"a":"\u12"}`, `{` + "\n\t\r " + `"a"` + "\n:\n" + `1` + "\n" + `}`,
}

func TestScanObject_AgreesWithEncodingJSON(t *testing.T) {
	for _, in := range scanCases {
		checkScanAgrees(t, []byte(in))
	}
}

func FuzzScanObject(f *testing.F) {
	for _, in := range scanCases {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkScanAgrees(t, b) })
}

// checkScanAgrees: whenever the scanner answers, encoding/json gives the same
// members; and a plain valid object is never deferred.
func checkScanAgrees(t *testing.T, b []byte) {
	t.Helper()
	scanned, ok := scanObject(b)
	got := map[string]json.RawMessage{}
	for _, f := range scanned {
		got[string(f.key)] = f.value
	}
	var want map[string]json.RawMessage
	err := json.Unmarshal(b, &want)
	if !ok {
		if err == nil && want != nil && json.Valid(b) && bytes.IndexByte(b, 0x80) < 0 && !hasNonASCII(b) {
			t.Errorf("scanObject(%q) deferred a valid ASCII object", b)
		}
		return
	}
	if err != nil {
		t.Fatalf("scanObject(%q) accepted what encoding/json refuses: %v", b, err)
	}
	if len(got) != len(want) {
		t.Fatalf("scanObject(%q) = %d members, encoding/json %d", b, len(got), len(want))
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Fatalf("scanObject(%q)[%q] = %q, encoding/json %q", b, k, got[k], v)
		}
	}
}

func hasNonASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

func TestObjectList_AgreesWithEncodingJSON(t *testing.T) {
	for _, in := range []string{`[]`, `[{"id":"a"},null,{"id":"b"}]`, `[1]`, `[{"a":1},"x"]`, "[{\"k\xff\":1}]", `{}`, `[{"a":1}`} {
		got, ok := objectList(json.RawMessage(in))
		var want []map[string]json.RawMessage
		err := json.Unmarshal([]byte(in), &want)
		if ok != (err == nil && kind(json.RawMessage(in)) == "array") {
			t.Errorf("objectList(%q) ok = %v, encoding/json error %v", in, ok, err)
			continue
		}
		if ok && len(got) != len(want) {
			t.Errorf("objectList(%q) = %d elements, want %d", in, len(got), len(want))
		}
	}
}

func BenchmarkDecode_ClerkEnvelope(b *testing.B) {
	payload := readSample(b, "clerk_user.updated.json")
	rec := Record{ID: 1, Provider: ProviderClerk, EventType: TypeUpdated, Payload: payload}
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := Decode(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScanObject(b *testing.B) {
	payload := readSample(b, "clerk_user.updated.json")
	b.Run("scanObject", func(b *testing.B) {
		for b.Loop() {
			if _, ok := scanObject(payload); !ok {
				b.Fatal("deferred")
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(payload, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestUnquote_AgreesWithEncodingJSON(t *testing.T) {
	for _, in := range []string{`"plain"`, `""`, `"with \"escape\""`, `"tab\tin"`, "\"\xff\"", `"\u00e9"`, `"é"`, `5`, `"unterminated`, `null`, `"a"b"`} {
		var got, want string
		ok := unquote(json.RawMessage(in), &got)
		err := json.Unmarshal([]byte(in), &want)
		if ok != (err == nil) || got != want {
			t.Errorf("unquote(%q) = %q, %v; encoding/json %q, %v", in, got, ok, want, err)
		}
	}
}
