package webhook

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/usersync/usersync/outbox"
)

func TestParseEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body     string
		wantType string
		wantTS   string
		wantErr  bool
	}{
		{`{"type":"user.created","timestamp":1654012591835}`, "user.created", "1654012591835", false},
		{`{"type":"session.ended"}`, "session.ended", "", false},
		{`{"type":""}`, "", "", true},
		{`{"type":null}`, "", "", true},
		{`{"type":["user.created"]}`, "", "", true},
		{`{}`, "", "", true},
		{`"user.created"`, "", "", true},
		{`null`, "", "", true},
		{``, "", "", true},
		{`{"type":"user.created"} trailing`, "", "", true},
	}
	for _, tt := range tests {
		env, err := parseEnvelope([]byte(tt.body), "clerk")
		if (err != nil) != tt.wantErr || env.Type != tt.wantType || string(env.Timestamp) != tt.wantTS {
			t.Errorf("parseEnvelope(%s) = %q %s, %v; want %q %s, error %v", tt.body, env.Type, env.Timestamp, err, tt.wantType, tt.wantTS, tt.wantErr)
		}
	}
}

func TestBodyTime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw  string
		want time.Time
	}{
		{`1654012591835`, time.UnixMilli(1654012591835).UTC()},
		{`1654012591835.0`, time.UnixMilli(1654012591835).UTC()},
		{`"2024-05-01T12:00:00.5+02:00"`, time.Date(2024, 5, 1, 10, 0, 0, 5e8, time.UTC)},
		{`"yesterday"`, time.Time{}},
		{`"1654012591835"`, time.Time{}},
		{`true`, time.Time{}},
		{`{}`, time.Time{}},
		{`1e300`, time.Time{}},
		{`253402300800000`, time.Time{}}, // year 10000
		{`-1000`, time.Unix(-1, 0).UTC()},
		{`"1990-12-31t23:59:60z"`, time.Date(1991, 1, 1, 0, 0, 0, 0, time.UTC)}, // RFC 3339 §5.6, §5.7
	}
	for _, tt := range tests {
		if got := bodyTime(json.RawMessage(tt.raw), outbox.ParseRFC3339); !got.Equal(tt.want) {
			t.Errorf("bodyTime(%s) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}

func TestParseEnvelope_WorkOS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body             string
		wantType, wantID string
		wantTime         time.Time
		wantErr          string
	}{
		{`{"id":"event_01","event":"user.created","data":{},"created_at":"2024-02-20T09:15:02.503Z"}`,
			"user.created", "event_01", time.Date(2024, 2, 20, 9, 15, 2, 503e6, time.UTC), ""},
		// The form of WorkOS's Events API example: a space, no zone (UTC).
		{`{"id":"event_02","event":"user.deleted","data":{},"created_at":"2023-04-28 20:05:31.093"}`,
			"user.deleted", "event_02", time.Date(2023, 4, 28, 20, 5, 31, 93e6, time.UTC), ""},
		{`{"id":"event_03","event":"dsync.user.created","data":{}}`, "dsync.user.created", "event_03", time.Time{}, ""},
		{`{"id":"event_04","event":"user.updated","created_at":"last week"}`, "user.updated", "event_04", time.Time{}, ""},
		{`{"id":"event_05","type":"user.created","data":{}}`, "", "", time.Time{}, `no string "event"`},
		{`{"event":"user.created","data":{}}`, "", "", time.Time{}, `no string "id"`},
		{`{"id":17,"event":"user.created","data":{}}`, "", "", time.Time{}, `no string "id"`},
		{`{"id":"","event":"user.created","data":{}}`, "", "", time.Time{}, `no string "id"`},
	}
	for _, tt := range tests {
		env, err := parseEnvelope([]byte(tt.body), "workos")
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseEnvelope(%s) = %+v, %v; want an error containing %q", tt.body, env, err, tt.wantErr)
			}
			continue
		}
		if err != nil || env.Type != tt.wantType || env.ID != tt.wantID {
			t.Errorf("parseEnvelope(%s) = %+v, %v; want type %q id %q", tt.body, env, err, tt.wantType, tt.wantID)
			continue
		}
		var got time.Time
		if len(env.Timestamp) > 0 {
			got = bodyTime(env.Timestamp, env.ParseTime)
		}
		if !got.Equal(tt.wantTime) {
			t.Errorf("event time of %s = %v, want %v", tt.body, got, tt.wantTime)
		}
	}
}

func FuzzParseEnvelope(f *testing.F) {
	f.Add([]byte(`{"type":"user.created","timestamp":1654012591835,"data":{}}`), "clerk")
	f.Add([]byte(`{"type":"user.updated","timestamp":"2024-05-01T12:00:00Z"}`), "generic")
	f.Add([]byte(`{"id":"event_01","event":"user.created","data":{},"created_at":"2024-02-20T09:15:02.503Z"}`), "workos")
	f.Fuzz(func(t *testing.T, body []byte, provider string) {
		env, err := parseEnvelope(body, provider)
		if err != nil {
			return
		}
		if env.Type == "" {
			t.Errorf("parseEnvelope(%q) accepted an empty type", body)
		}
		if provider == "workos" && env.ID == "" {
			t.Errorf("parseEnvelope(%q) accepted a WorkOS body without an id", body)
		}
		if len(env.Timestamp) > 0 {
			_ = bodyTime(env.Timestamp, env.ParseTime) // must not panic
		}
	})
}
