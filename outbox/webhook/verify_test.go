package webhook

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vector is testdata/svix_signature_test_vector.json.
type vector struct {
	Secret  string            `json:"secret"`
	Headers map[string]string `json:"headers"`
	RawBody string            `json:"raw_body"`
}

func readVector(t *testing.T) vector {
	t.Helper()
	b, err := os.ReadFile("testdata/svix_signature_test_vector.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestVerifier_Verify_KnownAnswer(t *testing.T) {
	t.Parallel()
	v := readVector(t)
	keys, err := ParseSecrets(v.Secret)
	if err != nil {
		t.Fatal(err)
	}
	secs, err := strconv.ParseInt(v.Headers["svix-timestamp"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	for k, val := range v.Headers {
		h.Set(k, val)
	}
	verifier := NewVerifier(keys, 0, fixedClock(time.Unix(secs, 0)))
	id, err := verifier.Verify(h, []byte(v.RawBody))
	if err != nil {
		t.Fatalf("Verify(known answer) = %v, want nil", err)
	}
	if id != v.Headers["svix-id"] {
		t.Errorf("id = %q, want %q", id, v.Headers["svix-id"])
	}
	// Sign must produce the same header value as the known answer.
	if got := Sign(keys[0], id, time.Unix(secs, 0), []byte(v.RawBody)); got != v.Headers["svix-signature"] {
		t.Errorf("Sign = %q, want %q", got, v.Headers["svix-signature"])
	}
	// The default tolerance refuses the vector's old timestamp at today's date.
	if _, err := NewVerifier(keys, 0, nil).Verify(h, []byte(v.RawBody)); !errors.Is(err, ErrStaleTimestamp) {
		t.Errorf("Verify(old vector, real clock) = %v, want ErrStaleTimestamp", err)
	}
}

func newKey(t *testing.T, seed byte) ([]byte, string) {
	t.Helper()
	key := make([]byte, 24)
	for i := range key {
		key[i] = seed + byte(i)
	}
	return key, "whsec_" + base64.StdEncoding.EncodeToString(key)
}

func signedHeader(key []byte, id string, ts time.Time, body []byte) http.Header {
	h := http.Header{}
	h.Set("svix-id", id)
	h.Set("svix-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("svix-signature", Sign(key, id, ts, body))
	return h
}

func TestVerifier_Verify(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	oldKey, oldSecret := newKey(t, 1)
	newKeyBytes, newSecret := newKey(t, 100)
	otherKey, _ := newKey(t, 200)
	body := []byte(`{"type":"user.created","data":{"id":"user_1"}}`)
	const id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"

	tests := []struct {
		name    string
		secrets string
		header  func() http.Header
		body    []byte
		wantErr error
	}{
		{"valid", oldSecret, func() http.Header { return signedHeader(oldKey, id, now, body) }, body, nil},
		{"forged body", oldSecret, func() http.Header { return signedHeader(oldKey, id, now, body) }, []byte(`{"type":"user.deleted"}`), ErrNoMatch},
		{"forged id", oldSecret, func() http.Header {
			h := signedHeader(oldKey, id, now, body)
			h.Set("svix-id", "msg_other")
			return h
		}, body, ErrNoMatch},
		{"forged signature", oldSecret, func() http.Header {
			h := signedHeader(oldKey, id, now, body)
			h.Set("svix-signature", "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32)))
			return h
		}, body, ErrNoMatch},
		{"wrong secret", oldSecret, func() http.Header { return signedHeader(otherKey, id, now, body) }, body, ErrNoMatch},
		{"rotation, signed with old", oldSecret + " " + newSecret, func() http.Header { return signedHeader(oldKey, id, now, body) }, body, nil},
		{"rotation, signed with new", oldSecret + " " + newSecret, func() http.Header { return signedHeader(newKeyBytes, id, now, body) }, body, nil},
		{"rotation done, signed with old", newSecret, func() http.Header { return signedHeader(oldKey, id, now, body) }, body, ErrNoMatch},
		{"several signatures, one valid", oldSecret, func() http.Header {
			h := signedHeader(oldKey, id, now, body)
			h.Set("svix-signature", "v1a,abc v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32))+" "+h.Get("svix-signature"))
			return h
		}, body, nil},
		{"as many signatures as allowed, the last valid", oldSecret, func() http.Header {
			h := signedHeader(oldKey, id, now, body)
			h.Set("svix-signature", strings.Repeat("v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32))+" ", maxSignatures-1)+h.Get("svix-signature"))
			return h
		}, body, nil},
		{"one signature too many", oldSecret, func() http.Header {
			h := signedHeader(oldKey, id, now, body)
			h.Set("svix-signature", strings.Repeat("v1a,abc ", maxSignatures)+h.Get("svix-signature"))
			return h
		}, body, ErrTooManySignatures},
		{"signature without version", oldSecret, func() http.Header {
			h := signedHeader(oldKey, id, now, body)
			h.Set("svix-signature", strings.TrimPrefix(h.Get("svix-signature"), "v1,"))
			return h
		}, body, ErrNoMatch},
		{"timestamp 5m old", oldSecret, func() http.Header { return signedHeader(oldKey, id, now.Add(-5*time.Minute), body) }, body, nil},
		{"timestamp too old", oldSecret, func() http.Header { return signedHeader(oldKey, id, now.Add(-5*time.Minute-time.Second), body) }, body, ErrStaleTimestamp},
		{"timestamp too new", oldSecret, func() http.Header { return signedHeader(oldKey, id, now.Add(5*time.Minute+time.Second), body) }, body, ErrStaleTimestamp},
		{"timestamp not a number", oldSecret, func() http.Header {
			h := signedHeader(oldKey, id, now, body)
			h.Set("svix-timestamp", "2025-06-01T12:00:00Z")
			return h
		}, body, ErrInvalidTimestamp},
		{"missing id", oldSecret, func() http.Header { return without(signedHeader(oldKey, id, now, body), "svix-id") }, body, ErrMissingHeaders},
		{"missing timestamp", oldSecret, func() http.Header { return without(signedHeader(oldKey, id, now, body), "svix-timestamp") }, body, ErrMissingHeaders},
		{"missing signature", oldSecret, func() http.Header { return without(signedHeader(oldKey, id, now, body), "svix-signature") }, body, ErrMissingHeaders},
		{"standard webhooks headers", oldSecret, func() http.Header {
			h := http.Header{}
			for _, name := range []string{"id", "timestamp", "signature"} {
				h.Set("webhook-"+name, signedHeader(oldKey, id, now, body).Get("svix-"+name))
			}
			return h
		}, body, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys, err := ParseSecrets(tt.secrets)
			if err != nil {
				t.Fatal(err)
			}
			got, err := NewVerifier(keys, 0, fixedClock(now)).Verify(tt.header(), tt.body)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
			}
			if err == nil && got != id {
				t.Errorf("id = %q, want %q", got, id)
			}
		})
	}
}

func without(h http.Header, name string) http.Header {
	h.Del(name)
	return h
}

func TestParseSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		list    string
		wantN   int
		wantErr string
	}{
		{"prefixed", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1, ""},
		{"bare base64", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1, ""},
		{"unpadded", "whsec_AAEC", 1, ""},
		{"padding dropped", "whsec_AAE", 1, ""},
		{"two, extra spaces", "  whsec_AAEC   whsec_AQID ", 2, ""},
		{"empty", "   ", 0, "no secret"},
		{"second not base64", "whsec_AAEC whsec_not!base64", 0, "secret 2 of 2 is not base64"},
		{"empty key", "whsec_", 0, "secret 1 of 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys, err := ParseSecrets(tt.list)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSecrets error = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "not!base64") {
					t.Errorf("error %q quotes the secret", err)
				}
				return
			}
			if err != nil || len(keys) != tt.wantN {
				t.Fatalf("ParseSecrets = %d keys, %v; want %d keys", len(keys), err, tt.wantN)
			}
		})
	}
}

// BenchmarkVerifier_Verify measures a delivery with the most signature
// entries allowed, checked against two secrets (a rotation): each entry is
// decoded once and each secret's MAC computed once.
func BenchmarkVerifier_Verify(b *testing.B) {
	oldKey, oldSecret := newKey(&testing.T{}, 1)
	_, newSecret := newKey(&testing.T{}, 100)
	keys, err := ParseSecrets(newSecret + " " + oldSecret)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	body := []byte(`{"type":"user.created","data":{"id":"user_1"}}`)
	h := signedHeader(oldKey, "msg_1", now, body)
	h.Set("svix-signature", strings.Repeat("v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32))+" ", maxSignatures-1)+h.Get("svix-signature"))
	v := NewVerifier(keys, 0, fixedClock(now))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(h, body); err != nil {
			b.Fatal(err)
		}
	}
}
