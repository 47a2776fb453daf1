package importer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/usersync/usersync/outbox"
)

func TestBuildRow(t *testing.T) {
	t.Parallel()
	fetched := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ms835 := time.Date(2022, 5, 31, 15, 56, 31, 835_000_000, time.UTC)
	stackUser := `{"id":"s1","display_name":"Jo","signed_up_at_millis":1654012591514}`
	tests := []struct {
		name, provider, user string
		wantEventID          string
		wantAt               time.Time
	}{
		{"clerk updated_at in ms", outbox.ProviderClerk, `{"id":"user_1","updated_at":1654012591835}`,
			"import:1654012591835:user_1", ms835},
		{"workos ISO updated_at", outbox.ProviderWorkOS, `{"id":"user_1","updated_at":"2022-05-31T15:56:31.835Z"}`,
			"import:1654012591835:user_1", ms835},
		{"workos ISO updated_at with an offset", outbox.ProviderWorkOS, `{"id":"user_1","updated_at":"2022-05-31T17:56:31.835+02:00"}`,
			"import:1654012591835:user_1", ms835},
		{"stack: content hash, fetch time", outbox.ProviderStack, stackUser,
			"import:" + sha16(`{"display_name":"Jo","id":"s1","signed_up_at_millis":1654012591514}`) + ":s1", fetched},
		{"clerk without updated_at: hash, fetch time", outbox.ProviderClerk, `{"id":"u","first_name":"A"}`,
			"import:" + sha16(`{"first_name":"A","id":"u"}`) + ":u", fetched},
		{"workos with an unreadable updated_at: hash, fetch time", outbox.ProviderWorkOS, `{"updated_at":"soon","id":"u"}`,
			"import:" + sha16(`{"id":"u","updated_at":"soon"}`) + ":u", fetched},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			row, err := buildRow(tt.provider, json.RawMessage(tt.user), fetched)
			if err != nil {
				t.Fatalf("buildRow: %v", err)
			}
			if row.eventID != tt.wantEventID || !row.occurredAt.Equal(tt.wantAt) || string(row.payload) != tt.user {
				t.Errorf("row = %q at %v payload %s; want %q at %v and the object unchanged",
					row.eventID, row.occurredAt, row.payload, tt.wantEventID, tt.wantAt)
			}
		})
	}
}

// sha16 is the first 16 hex digits of the SHA-256 of s, for expectations
// written out by hand in canonical form.
func sha16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:16]
}

func TestContentHash(t *testing.T) {
	t.Parallel()
	a := `{"id":"s1","n":12345678901234567890,"tags":["<b>","x"],"o":{"z":1,"a":null}}`
	b := "{ \"o\": {\"a\": null, \"z\": 1}, \"tags\": [\"<b>\", \"x\"],\n \"n\": 12345678901234567890, \"id\": \"s1\" }"
	want := sha16(`{"id":"s1","n":12345678901234567890,"o":{"a":null,"z":1},"tags":["<b>","x"]}`)
	for _, in := range []string{a, b} {
		got, err := contentHash(json.RawMessage(in))
		if err != nil || got != want {
			t.Errorf("contentHash(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	changed, _ := contentHash(json.RawMessage(strings.Replace(a, `"x"`, `"y"`, 1)))
	if changed == want {
		t.Error("a changed value kept the hash")
	}
}

func TestBuildRow_Skips(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, user, want string }{
		{"array", `[1]`, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"no id", `{"name":"x"}`, `no "id"`},
		{"numeric id", `{"id":7}`, `no "id"`},
		{"empty id", `{"id":""}`, `no "id"`},
		{"id too long", `{"id":"` + strings.Repeat("x", outbox.MaxUserIDBytes+1) + `"}`, "not a user id"},
		{"NUL escape", `{"id":"u","name":"a\u0000b"}`, `\u0000`},
	}
	for _, tt := range tests {
		if _, err := buildRow(outbox.ProviderClerk, json.RawMessage(tt.user), time.Now()); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: buildRow = %v, want an error mentioning %q", tt.name, err, tt.want)
		}
	}
}

func TestHasNULEscape(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		`{"a":"\u0000"}`:       true,
		`{"a":"x\\\u0000"}`:    true,  // an escaped backslash, then the escape
		`{"a":"\\u0000"}`:      false, // a backslash and the text u0000
		`{"a":"\\\\u0000"}`:    false,
		`{"a":"\u00000"}`:      true,
		`{"a":"u0000 \u0001"}`: false,
	}
	for in, want := range tests {
		if got := hasNULEscape([]byte(in)); got != want {
			t.Errorf("hasNULEscape(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestReconcileEventID(t *testing.T) {
	t.Parallel()
	at := time.Date(2024, 3, 1, 0, 0, 0, 123_456_789, time.UTC)
	if got := reconcileEventID(at, "user_1"); got != "reconcile:1709251200123:user_1" {
		t.Errorf("reconcileEventID = %q", got)
	}
}
