package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// samplesDir holds the shared provider payloads. Per its README.md,
// clerk_user.created.json is VERBATIM from Clerk's docs; clerk_user.updated,
// clerk_user.deleted and all stackauth_user.* files are CONSTRUCTED from the
// providers' published types; svix_signature_test_vector.json is a webhook
// signature vector, not a user payload.
const samplesDir = "testdata/providers" // a copy of shared/testdata/providers (see its README.md)

// readSample returns a file from samplesDir.
func readSample(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(samplesDir, name))
	if err != nil {
		tb.Fatalf("read sample: %v", err)
	}
	return b
}

// sampleData returns the "data" member of a sample webhook body.
func sampleData(tb testing.TB, name string) json.RawMessage {
	tb.Helper()
	var body struct{ Data json.RawMessage }
	if err := json.Unmarshal(readSample(tb, name), &body); err != nil {
		tb.Fatalf("parse sample %s: %v", name, err)
	}
	return body.Data
}

// rfc parses an RFC 3339 time for expectations.
func rfc(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		tb.Fatalf("bad test time %q: %v", s, err)
	}
	return t
}

func someString(s string) *string { return &s }

func someTime(t time.Time) *time.Time { return &t }

// showProfile renders a profile for failure messages.
func showProfile(p Profile) string {
	s := func(v *string) string {
		if v == nil {
			return "nil"
		}
		return fmt.Sprintf("%q", *v)
	}
	ts := func(v *time.Time) string {
		if v == nil {
			return "nil"
		}
		return v.Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("{name:%s email:%s created_at:%s updated_at:%s}",
		s(p.Name), s(p.Email), ts(p.CreatedAt), ts(p.UpdatedAt))
}

func profilesEqual(a, b Profile) bool {
	return equalString(a.Name, b.Name) && equalString(a.Email, b.Email) &&
		equalTime(a.CreatedAt, b.CreatedAt) && equalTime(a.UpdatedAt, b.UpdatedAt)
}

// checkPGTime fails unless t is what Postgres would hand back: UTC, whole µs.
func checkPGTime(tb testing.TB, what string, t *time.Time) {
	tb.Helper()
	if t == nil {
		return
	}
	if t.Location() != time.UTC || t.Nanosecond()%1000 != 0 {
		tb.Errorf("%s = %v, want UTC truncated to microseconds", what, *t)
	}
}

// checkEvent compares the fields Decode computes.
func checkEvent(tb testing.TB, got Event, wantID string, wantAt time.Time, want Profile) {
	tb.Helper()
	if got.UserID != wantID {
		tb.Errorf("UserID = %q, want %q", got.UserID, wantID)
	}
	if !got.OccurredAt.Equal(wantAt) {
		tb.Errorf("OccurredAt = %v, want %v", got.OccurredAt, wantAt)
	}
	if !profilesEqual(got.Profile, want) {
		tb.Errorf("Profile = %s\nwant      %s", showProfile(got.Profile), showProfile(want))
	}
	checkPGTime(tb, "OccurredAt", &got.OccurredAt)
	checkPGTime(tb, "CreatedAt", got.Profile.CreatedAt)
	checkPGTime(tb, "UpdatedAt", got.Profile.UpdatedAt)
}

func TestDecode_Samples(t *testing.T) {
	t.Parallel()
	// received has nanoseconds and a zone, to show both are normalised.
	received := time.Date(2030, 1, 2, 4, 4, 5, 678901234, time.FixedZone("CET", 3600))
	receivedPG := rfc(t, "2030-01-02T03:04:05.678901Z")
	column := time.Date(2022, 6, 1, 17, 0, 0, 123456789, time.FixedZone("CEST", 7200))
	columnPG := rfc(t, "2022-06-01T15:00:00.123456Z")
	clerkID, stackID := "user_29w83sxmDNGwOuEthce5gg56FcC", "3da0df92-6f63-4ee2-b33d-3aa56e90d31d"
	workosID := "user_01HQ3D8JZ4W2B7C9E1F3G5H7JK"
	tests := []struct {
		name, file, provider, eventType string
		occurredAt                      *time.Time // the outbox column
		wantID                          string
		wantAt                          time.Time
		want                            Profile
	}{
		{
			name: "clerk created (verbatim) takes envelope timestamp", file: "clerk_user.created.json",
			provider: ProviderClerk, eventType: TypeCreated, wantID: clerkID,
			wantAt: rfc(t, "2022-05-31T15:56:31.835Z"),
			want: Profile{
				Name: someString("Example Example"), Email: someString("example@example.org"),
				CreatedAt: someTime(rfc(t, "2022-05-31T15:56:31.514Z")),
				UpdatedAt: someTime(rfc(t, "2022-05-31T15:56:31.835Z")),
			},
		},
		{
			name: "clerk created (verbatim) prefers occurred_at column", file: "clerk_user.created.json",
			provider: ProviderClerk, eventType: TypeCreated, occurredAt: &column, wantID: clerkID,
			wantAt: columnPG,
			want: Profile{
				Name: someString("Example Example"), Email: someString("example@example.org"),
				CreatedAt: someTime(rfc(t, "2022-05-31T15:56:31.514Z")),
				UpdatedAt: someTime(rfc(t, "2022-05-31T15:56:31.835Z")),
			},
		},
		{
			name: "clerk updated (constructed)", file: "clerk_user.updated.json",
			provider: ProviderClerk, eventType: TypeUpdated, wantID: clerkID,
			wantAt: rfc(t, "2022-06-01T15:58:43.456Z"),
			want: Profile{
				Name: someString("Example Renamed"), Email: someString("example.renamed@example.org"),
				CreatedAt: someTime(rfc(t, "2022-05-31T15:56:31.514Z")),
				UpdatedAt: someTime(rfc(t, "2022-06-01T15:58:43.456Z")),
			},
		},
		{
			name: "clerk deleted (constructed)", file: "clerk_user.deleted.json",
			provider: ProviderClerk, eventType: TypeDeleted, wantID: clerkID,
			wantAt: rfc(t, "2022-06-02T19:43:20Z"),
		},
		{
			name: "stack created (constructed) falls back to received_at", file: "stackauth_user.created.json",
			provider: ProviderStack, eventType: TypeCreated, wantID: stackID, wantAt: receivedPG,
			want: Profile{
				Name: someString("Jordan Rivera"), Email: someString("jordan@company.co"),
				CreatedAt: someTime(rfc(t, "2025-10-07T05:23:37.090Z")), UpdatedAt: &receivedPG,
			},
		},
		{
			name: "stack updated (constructed) with occurred_at column", file: "stackauth_user.updated.json",
			provider: ProviderStack, eventType: TypeUpdated, occurredAt: &column, wantID: stackID, wantAt: columnPG,
			want: Profile{
				Name: someString("Jordan R."), Email: someString("jordan@company.co"),
				CreatedAt: someTime(rfc(t, "2025-10-07T05:23:37.090Z")), UpdatedAt: &columnPG,
			},
		},
		{
			name: "stack deleted (constructed)", file: "stackauth_user.deleted.json",
			provider: ProviderStack, eventType: TypeDeleted, wantID: stackID, wantAt: receivedPG,
		},
		{
			name: "workos created (constructed) takes the envelope created_at", file: "workos_user.created.json",
			provider: ProviderWorkOS, eventType: TypeCreated, wantID: workosID,
			wantAt: rfc(t, "2024-02-20T09:15:02.503Z"),
			want: Profile{
				Name: someString("Amara Okafor"), Email: someString("amara.okafor@example.com"),
				CreatedAt: someTime(rfc(t, "2024-02-20T09:15:02.417Z")),
				UpdatedAt: someTime(rfc(t, "2024-02-20T09:15:02.417Z")),
			},
		},
		{
			name: "workos updated (constructed): names trimmed", file: "workos_user.updated.json",
			provider: ProviderWorkOS, eventType: TypeUpdated, wantID: workosID,
			wantAt: rfc(t, "2024-02-21T08:02:11.034Z"),
			want: Profile{
				Name: someString("Amara Okafor-Reyes"), Email: someString("amara@okafor.dev"),
				CreatedAt: someTime(rfc(t, "2024-02-20T09:15:02.417Z")),
				UpdatedAt: someTime(rfc(t, "2024-02-21T08:02:10.986Z")),
			},
		},
		{
			name: "workos updated (constructed) prefers occurred_at column", file: "workos_user.updated.json",
			provider: ProviderWorkOS, eventType: TypeUpdated, occurredAt: &column, wantID: workosID, wantAt: columnPG,
			want: Profile{
				Name: someString("Amara Okafor-Reyes"), Email: someString("amara@okafor.dev"),
				CreatedAt: someTime(rfc(t, "2024-02-20T09:15:02.417Z")),
				UpdatedAt: someTime(rfc(t, "2024-02-21T08:02:10.986Z")),
			},
		},
		{
			name: "workos deleted (constructed)", file: "workos_user.deleted.json",
			provider: ProviderWorkOS, eventType: TypeDeleted, wantID: workosID,
			wantAt: rfc(t, "2024-02-23T17:40:05.271Z"),
		},
	}
	covered := map[string]bool{"README.md": true, "svix_signature_test_vector.json": true}
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			eventID := "msg_1"
			rec := Record{
				ID: 42, Provider: tt.provider, EventType: tt.eventType, Payload: readSample(t, tt.file),
				EventID: &eventID, OccurredAt: tt.occurredAt, ReceivedAt: received,
			}
			ev, err := Decode(rec)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			checkEvent(t, ev, tt.wantID, tt.wantAt, tt.want)
			if ev.OutboxID != 42 || ev.Provider != tt.provider || ev.Type != tt.eventType || ev.EventID != &eventID {
				t.Errorf("record fields not carried over: %+v", ev)
			}
			if !SameJSON(ev.Object, sampleData(t, tt.file)) {
				t.Errorf("Object = %s, want the sample's \"data\"", ev.Object)
			}
		})
	}
	t.Run("every sample file is covered", func(t *testing.T) {
		entries, err := os.ReadDir(samplesDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !covered[e.Name()] {
				t.Errorf("sample %s has no case in TestDecode_Samples", e.Name())
			}
		}
	})
}

// TestDecode_SvixVector feeds the one sample that is not a user payload (the
// Svix signature vector) to the generic adapter: it must be rejected.
func TestDecode_SvixVector(t *testing.T) {
	t.Parallel()
	_, err := Decode(Record{ID: 1, Provider: ProviderGeneric, EventType: TypeCreated,
		Payload: readSample(t, "svix_signature_test_vector.json")})
	var rej *RejectError
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, `"id"`) {
		t.Fatalf("Decode = %v, want a reject about the missing \"id\"", err)
	}
}

func TestDecode_Mapping(t *testing.T) {
	t.Parallel()
	received := rfc(t, "2030-01-01T00:00:00Z")
	ms514 := rfc(t, "2022-05-31T15:56:31.514Z")
	ms835 := rfc(t, "2022-05-31T15:56:31.835Z")
	tests := []struct {
		name, provider, eventType, payload string
		occurredAt                         *time.Time
		wantID                             string
		wantAt                             time.Time
		want                               Profile
		wantObject                         string
	}{
		{
			name: "clerk bare object: primary email not first, names trimmed", provider: ProviderClerk, eventType: TypeUpdated,
			payload: `{"id":"u1","first_name":"  Ada ","last_name":"\tLovelace\n","primary_email_address_id":"e2",
				"email_addresses":[{"id":"e1","email_address":"old@x.org"},{"id":"e2","email_address":"ada@x.org"}],
				"created_at":1654012591514,"updated_at":1654012591835}`,
			wantID: "u1", wantAt: ms835,
			want: Profile{Name: someString("Ada Lovelace"), Email: someString("ada@x.org"), CreatedAt: &ms514, UpdatedAt: &ms835},
		},
		{
			name: "clerk: unknown primary id takes first address; last name only", provider: ProviderClerk, eventType: TypeCreated,
			payload: `{"id":"u1","first_name":" ","last_name":"Lovelace","primary_email_address_id":"nope",
				"email_addresses":[{"id":"e1","email_address":"first@x.org"},{"id":"e2","email_address":"second@x.org"}]}`,
			wantID: "u1", wantAt: received,
			want: Profile{Name: someString("Lovelace"), Email: someString("first@x.org"), UpdatedAt: &received},
		},
		{
			name: "generic envelope carrying its own event id", provider: ProviderGeneric, eventType: TypeUpdated,
			payload: `{"id":"evt_1","type":"user.updated","timestamp":1654012591835,"data":{"id":"u7","name":"Gen"}}`,
			wantID:  "u7", wantAt: ms835,
			want:       Profile{Name: someString("Gen"), UpdatedAt: &ms835},
			wantObject: `{"id":"u7","name":"Gen"}`,
		},
		{
			name: "clerk: no names falls back to username; no addresses", provider: ProviderClerk, eventType: TypeCreated,
			payload: `{"id":"u1","first_name":null,"last_name":"","username":"ada","email_addresses":[],"created_at":null}`,
			wantID:  "u1", wantAt: received,
			want: Profile{Name: someString("ada"), UpdatedAt: &received},
		},
		{
			name: "clerk: no names and empty username is null", provider: ProviderClerk, eventType: TypeCreated,
			payload: `{"id":"u1","first_name":"","username":"","primary_email_address_id":null}`,
			wantID:  "u1", wantAt: received, want: Profile{UpdatedAt: &received},
		},
		{
			name: "clerk envelope without timestamp uses updated_at", provider: ProviderClerk, eventType: TypeUpdated,
			payload: `{"type":"user.updated","data":{"id":"u1","updated_at":1654012591835}}`,
			wantID:  "u1", wantAt: ms835, want: Profile{UpdatedAt: &ms835},
			wantObject: `{"id":"u1","updated_at":1654012591835}`,
		},
		{
			name: "clerk float millis with a fraction", provider: ProviderClerk, eventType: TypeUpdated,
			payload: `{"id":"u1","updated_at":1654012591835.4567}`,
			wantID:  "u1", wantAt: rfc(t, "2022-05-31T15:56:31.835456Z"),
			want: Profile{UpdatedAt: someTime(rfc(t, "2022-05-31T15:56:31.835456Z"))},
		},
		{
			name: "clerk bare delete object has no event time", provider: ProviderClerk, eventType: TypeDeleted,
			payload: `{"deleted":true,"id":"u1","object":"user"}`, wantID: "u1", wantAt: received,
		},
		{
			name: "a top-level id means a bare object even with a data member", provider: ProviderGeneric, eventType: TypeCreated,
			payload: ` {"id":"u1","data":{"id":"other"}} `, wantID: "u1", wantAt: received,
			want: Profile{UpdatedAt: &received}, wantObject: `{"id":"u1","data":{"id":"other"}}`,
		},
		{
			name: "generic RFC 3339 times, truncated to microseconds", provider: ProviderGeneric, eventType: TypeCreated,
			payload: `{"id":"g1","name":"Grace","email":"grace@x.org","created_at":"2024-01-02T03:04:05.123456789+02:00","updated_at":"2024-01-03T00:00:00Z"}`,
			wantID:  "g1", wantAt: rfc(t, "2024-01-03T00:00:00Z"),
			want: Profile{
				Name: someString("Grace"), Email: someString("grace@x.org"),
				CreatedAt: someTime(rfc(t, "2024-01-02T01:04:05.123456Z")), UpdatedAt: someTime(rfc(t, "2024-01-03T00:00:00Z")),
			},
		},
		{
			name: "generic envelope timestamp wins over updated_at", provider: ProviderGeneric, eventType: TypeUpdated,
			payload: `{"type":"user.updated","timestamp":1654012591514,"data":{"id":"g1","name":"","updated_at":1654012591835}}`,
			wantID:  "g1", wantAt: ms514, want: Profile{Name: someString(""), UpdatedAt: &ms835},
			wantObject: `{"id":"g1","name":"","updated_at":1654012591835}`,
		},
		{
			name: "occurred_at column wins over everything", provider: ProviderGeneric, eventType: TypeUpdated,
			payload: `{"type":"user.updated","timestamp":1654012591514,"data":{"id":"g1"}}`, occurredAt: &received,
			wantID: "g1", wantAt: received, want: Profile{UpdatedAt: &received}, wantObject: `{"id":"g1"}`,
		},
		{
			name: "stack bare object with nulls", provider: ProviderStack, eventType: TypeCreated,
			payload: `{"id":"s1","display_name":null,"primary_email":null,"signed_up_at_millis":null}`,
			wantID:  "s1", wantAt: received, want: Profile{UpdatedAt: &received},
		},
		{
			name: "workos bare object (list-users API) takes its updated_at", provider: ProviderWorkOS, eventType: TypeUpdated,
			payload: `{"object":"user","id":"w1","email":"w@x.org","first_name":"","last_name":"  Hopper ",
				"created_at":"2022-05-31T15:56:31.514Z","updated_at":"2022-05-31T15:56:31.835Z"}`,
			wantID: "w1", wantAt: ms835,
			want: Profile{Name: someString("Hopper"), Email: someString("w@x.org"), CreatedAt: &ms514, UpdatedAt: &ms835},
		},
		{
			name: "workos: no names and no times; a user's own created_at is not the event time", provider: ProviderWorkOS, eventType: TypeCreated,
			payload: `{"id":"w1","first_name":null,"last_name":" ","email":null,"created_at":"2022-05-31T15:56:31.514Z"}`,
			wantID:  "w1", wantAt: received, want: Profile{CreatedAt: &ms514, UpdatedAt: &received},
		},
		{
			name: "workos envelope without created_at uses updated_at; space-separated zoneless time is UTC", provider: ProviderWorkOS, eventType: TypeUpdated,
			payload: `{"id":"event_1","event":"user.updated","data":{"id":"w1","updated_at":"2022-05-31 15:56:31.835"}}`,
			wantID:  "w1", wantAt: ms835, want: Profile{UpdatedAt: &ms835},
			wantObject: `{"id":"w1","updated_at":"2022-05-31 15:56:31.835"}`,
		},
		{
			name: "workos envelope created_at with an offset", provider: ProviderWorkOS, eventType: TypeDeleted,
			payload: `{"id":"event_1","event":"user.deleted","created_at":"2022-05-31T17:56:31.514+02:00","data":{"id":"w1"}}`,
			wantID:  "w1", wantAt: ms514, wantObject: `{"id":"w1"}`,
		},
		{
			name: "workos: a \"type\" member is no envelope type, so an id at the top level means a bare object", provider: ProviderWorkOS, eventType: TypeCreated,
			payload: `{"id":"w1","type":"user.created","data":{"id":"other"}}`, wantID: "w1", wantAt: received,
			want: Profile{UpdatedAt: &received},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, err := Decode(Record{ID: 7, Provider: tt.provider, EventType: tt.eventType,
				Payload: []byte(tt.payload), OccurredAt: tt.occurredAt, ReceivedAt: received})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			checkEvent(t, ev, tt.wantID, tt.wantAt, tt.want)
			wantObject := tt.wantObject
			if wantObject == "" {
				wantObject = tt.payload
			}
			if !SameJSON(ev.Object, json.RawMessage(wantObject)) {
				t.Errorf("Object = %s, want %s", ev.Object, wantObject)
			}
		})
	}
}

func TestDecode_Rejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, provider, eventType, payload string
		// mentions are substrings the reason must contain: the offending
		// field and, where it helps, the offending value.
		mentions []string
	}{
		{"unknown provider", "auth0", TypeCreated, `{"id":"u"}`,
			[]string{`unknown provider "auth0"`, "clerk, stack, workos or generic"}},
		{"unknown event type", ProviderClerk, "user.banned", `{"id":"u"}`,
			[]string{`event_type "user.banned"`, "user.created, user.updated, user.deleted"}},
		{"invalid JSON", ProviderClerk, TypeCreated, `{"id":`, []string{"payload is not valid JSON"}},
		{"array payload", ProviderClerk, TypeCreated, `[{"id":"u"}]`, []string{"payload is a JSON array"}},
		{"null payload", ProviderStack, TypeCreated, `null`, []string{"payload is JSON null"}},
		{"string payload", ProviderGeneric, TypeCreated, `"u"`, []string{"payload is a JSON string"}},
		{"envelope type disagrees", ProviderClerk, TypeCreated, `{"type":"user.updated","data":{"id":"u"}}`,
			[]string{`"type" is "user.updated"`, `event_type is "user.created"`}},
		{"clerk delete without id", ProviderClerk, TypeDeleted, `{"type":"user.deleted","data":{"deleted":true,"object":"user"}}`,
			[]string{`clerk user.deleted payload has no "id" in "data": cannot tell which user was deleted`}},
		{"bare object without id", ProviderGeneric, TypeUpdated, `{"name":"x"}`,
			[]string{`no "id" at the top level`, "was updated"}},
		{"data that is not an object is no envelope", ProviderGeneric, TypeCreated, `{"data":[1]}`,
			[]string{`no "id" at the top level`}},
		{"numeric id", ProviderStack, TypeCreated, `{"id":42}`, []string{`"id" at the top level is 42`, "non-empty string"}},
		{"empty id", ProviderStack, TypeCreated, `{"data":{"id":""}}`, []string{`"id" in "data" is ""`}},
		{"null id", ProviderStack, TypeDeleted, `{"id":null}`, []string{`"id" at the top level is null`}},
		{"id with NUL", ProviderGeneric, TypeCreated, `{"id":"a\u0000b"}`, []string{`"id"`, `\u0000`}},
		{"id too long", ProviderGeneric, TypeCreated, `{"id":"` + strings.Repeat("x", MaxUserIDBytes+1) + `"}`,
			[]string{`"id" at the top level is 1025 bytes long`, "1024"}},
		{"clerk updated_at not a number", ProviderClerk, TypeUpdated, `{"data":{"id":"u","updated_at":"abc"}}`,
			[]string{`clerk user.updated "updated_at" in "data" is "abc", want a millisecond epoch number`}},
		{"clerk created_at a string of digits", ProviderClerk, TypeCreated, `{"id":"u","created_at":"1654012591514"}`,
			[]string{`"created_at" at the top level is "1654012591514"`}},
		{"clerk timestamp not a number", ProviderClerk, TypeDeleted, `{"timestamp":true,"data":{"id":"u"}}`,
			[]string{`"timestamp" at the top level is true`}},
		{"clerk delete with bad updated_at and no timestamp", ProviderClerk, TypeDeleted, `{"id":"u","updated_at":{}}`,
			[]string{`"updated_at" at the top level is {}`}},
		{"clerk millis beyond year 9999", ProviderClerk, TypeCreated, `{"id":"u","created_at":1e300}`,
			[]string{`"created_at" at the top level is 1e300`, "years 1 to 9999"}},
		{"clerk millis beyond int64", ProviderClerk, TypeCreated, `{"id":"u","updated_at":99999999999999999999}`,
			[]string{`"updated_at"`, "years 1 to 9999"}},
		{"clerk first_name not a string", ProviderClerk, TypeCreated, `{"id":"u","first_name":7}`,
			[]string{`"first_name" at the top level is 7`}},
		{"clerk email_addresses not an array", ProviderClerk, TypeCreated, `{"id":"u","email_addresses":"a@x.org"}`,
			[]string{`"email_addresses" at the top level is "a@x.org"`}},
		{"clerk email_address not a string", ProviderClerk, TypeCreated,
			`{"data":{"id":"u","email_addresses":[{"id":"e","email_address":1}]}}`,
			[]string{`"email_address" in "email_addresses"[0] in "data" is 1`}},
		{"stack signed_up_at_millis as RFC 3339", ProviderStack, TypeCreated, `{"id":"u","signed_up_at_millis":"2024-01-01T00:00:00Z"}`,
			[]string{`"signed_up_at_millis"`, "millisecond epoch"}},
		{"stack display_name not a string", ProviderStack, TypeUpdated, `{"id":"u","display_name":["J"]}`,
			[]string{`"display_name" at the top level is ["J"]`}},
		{"generic created_at not RFC 3339", ProviderGeneric, TypeCreated, `{"id":"u","created_at":"yesterday"}`,
			[]string{`"created_at" at the top level is "yesterday"`, "RFC 3339"}},
		{"generic updated_at a boolean", ProviderGeneric, TypeUpdated, `{"id":"u","updated_at":false}`,
			[]string{`"updated_at" at the top level is false`}},
		{"generic timestamp not a time", ProviderGeneric, TypeUpdated, `{"timestamp":"soon","data":{"id":"u"}}`,
			[]string{`"timestamp" at the top level is "soon"`}},
		{"generic email not a string", ProviderGeneric, TypeCreated, `{"id":"u","email":{"a":1}}`,
			[]string{`"email" at the top level is {"a":1}`}},
		{"workos envelope event disagrees", ProviderWorkOS, TypeCreated, `{"id":"event_1","event":"user.deleted","data":{"id":"w"}}`,
			[]string{`workos user.created payload "event" is "user.deleted"`, `event_type is "user.created"`}},
		{"workos delete without id", ProviderWorkOS, TypeDeleted, `{"id":"event_1","event":"user.deleted","data":{"object":"user"}}`,
			[]string{`workos user.deleted payload has no "id" in "data"`}},
		{"workos updated_at a millisecond epoch", ProviderWorkOS, TypeUpdated, `{"id":"w","updated_at":1654012591835}`,
			[]string{`workos user.updated "updated_at" at the top level is 1654012591835, want an ISO 8601 time string`}},
		{"workos created_at not a time", ProviderWorkOS, TypeCreated, `{"id":"w","created_at":"yesterday"}`,
			[]string{`"created_at" at the top level is "yesterday"`, "ISO 8601"}},
		{"workos envelope created_at not a time", ProviderWorkOS, TypeDeleted, `{"id":"event_1","event":"user.deleted","created_at":"2024-13-01T00:00:00Z","data":{"id":"w"}}`,
			[]string{`"created_at" at the top level is "2024-13-01T00:00:00Z"`}},
		{"workos time beyond year 9999", ProviderWorkOS, TypeCreated, `{"id":"w","created_at":"0000-12-31T23:00:00Z"}`,
			[]string{`"created_at"`, "years 1 to 9999"}},
		{"workos first_name not a string", ProviderWorkOS, TypeCreated, `{"data":{"id":"w","first_name":false}}`,
			[]string{`"first_name" in "data" is false`}},
		{"workos email not a string", ProviderWorkOS, TypeUpdated, `{"id":"w","email":["a@x.org"]}`,
			[]string{`"email" at the top level is ["a@x.org"]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, err := Decode(Record{ID: 1, Provider: tt.provider, EventType: tt.eventType, Payload: []byte(tt.payload)})
			var rej *RejectError
			if !errors.As(err, &rej) {
				t.Fatalf("Decode = %+v, %v; want a *RejectError", ev, err)
			}
			for _, m := range tt.mentions {
				if !strings.Contains(rej.Reason, m) {
					t.Errorf("reason %q does not mention %q", rej.Reason, m)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	rec := Record{ID: 1, Provider: ProviderClerk, EventType: TypeUpdated, Payload: readSample(b, "clerk_user.updated.json")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// (Found in review.) SPEC, provider mapping: "generic: {"id", "name", "email", "created_at",
// "updated_at"} with RFC 3339 or millisecond-epoch times", and validation:
// "every time field the mapping reads parses". RFC 3339 §5.6 lets "T" and
// "Z" be lower case, and §5.7 allows a leap second (60); §5.8 lists
// "1990-12-31T23:59:60Z" and "1990-12-31T15:59:60-08:00" among its own
// examples. Postgres reads all of them (the leap second as the next second).
func TestDecode_GenericReadsEveryRFC3339Time(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"1985-04-12t23:20:50.52z", "1985-04-12T23:20:50.52Z"},
		{"1985-04-12T23:20:50.52z", "1985-04-12T23:20:50.52Z"},
		{"1990-12-31T23:59:60Z", "1991-01-01T00:00:00Z"},
		{"1990-12-31T15:59:60-08:00", "1991-01-01T00:00:00Z"},
	} {
		rec := Record{ID: 1, Provider: ProviderGeneric, EventType: TypeUpdated,
			Payload: []byte(`{"id":"g","updated_at":"` + c.in + `"}`), ReceivedAt: time.Unix(1, 0)}
		ev, err := Decode(rec)
		if err != nil {
			t.Errorf("RFC 3339 time %q rejected: %v", c.in, err)
			continue
		}
		if want := rfc(t, c.want); ev.Profile.UpdatedAt == nil || !ev.Profile.UpdatedAt.Equal(want) {
			t.Errorf("RFC 3339 time %q: updated_at %v, want %v", c.in, ev.Profile.UpdatedAt, want)
		}
	}
}

// SPEC, validation: a reject's error "says what was wrong". A valid JSON
// object nested more than 10000 levels deep is more than encoding/json
// reads: the reject must say so, not call it invalid JSON. (Found in
// review.)
func TestDecode_TooDeepObjectRejectSaysWhy(t *testing.T) {
	t.Parallel()
	const n = 10000 // arrays inside the user object: 10001 levels in all
	payload := `{"id":"deep","meta":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
	_, err := Decode(Record{ID: 1, Provider: ProviderGeneric, EventType: TypeCreated,
		Payload: []byte(payload), ReceivedAt: time.Unix(1, 0)})
	var reject *RejectError
	if !errors.As(err, &reject) {
		t.Fatalf("Decode = %v, want a reject", err)
	}
	if strings.Contains(reject.Reason, "not valid JSON") || !strings.Contains(reject.Reason, "10000 levels") {
		t.Errorf("reason %q: want it to say the payload nests too deep, not that it is invalid", reject.Reason)
	}
}

// An event's time is kept in history images as RFC 3339, which holds the
// years 1 to 9999 only; the outbox's timestamptz columns accept years BC.
// An occurred_at (or, when it is what the event's time falls back to, a
// received_at) outside them makes the event a reject that says which
// column. (Found in review: 44 BC became AD 44 in the images.)
func TestDecode_OutboxTimeOutsideYears1To9999IsAReject(t *testing.T) {
	t.Parallel()
	bc := time.Date(-43, 3, 15, 12, 0, 0, 0, time.UTC)
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		rec      Record
		wantWord string // the column the reason names; "" for no reject
	}{
		{"occurred_at BC", Record{OccurredAt: &bc, ReceivedAt: time.Unix(1, 0)}, "occurred_at"},
		{"occurred_at after 9999", Record{OccurredAt: &far, ReceivedAt: time.Unix(1, 0)}, "occurred_at"},
		{"received_at BC, used", Record{ReceivedAt: bc}, "received_at"},
		{"received_at BC, not used", Record{OccurredAt: ptrTime(time.Unix(1, 0)), ReceivedAt: bc}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec
			rec.ID, rec.Provider, rec.EventType = 1, ProviderGeneric, TypeCreated
			rec.Payload = []byte(`{"id":"caesar","name":"Julius"}`)
			_, err := Decode(rec)
			var reject *RejectError
			switch {
			case tc.wantWord == "" && err != nil:
				t.Errorf("Decode = %v, want no reject", err)
			case tc.wantWord != "" && !errors.As(err, &reject):
				t.Errorf("Decode = %v, want a reject", err)
			case tc.wantWord != "" && !strings.Contains(reject.Reason, tc.wantWord):
				t.Errorf("reason %q does not name %s", reject.Reason, tc.wantWord)
			}
		})
	}
}

func ptrTime(t time.Time) *time.Time { return &t }
