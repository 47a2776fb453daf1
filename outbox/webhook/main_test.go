package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/replicator"
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// migratedDatabase returns the URL of a fresh database with the schema.
func migratedDatabase(t *testing.T) string {
	t.Helper()
	url := pgtest.NewDatabase(t)
	migrate(t, url)
	return url
}

func migrate(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := replicator.Migrate(ctx, conn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
}

func newPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// syncBuffer is a log sink safe for the goroutines under test.
type syncBuffer = pgtest.SyncBuffer

// fixture is a Handler on a fresh migrated database behind an httptest server.
type fixture struct {
	t       *testing.T
	pool    *pgxpool.Pool
	handler *Handler
	srv     *httptest.Server
	logs    *syncBuffer
	// keys holds each configured provider's first signing key.
	keys map[string][]byte
}

// newFixture configures clerk and generic (not stack) unless cfg says otherwise.
func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{t: t, logs: &syncBuffer{}, keys: map[string][]byte{}}
	if cfg.Secrets == nil {
		cfg.Secrets = map[string]string{}
		for i, p := range []string{"clerk", "generic"} {
			key, secret := newKey(t, byte(10*i+1))
			cfg.Secrets[p], f.keys[p] = secret, key
		}
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.pool = newPool(t, migratedDatabase(t))
	h, err := NewHandler(cfg, f.pool)
	if err != nil {
		t.Fatal(err)
	}
	f.handler = h
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

// answer is a decoded reply of the receiver.
type answer struct {
	Status   int
	Outcome  string `json:"outcome"`
	Error    string `json:"error"`
	OutboxID int64  `json:"outbox_id"`
}

// post sends body to /webhooks/provider with the given headers.
func post(t *testing.T, client *http.Client, base, provider string, h http.Header, body []byte) answer {
	t.Helper()
	a, err := tryPost(client, base, provider, h, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tryPost is post for goroutines, which must not call t.Fatal.
func tryPost(client *http.Client, base, provider string, h http.Header, body []byte) (answer, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/webhooks/"+provider, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header = h
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{Status: resp.StatusCode}
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, fmt.Errorf("status %d, body %q: %w", resp.StatusCode, raw, err)
	}
	return a, nil
}

// deliver signs body with the provider's key, now, and posts it.
func (f *fixture) deliver(provider, id string, body []byte) answer {
	f.t.Helper()
	return post(f.t, f.srv.Client(), f.srv.URL, provider, signedHeader(f.keys[provider], id, time.Now(), body), body)
}

// outboxCount counts the outbox rows, optionally of one event id.
func outboxCount(t *testing.T, pool *pgxpool.Pool, eventID string) int {
	t.Helper()
	var n int
	q, args := "SELECT count(*) FROM neon_auth.outbox", []any{}
	if eventID != "" {
		q, args = q+" WHERE event_id = $1", []any{eventID}
	}
	if err := pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func readSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newMessageID mints a distinct Svix message id created now.
func newMessageID() string { return "msg_" + newKSUID(time.Now()) }

func genericBody(userID string, ts time.Time) []byte {
	return []byte(`{"type":"user.updated","timestamp":` + strconv.FormatInt(ts.UnixMilli(), 10) +
		`,"data":{"id":"` + userID + `","name":"Generic User","email":"generic@example.com"}}`)
}
