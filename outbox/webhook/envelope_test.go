package webhook

import (
	"encoding/json"
	"testing"
	"time"
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
		env, err := parseEnvelope([]byte(tt.body))
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
	}
	for _, tt := range tests {
		if got := bodyTime(json.RawMessage(tt.raw)); !got.Equal(tt.want) {
			t.Errorf("bodyTime(%s) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}

func FuzzParseEnvelope(f *testing.F) {
	f.Add([]byte(`{"type":"user.created","timestamp":1654012591835,"data":{}}`))
	f.Add([]byte(`{"type":"user.updated","timestamp":"2024-05-01T12:00:00Z"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := parseEnvelope(body)
		if err != nil {
			return
		}
		if env.Type == "" {
			t.Errorf("parseEnvelope(%q) accepted an empty type", body)
		}
		if len(env.Timestamp) > 0 {
			_ = bodyTime(env.Timestamp) // must not panic
		}
	})
}
