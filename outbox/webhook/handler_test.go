package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHandler_ServeHTTP_Signature(t *testing.T) {
	t.Parallel()
	oldKey, oldSecret := newKey(t, 1)
	newKeyBytes, newSecret := newKey(t, 50)
	otherKey, _ := newKey(t, 99)
	f := newFixture(t, Config{Secrets: map[string]string{"clerk": oldSecret + " " + newSecret}})
	body := readSample(t, "clerk_user.created.json")
	now := time.Now()

	tests := []struct {
		name       string
		header     func(id string) http.Header
		body       []byte
		wantStatus int
	}{
		{"signed with the old secret", func(id string) http.Header { return signedHeader(oldKey, id, now, body) }, body, http.StatusOK},
		{"signed with the new secret", func(id string) http.Header { return signedHeader(newKeyBytes, id, now, body) }, body, http.StatusOK},
		{"forged body", func(id string) http.Header { return signedHeader(oldKey, id, now, body) }, bytes.Replace(body, []byte("Example"), []byte("Mallory"), 1), http.StatusUnauthorized},
		{"forged signature", func(id string) http.Header {
			h := signedHeader(oldKey, id, now, body)
			h.Set("svix-signature", "v1,"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
			return h
		}, body, http.StatusUnauthorized},
		{"wrong secret", func(id string) http.Header { return signedHeader(otherKey, id, now, body) }, body, http.StatusUnauthorized},
		{"timestamp 6 minutes old", func(id string) http.Header { return signedHeader(oldKey, id, now.Add(-6*time.Minute), body) }, body, http.StatusUnauthorized},
		{"timestamp 6 minutes ahead", func(id string) http.Header { return signedHeader(oldKey, id, now.Add(6*time.Minute), body) }, body, http.StatusUnauthorized},
		{"missing svix-id", func(id string) http.Header { return without(signedHeader(oldKey, id, now, body), "svix-id") }, body, http.StatusUnauthorized},
		{"missing svix-timestamp", func(id string) http.Header { return without(signedHeader(oldKey, id, now, body), "svix-timestamp") }, body, http.StatusUnauthorized},
		{"missing svix-signature", func(id string) http.Header { return without(signedHeader(oldKey, id, now, body), "svix-signature") }, body, http.StatusUnauthorized},
		{"no headers at all", func(string) http.Header { return http.Header{} }, body, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id := newMessageID()
			got := post(t, f.srv.Client(), f.srv.URL, "clerk", tt.header(id), tt.body)
			if got.Status != tt.wantStatus {
				t.Fatalf("status = %d (%+v), want %d", got.Status, got, tt.wantStatus)
			}
			wantRows := 0
			if tt.wantStatus == http.StatusOK {
				wantRows = 1
			}
			if n := outboxCount(t, f.pool, id); n != wantRows {
				t.Errorf("outbox rows for %s = %d, want %d", id, n, wantRows)
			}
		})
	}
}

func TestHandler_ServeHTTP_Redelivery(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	body := readSample(t, "clerk_user.updated.json")
	id := newMessageID()
	first := f.deliver("clerk", id, body)
	second := f.deliver("clerk", id, body)
	if first.Status != http.StatusOK || first.Outcome != "stored" {
		t.Fatalf("first delivery = %+v, want 200 stored", first)
	}
	if second.Status != http.StatusOK || second.Outcome != "duplicate" || second.OutboxID != first.OutboxID {
		t.Fatalf("redelivery = %+v, want 200 duplicate of outbox row %d", second, first.OutboxID)
	}
	if n := outboxCount(t, f.pool, ""); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
	// The same id from another provider is another event.
	if got := f.deliver("generic", id, genericBody("g1", time.Now())); got.Outcome != "stored" {
		t.Errorf("same id, other provider = %+v, want stored", got)
	}
	if s := f.handler.Stats(); s.Stored != 2 || s.Duplicates != 1 {
		t.Errorf("Stats = %+v, want 2 stored, 1 duplicate", s)
	}
}

func TestHandler_ServeHTTP_TooLarge(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	big := []byte(`{"type":"user.updated","data":{"id":"u","pad":"` + strings.Repeat("x", 2<<20) + `"}}`)
	t.Run("content length", func(t *testing.T) {
		got := f.deliver("clerk", newMessageID(), big)
		if got.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("2 MiB body = %+v, want 413", got)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		// No Content-Length: the limit must hold while reading.
		id := newMessageID()
		req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/webhooks/clerk", struct{ *bytes.Reader }{bytes.NewReader(big)})
		if err != nil {
			t.Fatal(err)
		}
		req.Header = signedHeader(f.keys["clerk"], id, time.Now(), big)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked 2 MiB body: status %d, want 413", resp.StatusCode)
		}
	})
	if n := outboxCount(t, f.pool, ""); n != 0 {
		t.Errorf("outbox rows = %d, want 0", n)
	}
	t.Run("within a smaller limit", func(t *testing.T) {
		small := newFixture(t, Config{MaxBody: 600})
		if got := small.deliver("generic", newMessageID(), genericBody("g1", time.Now())); got.Status != http.StatusOK {
			t.Errorf("small body = %+v, want 200", got)
		}
		body := readSample(t, "clerk_user.created.json")
		if got := small.deliver("clerk", newMessageID(), body); got.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("%d-byte body over a 600-byte limit = %+v, want 413", len(body), got)
		}
	})
}

func TestHandler_ServeHTTP_BadBody(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	tests := []struct {
		name       string
		body       string
		wantReason string
	}{
		{"not json", `type=user.created`, "not a JSON object"},
		{"truncated", `{"type":"user.created","data":{`, "not a JSON object"},
		{"array", `[{"type":"user.created"}]`, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"no type", `{"data":{"id":"u"}}`, `no string "type"`},
		{"numeric type", `{"type":3,"data":{"id":"u"}}`, `no string "type"`},
		{"nul character", `{"type":"user.created","data":{"id":"u","first_name":"a\u0000b"}}`, "22P05"},
		{"invalid utf-8", "{\"type\":\"user.created\",\"data\":{\"id\":\"u\",\"first_name\":\"\xff\"}}", "SQLSTATE 22"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := f.deliver("clerk", newMessageID(), []byte(tt.body))
			if got.Status != http.StatusBadRequest || !strings.Contains(got.Error, tt.wantReason) {
				t.Errorf("answer = %+v, want 400 with %q", got, tt.wantReason)
			}
		})
	}
	t.Cleanup(func() {
		if n := outboxCount(t, f.pool, ""); n != 0 {
			t.Errorf("outbox rows = %d, want 0", n)
		}
	})
}

func TestHandler_ServeHTTP_NonUserEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	for _, typ := range []string{"session.created", "organization.updated", "user.banned"} {
		body := []byte(`{"type":"` + typ + `","data":{"id":"sess_1"},"timestamp":1654012591835}`)
		got := f.deliver("clerk", newMessageID(), body)
		if got.Status != http.StatusOK || got.Outcome != "ignored" {
			t.Errorf("%s: %+v, want 200 ignored", typ, got)
		}
	}
	if n := outboxCount(t, f.pool, ""); n != 0 {
		t.Errorf("outbox rows = %d, want 0", n)
	}
	if s := f.handler.Stats(); s.Ignored != 3 {
		t.Errorf("Stats().Ignored = %d, want 3", s.Ignored)
	}
	if !strings.Contains(f.logs.String(), `"ignored_total":3`) {
		t.Errorf("logs do not count ignored events:\n%s", f.logs)
	}
}

func TestHandler_ServeHTTP_Routes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	client := f.srv.Client()
	t.Run("provider without secret", func(t *testing.T) {
		got := post(t, client, f.srv.URL, "stack", http.Header{}, readSample(t, "stackauth_user.created.json"))
		if got.Status != http.StatusNotFound || !strings.Contains(got.Error, "STACK_WEBHOOK_SECRET") {
			t.Errorf("answer = %+v, want 404 naming STACK_WEBHOOK_SECRET", got)
		}
	})
	t.Run("unknown provider", func(t *testing.T) {
		if got := post(t, client, f.srv.URL, "auth0", http.Header{}, []byte(`{}`)); got.Status != http.StatusNotFound {
			t.Errorf("answer = %+v, want 404", got)
		}
	})
	t.Run("healthz", func(t *testing.T) {
		resp, err := client.Get(f.srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /healthz: %d, want 200", resp.StatusCode)
		}
	})
	t.Run("GET on a webhook", func(t *testing.T) {
		resp, err := client.Get(f.srv.URL + "/webhooks/clerk")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /webhooks/clerk: %d, want 405", resp.StatusCode)
		}
	})
}

func TestHandler_ServeHTTP_OccurredAt(t *testing.T) {
	t.Parallel()
	stackKey, stackSecret := newKey(t, 7)
	clerkKey, clerkSecret := newKey(t, 8)
	genericKey, genericSecret := newKey(t, 9)
	f := newFixture(t, Config{Secrets: map[string]string{"stack": stackSecret, "clerk": clerkSecret, "generic": genericSecret}})
	f.keys = map[string][]byte{"stack": stackKey, "clerk": clerkKey, "generic": genericKey}
	generic := map[string]string{
		"generic RFC 3339 timestamp":                                   `{"type":"user.created","timestamp":"2024-05-01T14:00:00+02:00","data":{"id":"g1"}}`,
		"generic timestamp that does not parse is left to the adapter": `{"type":"user.created","timestamp":"soon","data":{"id":"g2"}}`,
	}
	created := time.Now().Add(-3 * time.Hour).Truncate(time.Second).UTC()
	tests := []struct {
		name     string
		provider string
		id       string
		body     string
		want     *time.Time
	}{
		{"clerk body timestamp wins over the id", "clerk", "msg_" + newKSUID(created), "clerk_user.created.json", ptr(time.UnixMilli(1654012591835).UTC())},
		{"stack, ksuid message id", "stack", "msg_" + newKSUID(created), "stackauth_user.created.json", &created},
		{"stack, id that is no ksuid", "stack", "msg_p5jXN8AQM9LWM0D4loKWxJek", "stackauth_user.updated.json", nil},
		{"generic RFC 3339 timestamp", "generic", "msg_" + newKSUID(created), "",
			ptr(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))},
		{"generic timestamp that does not parse is left to the adapter", "generic", "msg_" + newKSUID(created), "", nil},
		{"stack, ksuid from the far future", "stack", "msg_" + newKSUID(time.Now().Add(48*time.Hour)), "stackauth_user.deleted.json", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Signed now: the svix-timestamp header must not become occurred_at.
			body := []byte(generic[tt.name])
			if tt.body != "" {
				body = readSample(t, tt.body)
			}
			got := f.deliver(tt.provider, tt.id, body)
			if got.Status != http.StatusOK {
				t.Fatalf("answer = %+v, want 200", got)
			}
			var at *time.Time
			if err := f.pool.QueryRow(context.Background(), "SELECT occurred_at FROM neon_auth.outbox WHERE id = $1", got.OutboxID).Scan(&at); err != nil {
				t.Fatal(err)
			}
			if (at == nil) != (tt.want == nil) || (at != nil && !at.Equal(*tt.want)) {
				t.Errorf("occurred_at = %v, want %v", at, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestHandler_ServeHTTP_StoresBodyVerbatim(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	body := readSample(t, "clerk_user.deleted.json")
	id := newMessageID()
	got := f.deliver("clerk", id, body)
	var provider, typ, eventID string
	var same bool
	err := f.pool.QueryRow(context.Background(),
		"SELECT provider, event_type, event_id, payload = $2::jsonb FROM neon_auth.outbox WHERE id = $1",
		got.OutboxID, string(body)).Scan(&provider, &typ, &eventID, &same)
	if err != nil {
		t.Fatal(err)
	}
	if provider != "clerk" || typ != "user.deleted" || eventID != id || !same {
		t.Errorf("row = %s %s %s payload equal %v; want clerk user.deleted %s true", provider, typ, eventID, same, id)
	}
}

func TestHandler_ServeHTTP_Concurrent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	const messages = 200
	type delivery struct {
		id   string
		body []byte
	}
	var ds []delivery
	for i := range messages {
		ds = append(ds, delivery{newMessageID(), genericBody("user_"+strconv.Itoa(i), time.Now())})
	}
	// Every message is delivered twice at once, as a provider retrying a
	// slow answer would.
	var wg sync.WaitGroup
	errs := make(chan error, 2*messages)
	for _, d := range append(ds, ds...) {
		wg.Go(func() {
			a, err := tryPost(f.srv.Client(), f.srv.URL, "generic", signedHeader(f.keys["generic"], d.id, time.Now(), d.body), d.body)
			if err == nil && a.Status != http.StatusOK {
				err = &statusError{a}
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var rows, distinct int
	err := f.pool.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT event_id) FROM neon_auth.outbox").Scan(&rows, &distinct)
	if err != nil {
		t.Fatal(err)
	}
	if rows != messages || distinct != messages {
		t.Errorf("outbox has %d rows, %d distinct event ids; want %d each", rows, distinct, messages)
	}
	if s := f.handler.Stats(); s.Stored != messages || s.Duplicates != messages {
		t.Errorf("Stats = %+v, want %d stored and %d duplicates", s, messages, messages)
	}
}

type statusError struct{ a answer }

func (e *statusError) Error() string {
	return "status " + strconv.Itoa(e.a.Status) + ": " + e.a.Outcome + " " + e.a.Error
}

func TestHandler_ServeHTTP_LogsNoSecrets(t *testing.T) {
	t.Parallel()
	key, secret := newKey(t, 42)
	_, rotated := newKey(t, 43)
	f := newFixture(t, Config{Secrets: map[string]string{"clerk": secret + " " + rotated}})
	f.keys = map[string][]byte{"clerk": key}
	body := readSample(t, "clerk_user.created.json")
	var signatures []string
	send := func(h http.Header, b []byte) {
		signatures = append(signatures, strings.TrimPrefix(h.Get("svix-signature"), "v1,"))
		post(t, f.srv.Client(), f.srv.URL, "clerk", h, b)
	}
	id := newMessageID()
	send(signedHeader(key, id, time.Now(), body), body)                                         // stored
	send(signedHeader(key, id, time.Now(), body), body)                                         // duplicate
	send(signedHeader(key, newMessageID(), time.Now(), []byte(`{"x":1}`)), body)                // forged
	send(signedHeader(key, newMessageID(), time.Now().Add(-time.Hour), body), body)             // stale
	send(signedHeader(key, newMessageID(), time.Now(), []byte(`not json`)), []byte(`not json`)) // bad body
	nul := []byte(`{"type":"user.created","data":{"id":"secretive\u0000value"}}`)
	send(signedHeader(key, newMessageID(), time.Now(), nul), nul) // unstorable

	logs := f.logs.String()
	if strings.Count(logs, "\n") != 6 {
		t.Errorf("want one log line per request, got:\n%s", logs)
	}
	secretParts := append(strings.Fields(secret+" "+rotated), strings.TrimPrefix(secret, "whsec_"), strings.TrimPrefix(rotated, "whsec_"), "whsec_")
	for _, s := range append(secretParts, signatures...) {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain secret or signature %q:\n%s", s, logs)
		}
	}
	// Nor the body: the user's email and the text around the NUL.
	for _, s := range []string{"example@example.org", "secretive", "not json"} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain body text %q:\n%s", s, logs)
		}
	}
}
