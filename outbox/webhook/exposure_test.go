package webhook

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usersync/usersync/internal/pgtest"
)

// sendHeaders opens a connection to addr and writes a POST's request line
// and headers, declaring contentLength body bytes but sending none.
func sendHeaders(t *testing.T, addr, path string, h http.Header, contentLength int) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, contentLength)
	for name, values := range h {
		for _, v := range values {
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readAnswer reads the response on conn, waiting at most wait, and returns
// its status and the body's "error".
func readAnswer(conn net.Conn, wait time.Duration) (answer, error) {
	if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return answer{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	a := answer{Status: resp.StatusCode}
	err = json.NewDecoder(resp.Body).Decode(&a)
	return a, err
}

// TestHandler_ServeHTTP_RefusesFromHeaders sends only the headers of each
// delivery, declaring a body that never comes: what the headers condemn is
// answered at once, without waiting for a body.
func TestHandler_ServeHTTP_RefusesFromHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxBody: 4096})
	addr := f.srv.Listener.Addr().String()
	key := f.keys["clerk"]
	body := []byte(strings.Repeat("x", 1000))
	now := time.Now()
	tooMany := signedHeader(key, newMessageID(), now, body)
	tooMany.Set("svix-signature", strings.TrimSpace(strings.Repeat(tooMany.Get("svix-signature")+" ", maxSignatures+1)))
	tests := []struct {
		name          string
		header        http.Header
		contentLength int
		wantStatus    int
		wantReason    string
	}{
		{"no signature headers", http.Header{}, len(body), http.StatusUnauthorized, "missing signature headers"},
		{"timestamp 6 minutes old", signedHeader(key, newMessageID(), now.Add(-6*time.Minute), body), len(body), http.StatusUnauthorized, "outside the tolerance"},
		{"timestamp not a number", func() http.Header {
			h := signedHeader(key, newMessageID(), now, body)
			h.Set("svix-timestamp", "yesterday")
			return h
		}(), len(body), http.StatusUnauthorized, "not a number"},
		{"no v1 signature", func() http.Header {
			h := signedHeader(key, newMessageID(), now, body)
			h.Set("svix-signature", "v1a,abc")
			return h
		}(), len(body), http.StatusUnauthorized, "no signature matches"},
		{"too many signatures", tooMany, len(body), http.StatusUnauthorized, "more than 8 entries"},
		{"declared length over the limit", signedHeader(key, newMessageID(), now, body), 4097, http.StatusRequestEntityTooLarge, "larger than 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn := sendHeaders(t, addr, "/webhooks/clerk", tt.header, tt.contentLength)
			got, err := readAnswer(conn, 10*time.Second)
			if err != nil {
				t.Fatalf("no answer before the body was sent: %v", err)
			}
			if got.Status != tt.wantStatus || !strings.Contains(got.Error, tt.wantReason) {
				t.Errorf("answer %+v, want %d with %q", got, tt.wantStatus, tt.wantReason)
			}
		})
	}
	t.Run("a plausible delivery waits for its body", func(t *testing.T) {
		t.Parallel()
		id := newMessageID()
		body := genericBody("u_waits", time.Now())
		conn := sendHeaders(t, addr, "/webhooks/generic", signedHeader(f.keys["generic"], id, time.Now(), body), len(body))
		if got, err := readAnswer(conn, 300*time.Millisecond); err == nil {
			t.Fatalf("answered %+v before the body was sent", got)
		}
		if _, err := conn.Write(body); err != nil {
			t.Fatal(err)
		}
		if got, err := readAnswer(conn, 10*time.Second); err != nil || got.Status != http.StatusOK {
			t.Fatalf("after the body: %+v, %v; want 200", got, err)
		}
	})
}

// TestHandler_ServeHTTP_BodyMemoryBound holds MaxBodyMemory with a body that
// is being sent slowly: another delivery gets 503 at once, and is stored once
// the memory is free again.
func TestHandler_ServeHTTP_BodyMemoryBound(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxBody: 2000, MaxBodyMemory: 2000})
	addr := f.srv.Listener.Addr().String()
	// Forged, but nothing in the headers says so: its body must be read.
	forged := signedHeader(f.keys["clerk"], newMessageID(), time.Now(), []byte("other"))
	// It leaves 50 bytes of MaxBodyMemory: less than the delivery below.
	hog := sendHeaders(t, addr, "/webhooks/clerk", forged, 1950)
	if _, err := io.WriteString(hog, strings.Repeat("x", 700)); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 30*time.Second, "the forged delivery's body to be reserved", func() (bool, error) {
		return f.handler.bodiesHeld.Load() == 1950, nil
	})
	body := genericBody("u_budget", time.Now())
	id := newMessageID()
	got := f.deliver("generic", id, body)
	if got.Status != http.StatusServiceUnavailable || got.Outcome != "overloaded" || !strings.Contains(got.Error, "retry later") {
		t.Errorf("answer = %+v, want 503 overloaded saying to retry later", got)
	}
	if _, err := io.WriteString(hog, strings.Repeat("x", 1250)); err != nil {
		t.Fatal(err)
	}
	if got, err := readAnswer(hog, 30*time.Second); err != nil || got.Status != http.StatusUnauthorized {
		t.Fatalf("forged delivery: %+v, %v; want 401", got, err)
	}
	if got := f.deliver("generic", id, body); got.Status != http.StatusOK || got.Outcome != "stored" {
		t.Fatalf("retry once the memory is free = %+v, want 200 stored", got)
	}
	if s := f.handler.Stats(); s.Overloaded != 1 || s.Stored != 1 {
		t.Errorf("Stats = %+v, want 1 overloaded and 1 stored", s)
	}
}

// TestServe_HeaderBytesCap sends a 1 MB signature header of 21,000 entries
// (the review's CPU attack); it is refused before any signature is computed.
func TestServe_HeaderBytesCap(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{DatabaseURL: migratedDatabase(t)})
	body := genericBody("u_header", time.Now())
	h := signedHeader(s.key, newMessageID(), time.Now(), body)
	entry := "v1," + base64.StdEncoding.EncodeToString(make([]byte, 32)) + " "
	h.Set("svix-signature", strings.Repeat(entry, 21000)+h.Get("svix-signature"))
	if n := len(h.Get("svix-signature")); n < 64<<10 {
		t.Fatalf("header of %d bytes is not over the cap", n)
	}
	if status := postGeneric(t, s, h, body); status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", status)
	}
}

// TestServe_HeaderBytesCap_Boundary: the documented cap is 32 KiB of
// headers. A signed delivery with 30 KiB of padding is stored; one with
// 33 KiB is answered 431 (net/http reads 4 KiB past MaxHeaderBytes, which
// let headers up to 36 KiB through; found in review).
func TestServe_HeaderBytesCap_Boundary(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{DatabaseURL: migratedDatabase(t)})
	for _, tc := range []struct {
		padding int
		want    int
	}{
		{30 << 10, http.StatusOK},
		{33 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		body := genericBody(fmt.Sprintf("u_header_%d", tc.padding), time.Now())
		h := signedHeader(s.key, newMessageID(), time.Now(), body)
		h.Set("X-Padding", strings.Repeat("p", tc.padding))
		if status := postGeneric(t, s, h, body); status != tc.want {
			t.Errorf("%d bytes of padding: status %d, want %d", tc.padding, status, tc.want)
		}
	}
}

// postGeneric posts body to s's generic endpoint with headers h and returns
// the answer's status.
func postGeneric(t *testing.T, s *server, h http.Header, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/webhooks/generic", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHandler_ServeHTTP_TruncatesLoggedValues signs a delivery whose message
// id is 20 KB: the answer is a 400 (no such id is stored) and the log line
// quotes only the id's start.
func TestHandler_ServeHTTP_TruncatesLoggedValues(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	id := "msg_" + strings.Repeat("A", 20000)
	body := []byte(`{"type":"user.created.` + strings.Repeat("z", 5000) + `","data":{"id":"u"}}`)
	if got := f.deliver("generic", id, body); got.Status != http.StatusOK || got.Outcome != "ignored" {
		t.Errorf("answer = %+v, want 200 ignored for a type that is no user event", got)
	}
	got := f.deliver("generic", id, genericBody("u_long_id", time.Now()))
	if got.Status != http.StatusBadRequest {
		t.Errorf("answer = %+v, want 400 for an id longer than the outbox stores", got)
	}
	lines := strings.Split(strings.TrimSpace(f.logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 log lines, got %d", len(lines))
	}
	for _, line := range lines {
		if len(line) > 1000 {
			t.Errorf("log line of %d bytes: %.300s...", len(line), line)
		}
		if !strings.Contains(line, `"event_id":"msg_AAAA`) {
			t.Errorf("log line does not quote the id's start: %.300s", line)
		}
	}
}

// TestServe_IdleConnectionsEvicted holds 400 idle connections open against
// a bound of 50: a signed delivery is still stored, and the receiver keeps
// at most 50 connections, having closed the longest-idle ones.
func TestServe_IdleConnectionsEvicted(t *testing.T) {
	t.Parallel()
	const maxConns, idle = 50, 400
	url := migratedDatabase(t)
	s := startServer(t, Config{DatabaseURL: url, MaxConns: maxConns})
	addr := strings.TrimPrefix(s.url, "http://")
	conns := make([]net.Conn, 0, idle)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range idle {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		// Most ask for /healthz and stay open (idle keep-alive); some send nothing.
		if i%10 != 0 {
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
		}
	}
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range 3 {
		id := newMessageID()
		body := genericBody("u_"+id, time.Now())
		a, err := tryPost(client, s.url, "generic", signedHeader(s.key, id, time.Now(), body), body)
		if err != nil || a.Status != http.StatusOK || a.Outcome != "stored" {
			t.Fatalf("delivery with %d idle connections held: %+v, %v; want 200 stored", idle, a, err)
		}
	}
	open := stillOpen(conns)
	if open > maxConns {
		t.Errorf("%d of the %d idle connections still open, want at most %d", open, idle, maxConns)
	}
	t.Logf("%d of %d idle connections still open", open, idle)
}

// stillOpen counts the connections the server has not closed: a read that
// times out, after any answer already sent, finds the connection open.
func stillOpen(conns []net.Conn) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				open++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return open
}

func TestConnLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		maxConns  int
		pool      int64
		limit     uint64
		want      int
		wantError string
	}{
		{"limit unknown", 1024, 4, 0, 1024, ""},
		{"unlimited", 1024, 4, ^uint64(0), 1024, ""},
		{"room to spare", 1024, 4, 20000, 1024, ""},
		{"exactly enough", 1024, 4, 1024 + fdReserve + 4, 1024, ""},
		{"lowered to fit", 1024, 4, 1024, 1024 - fdReserve - 4, ""},
		{"too low to serve", 1024, 4, 50, 0, "ulimit -n) is 50, too low to serve webhooks: raise it to at least " + strconv.Itoa(fdReserve+4+MinConns)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := connLimit(tt.maxConns, tt.pool, tt.limit)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("connLimit = %d, %v; want an error containing %q", got, err, tt.wantError)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("connLimit = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestConfig_Validate_Secrets(t *testing.T) {
	t.Parallel()
	key, good := newKey(t, 1)
	_, other := newKey(t, 100)
	bare := base64.RawStdEncoding.EncodeToString(key) // the same key, without whsec_ and padding
	short := "whsec_" + base64.StdEncoding.EncodeToString(key[:MinKeyBytes-1])
	tests := []struct {
		name    string
		secrets map[string]string
		wantErr []string
	}{
		{"24-byte keys", map[string]string{"clerk": good, "stack": other}, nil},
		{"a provider rotating between two keys", map[string]string{"clerk": good + " " + other}, nil},
		{"23-byte key", map[string]string{"stack": other + " " + short},
			[]string{"secrets of stack (STACK_WEBHOOK_SECRET): secret 2 of 2 is 23 bytes long, want at least 24"}},
		{"1-byte key", map[string]string{"generic": "whsec_AA=="},
			[]string{"GENERIC_WEBHOOK_SECRET", "1 bytes long"}},
		{"one key for two providers", map[string]string{"clerk": good, "stack": other + " " + good},
			[]string{"CLERK_WEBHOOK_SECRET and STACK_WEBHOOK_SECRET share a secret"}},
		{"one key, spelt two ways", map[string]string{"clerk": good, "generic": bare},
			[]string{"CLERK_WEBHOOK_SECRET and GENERIC_WEBHOOK_SECRET share a secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Config{Secrets: tt.secrets}.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want an error containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %q, want it to contain %q", err, w)
				}
			}
			for _, secret := range []string{bare, strings.TrimPrefix(short, "whsec_"), "AA=="} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q quotes a secret", err)
				}
			}
		})
	}
	if _, err := NewHandler(Config{Secrets: map[string]string{"clerk": good, "stack": good}}, nil); err == nil {
		t.Error("NewHandler accepted one key for two providers")
	}
	if err := Run(context.Background(), Config{Secrets: map[string]string{"clerk": short}}); err == nil || !strings.Contains(err.Error(), "CLERK_WEBHOOK_SECRET") {
		t.Errorf("Run with a short key = %v, want an error naming CLERK_WEBHOOK_SECRET", err)
	}
}
