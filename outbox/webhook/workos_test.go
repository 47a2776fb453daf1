package webhook

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// workosHeader is the header of a WorkOS delivery signed with key at ts.
func workosHeader(key []byte, ts time.Time, body []byte) http.Header {
	h := http.Header{}
	h.Set("WorkOS-Signature", SignWorkOS(key, ts, body))
	return h
}

// newWorkOSSecret returns a WorkOS-style secret of 31 characters, used as is
// as the HMAC key.
func newWorkOSSecret(seed string) ([]byte, string) {
	secret := "whsec_" + (seed + strings.Repeat("0", 25))[:25]
	return []byte(secret), secret
}

// TestWorkOSVerifier_Verify_KnownAnswer checks signatures computed outside
// this code (Python's hmac module: hmac.new(secret, f"{t}.".encode() + body,
// sha256).hexdigest()). WorkOS publishes no fixed test vector: the tests of
// its SDKs (workos-node src/webhooks/webhooks.spec.ts, workos-go
// pkg/webhooks/client_test.go, workos-ruby spec/lib/workos/webhooks_spec.rb)
// sign at run time with the secret "secret" and a header
// "t=<ms>, v1=<hex>"; the second vector follows them (its timestamp is the
// one of workos-ruby's compute_signature example), so its 6-byte secret is
// tested through the verifier, not through Config, which wants 24 bytes.
func TestWorkOSVerifier_Verify_KnownAnswer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, secret, t, body, v1 string
	}{
		{"user.created event", "whsec_usersyncTestVector0WorkOS24", "1708420502503",
			`{"id":"event_01HQ3D8K2M5XGZ7V0B4N6P9RTA","event":"user.created","data":{"object":"user","id":"user_01HQ3D8JZ4W2B7C9E1F3G5H7JK","email":"amara.okafor@example.com","first_name":"Amara","last_name":"Okafor","created_at":"2024-02-20T09:15:02.417Z","updated_at":"2024-02-20T09:15:02.417Z"},"created_at":"2024-02-20T09:15:02.503Z"}`,
			"4cffcff4a2fcb0d8042c6f044e33a4039c9331a2db167c393f7a25ec66ddbac3"},
		{"the SDK tests' secret and body", "secret", "1626125972272", `{'data': 'foobar'}`,
			"2cb7f5428bcaf40a5494dc24627a5d4807bd7169c3562bc9a0b1d0fabc912276"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ms, err := strconv.ParseInt(tt.t, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			at := time.UnixMilli(ms)
			keys, err := ParseWorkOSSecrets(tt.secret)
			if err != nil {
				t.Fatal(err)
			}
			want := "t=" + tt.t + ", v1=" + tt.v1
			if got := SignWorkOS(keys[0], at, []byte(tt.body)); got != want {
				t.Errorf("SignWorkOS = %q, want %q", got, want)
			}
			h := http.Header{}
			h.Set("WorkOS-Signature", want)
			if err := NewWorkOSVerifier(keys, fixedClock(at.Add(time.Minute))).Verify(h, []byte(tt.body)); err != nil {
				t.Errorf("Verify(known answer) = %v, want nil", err)
			}
			if err := NewWorkOSVerifier(keys, nil).Verify(h, []byte(tt.body)); !errors.Is(err, ErrStaleTimestamp) {
				t.Errorf("Verify(old vector, real clock) = %v, want ErrStaleTimestamp", err)
			}
		})
	}
}

func TestWorkOSVerifier_Verify(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	oldKey, oldSecret := newWorkOSSecret("old")
	newKey, newSecret := newWorkOSSecret("new")
	otherKey, _ := newWorkOSSecret("other")
	body := []byte(`{"id":"event_1","event":"user.updated","data":{"id":"user_1"},"created_at":"2025-06-01T11:59:59.000Z"}`)
	sign := func(key []byte, at time.Time) string { return SignWorkOS(key, at, body) }
	v1 := func(key []byte) string { _, s, _ := strings.Cut(sign(key, now), "v1="); return s }
	ms := strconv.FormatInt(now.UnixMilli(), 10)

	tests := []struct {
		name    string
		secrets string
		header  string
		body    []byte
		wantErr error
	}{
		{"valid", oldSecret, sign(oldKey, now), body, nil},
		{"no space after the comma", oldSecret, "t=" + ms + ",v1=" + v1(oldKey), body, nil},
		{"entries in another order", oldSecret, "v1=" + v1(oldKey) + ", t=" + ms, body, nil},
		{"forged body", oldSecret, sign(oldKey, now), []byte(`{"id":"event_1","event":"user.deleted","data":{"id":"user_1"}}`), ErrNoMatch},
		{"forged timestamp", oldSecret, "t=" + strconv.FormatInt(now.UnixMilli()+1, 10) + ", v1=" + v1(oldKey), body, ErrNoMatch},
		{"forged signature", oldSecret, "t=" + ms + ", v1=" + strings.Repeat("ab", 32), body, ErrNoMatch},
		{"wrong secret", oldSecret, sign(otherKey, now), body, ErrNoMatch},
		{"secret base64-decoded by mistake", oldSecret, sign([]byte(strings.TrimPrefix(oldSecret, "whsec_")), now), body, ErrNoMatch},
		{"rotation, signed with old", oldSecret + " " + newSecret, sign(oldKey, now), body, nil},
		{"rotation, signed with new", oldSecret + " " + newSecret, sign(newKey, now), body, nil},
		{"several v1, one valid", oldSecret, "t=" + ms + ", v1=" + strings.Repeat("00", 32) + ", v1=" + v1(oldKey), body, nil},
		{"timestamp 3m old", oldSecret, sign(oldKey, now.Add(-WorkOSTolerance)), body, nil},
		{"timestamp too old", oldSecret, sign(oldKey, now.Add(-WorkOSTolerance-time.Second)), body, ErrStaleTimestamp},
		{"timestamp too new", oldSecret, sign(oldKey, now.Add(WorkOSTolerance+time.Second)), body, ErrStaleTimestamp},
		{"timestamp in seconds", oldSecret, "t=" + strconv.FormatInt(now.Unix(), 10) + ", v1=" + v1(oldKey), body, ErrStaleTimestamp},
		{"missing header", oldSecret, "", body, ErrMissingWorkOSSignature},
		{"no timestamp", oldSecret, "v1=" + v1(oldKey), body, ErrMalformedWorkOSSignature},
		{"timestamp not a number", oldSecret, "t=now, v1=" + v1(oldKey), body, ErrMalformedWorkOSSignature},
		{"no v1", oldSecret, "t=" + ms, body, ErrNoMatch},
		{"empty v1", oldSecret, "t=" + ms + ", v1=", body, ErrNoMatch},
		{"v1 not hex", oldSecret, "t=" + ms + ", v1=" + strings.Repeat("zz", 32), body, ErrNoMatch},
		{"too many entries", oldSecret, "t=" + ms + strings.Repeat(", v1="+strings.Repeat("00", 32), maxSignatures) + ", v1=" + v1(oldKey), body, ErrTooManySignatures},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys, err := ParseWorkOSSecrets(tt.secrets)
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			if tt.header != "" {
				h.Set("WorkOS-Signature", tt.header)
			}
			if err := NewWorkOSVerifier(keys, fixedClock(now)).Verify(h, tt.body); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	t.Parallel()
	const secret = "whsec_0FWAiVGkEfGBqqsJH4aNAGBJ4" // 25 characters after whsec_: not base64
	keys, err := ParseKeys("workos", secret+"  other")
	if err != nil || len(keys) != 2 || string(keys[0]) != secret || string(keys[1]) != "other" {
		t.Errorf("ParseKeys(workos) = %q, %v; want the secrets as they are", keys, err)
	}
	if _, err := ParseKeys("clerk", secret); err == nil {
		t.Error("ParseKeys(clerk) accepted a secret that is not base64 after whsec_")
	}
	if _, err := ParseKeys("workos", " "); err == nil {
		t.Error("ParseKeys(workos) accepted an empty list")
	}
}

// newWorkOSFixture is a fixture whose only endpoint is /webhooks/workos.
func newWorkOSFixture(t *testing.T) *fixture {
	t.Helper()
	key, secret := newWorkOSSecret("fixture")
	f := newFixture(t, Config{Secrets: map[string]string{"workos": secret}})
	f.keys = map[string][]byte{"workos": key}
	return f
}

// deliverWorkOS posts body to /webhooks/workos signed at ts.
func (f *fixture) deliverWorkOS(ts time.Time, body []byte) answer {
	f.t.Helper()
	return post(f.t, f.srv.Client(), f.srv.URL, "workos", workosHeader(f.keys["workos"], ts, body), body)
}

func TestHandler_ServeHTTP_WorkOS(t *testing.T) {
	t.Parallel()
	f := newWorkOSFixture(t)
	body := readSample(t, "workos_user.created.json")
	const eventID = "event_01HQ3D8K2M5XGZ7V0B4N6P9RTA"

	first := f.deliverWorkOS(time.Now(), body)
	if first.Status != http.StatusOK || first.Outcome != "stored" {
		t.Fatalf("signed delivery = %+v, want 200 stored", first)
	}
	var provider, typ, gotID string
	var occurred time.Time
	var same bool
	err := f.pool.QueryRow(t.Context(),
		"SELECT provider, event_type, event_id, occurred_at, payload = $2::jsonb FROM neon_auth.outbox WHERE id = $1",
		first.OutboxID, string(body)).Scan(&provider, &typ, &gotID, &occurred, &same)
	if err != nil {
		t.Fatal(err)
	}
	wantOccurred := time.Date(2024, 2, 20, 9, 15, 2, 503e6, time.UTC)
	if provider != "workos" || typ != "user.created" || gotID != eventID || !occurred.Equal(wantOccurred) || !same {
		t.Errorf("row = %s %s %s %v payload equal %v; want workos user.created %s %v true", provider, typ, gotID, occurred, same, eventID, wantOccurred)
	}

	// WorkOS signs each attempt anew: a retry has another t and signature.
	retry := f.deliverWorkOS(time.Now().Add(time.Second), body)
	if retry.Status != http.StatusOK || retry.Outcome != "duplicate" || retry.OutboxID != first.OutboxID {
		t.Errorf("redelivery = %+v, want 200 duplicate of outbox row %d", retry, first.OutboxID)
	}

	otherKey, _ := newWorkOSSecret("other")
	svix := signedHeader(otherKey, "msg_1", time.Now(), body)
	refused := []struct {
		name   string
		header http.Header
		body   []byte
	}{
		{"forged body", workosHeader(f.keys["workos"], time.Now(), body), []byte(strings.Replace(string(body), "Amara", "Mallory", 1))},
		{"wrong secret", workosHeader(otherKey, time.Now(), body), body},
		{"timestamp 4 minutes old", workosHeader(f.keys["workos"], time.Now().Add(-4*time.Minute), body), body},
		{"timestamp 4 minutes ahead", workosHeader(f.keys["workos"], time.Now().Add(4*time.Minute), body), body},
		{"no WorkOS-Signature", http.Header{}, body},
		{"Svix headers instead", svix, body},
	}
	for _, tt := range refused {
		if got := post(t, f.srv.Client(), f.srv.URL, "workos", tt.header, tt.body); got.Status != http.StatusUnauthorized || got.Outcome != "unauthorized" {
			t.Errorf("%s: %+v, want 401 unauthorized", tt.name, got)
		}
	}

	ignored := []byte(`{"id":"event_01HQDSYNC","event":"dsync.user.created","data":{"id":"directory_user_1"},"created_at":"2024-02-20T09:15:02.503Z"}`)
	if got := f.deliverWorkOS(time.Now(), ignored); got.Status != http.StatusOK || got.Outcome != "ignored" {
		t.Errorf("dsync.user.created = %+v, want 200 ignored", got)
	}
	noID := []byte(`{"event":"user.created","data":{"id":"user_1"},"created_at":"2024-02-20T09:15:02.503Z"}`)
	if got := f.deliverWorkOS(time.Now(), noID); got.Status != http.StatusBadRequest || !strings.Contains(got.Error, `"id"`) {
		t.Errorf("body without an event id = %+v, want 400 naming \"id\"", got)
	}
	if n := outboxCount(t, f.pool, ""); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
	if s := f.handler.Stats(); s.Stored != 1 || s.Duplicates != 1 || s.Unauthorized != len64(refused) || s.Ignored != 1 || s.BadRequests != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

func len64[T any](s []T) int64 { return int64(len(s)) }

// TestHandler_ServeHTTP_WorkOSRefusesFromHeaders sends only the headers of
// each WorkOS delivery: what they condemn is answered without the body.
func TestHandler_ServeHTTP_WorkOSRefusesFromHeaders(t *testing.T) {
	t.Parallel()
	f := newWorkOSFixture(t)
	addr := f.srv.Listener.Addr().String()
	body := readSample(t, "workos_user.created.json")
	tests := []struct {
		name       string
		header     http.Header
		wantReason string
	}{
		{"no WorkOS-Signature", http.Header{}, "missing WorkOS-Signature"},
		{"timestamp 4 minutes old", workosHeader(f.keys["workos"], time.Now().Add(-4*time.Minute), body), "outside the tolerance"},
		{"malformed", http.Header{"Workos-Signature": {"v1=abc"}}, "is not"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn := sendHeaders(t, addr, "/webhooks/workos", tt.header, len(body))
			got, err := readAnswer(conn, 10*time.Second)
			if err != nil {
				t.Fatalf("no answer before the body was sent: %v", err)
			}
			if got.Status != http.StatusUnauthorized || !strings.Contains(got.Error, tt.wantReason) {
				t.Errorf("answer %+v, want 401 with %q", got, tt.wantReason)
			}
		})
	}
}

// FuzzParseSignatureHeaders feeds arbitrary signature headers to both
// schemes: parsing never panics, and what it accepts holds at most
// maxSignatures SHA-256 MACs.
func FuzzParseSignatureHeaders(f *testing.F) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	key, _ := newWorkOSSecret("fuzz")
	f.Add(SignWorkOS(key, now, []byte("{}")), "v1,"+strings.Repeat("A", 43)+"=", strconv.FormatInt(now.Unix(), 10))
	f.Add("t=1, v1=00, v1=zz,,=", "v1a,x v1, v1,=", "-1")
	f.Fuzz(func(t *testing.T, workos, svix, ts string) {
		h := http.Header{}
		h.Set("WorkOS-Signature", workos)
		h.Set("svix-id", "msg_1")
		h.Set("svix-timestamp", ts)
		h.Set("svix-signature", svix)
		for name, v := range map[string]verifier{
			"workos": NewWorkOSVerifier([][]byte{key}, fixedClock(now)),
			"svix":   NewVerifier([][]byte{key}, 0, fixedClock(now)),
		} {
			sig, err := v.parse(h)
			if err != nil {
				continue
			}
			if len(sig.macs) == 0 || len(sig.macs) > maxSignatures {
				t.Errorf("%s parse kept %d signatures", name, len(sig.macs))
			}
			for _, mac := range sig.macs {
				if len(mac) != 32 {
					t.Errorf("%s parse kept a %d-byte signature", name, len(mac))
				}
			}
			_ = v.check(sig, []byte("{}"))
		}
	})
}
