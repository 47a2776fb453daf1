package importer

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usersync/usersync/outbox"
)

const testSecret = "sk_test_S3cr3tV4lue"

// script answers the n-th request with steps[n-1], the last step repeating.
type script struct {
	mu    sync.Mutex
	n     int
	steps []http.HandlerFunc
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.n++
	step := s.steps[min(s.n, len(s.steps))-1]
	s.mu.Unlock()
	step(w, r)
}

func (s *script) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func status(code int, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"errors":[{"message":"status ` + http.StatusText(code) + `, you sent Bearer ` + testSecret + `"}]}`))
	}
}

var ok200 http.HandlerFunc = func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`[]`)) }

// sleeps records the delays a client asked for instead of waiting them.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

var fixedNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// newTestClient is a Clerk API client of srv whose retries are recorded, not waited.
func newTestClient(t *testing.T, srv *httptest.Server, edit func(*Config)) (*apiClient, *sleeps) {
	t.Helper()
	rec := &sleeps{}
	cfg := Config{
		Provider: outbox.ProviderClerk, APIURL: srv.URL, Credentials: Credentials{ClerkSecretKey: testSecret},
		MaxAttempts: 5, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, RequestTimeout: 5 * time.Second,
		sleep: rec.sleep, now: func() time.Time { return fixedNow },
	}
	if edit != nil {
		edit(&cfg)
	}
	cfg = cfg.withDefaults()
	src, err := newClerkSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src.api, rec
}

func get(c *apiClient) ([]byte, error) {
	return c.get(context.Background(), c.endpoint(nil, "v1", "users"))
}

func TestAPIClient_Retries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []http.HandlerFunc
		// check judges each recorded delay, in order.
		check []func(time.Duration) bool
	}{
		{"429 honours Retry-After seconds", []http.HandlerFunc{status(429, "Retry-After", "7"), ok200},
			[]func(time.Duration) bool{equal(7 * time.Second)}},
		{"429 honours a Retry-After HTTP date", []http.HandlerFunc{
			status(429, "Retry-After", fixedNow.Add(2*time.Minute).Format(http.TimeFormat)), ok200},
			[]func(time.Duration) bool{equal(2 * time.Minute)}},
		{"429 with a past date retries at once", []http.HandlerFunc{
			status(429, "Retry-After", fixedNow.Add(-time.Minute).Format(http.TimeFormat)), ok200},
			[]func(time.Duration) bool{equal(0)}},
		{"429 without Retry-After backs off", []http.HandlerFunc{status(429), ok200},
			[]func(time.Duration) bool{between(50*time.Millisecond, 100*time.Millisecond)}},
		{"5xx back off exponentially with jitter", []http.HandlerFunc{status(500), status(502), status(504), status(500), ok200},
			[]func(time.Duration) bool{
				between(50*time.Millisecond, 100*time.Millisecond), between(100*time.Millisecond, 200*time.Millisecond),
				between(200*time.Millisecond, 400*time.Millisecond), between(400*time.Millisecond, 800*time.Millisecond)}},
		{"503 honours Retry-After", []http.HandlerFunc{status(503, "Retry-After", "1"), ok200},
			[]func(time.Duration) bool{equal(time.Second)}},
		{"a dropped connection is retried", []http.HandlerFunc{dropConnection, ok200},
			[]func(time.Duration) bool{between(50*time.Millisecond, 100*time.Millisecond)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &script{steps: tt.steps}
			srv := httptest.NewServer(s)
			defer srv.Close()
			c, rec := newTestClient(t, srv, nil)
			body, err := get(c)
			if err != nil || string(body) != "[]" {
				t.Fatalf("get = %q, %v; want the last answer", body, err)
			}
			got := rec.all()
			if len(got) != len(tt.check) || s.requests() != len(tt.steps) {
				t.Fatalf("slept %v over %d requests; want %d sleeps over %d requests", got, s.requests(), len(tt.check), len(tt.steps))
			}
			for i, ok := range tt.check {
				if !ok(got[i]) {
					t.Errorf("delay %d = %s, out of bounds", i+1, got[i])
				}
			}
		})
	}
}

func equal(want time.Duration) func(time.Duration) bool {
	return func(d time.Duration) bool { return d == want }
}

func between(lo, hi time.Duration) func(time.Duration) bool {
	return func(d time.Duration) bool { return d >= lo && d <= hi }
}

func dropConnection(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

func TestAPIClient_TimeoutIsRetried(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	hang := func(w http.ResponseWriter, r *http.Request) {
		select { // until the client gives up on the request
		case <-r.Context().Done():
		case <-release:
		}
	}
	s := &script{steps: []http.HandlerFunc{hang, ok200}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, rec := newTestClient(t, srv, func(c *Config) { c.RequestTimeout = 50 * time.Millisecond })
	if body, err := get(c); err != nil || string(body) != "[]" {
		t.Fatalf("get = %q, %v; want the answer of the retry", body, err)
	}
	if s.requests() != 2 || len(rec.all()) != 1 {
		t.Errorf("%d requests, sleeps %v; want the hung request retried once", s.requests(), rec.all())
	}
}

func TestAPIClient_Failures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		steps        []http.HandlerFunc
		wantRequests int
		wantErr      []string
		is           func(error) bool
	}{
		{"401 stops at once naming the variable", []http.HandlerFunc{status(401), ok200}, 1,
			[]string{"clerk refused the credentials (401 Unauthorized): check CLERK_SECRET_KEY"}, isAuth},
		{"403 stops at once", []http.HandlerFunc{status(403), ok200}, 1, []string{"403 Forbidden", "CLERK_SECRET_KEY"}, isAuth},
		{"400 is not retried", []http.HandlerFunc{status(400), ok200}, 1, []string{"clerk answered 400 Bad Request to GET /v1/users"}, nil},
		{"404 is not found", []http.HandlerFunc{status(404), ok200}, 1, nil,
			func(err error) bool { return errors.Is(err, errNotFound) }},
		{"a redirect is not followed", []http.HandlerFunc{status(302, "Location", "http://elsewhere.invalid/v1/users"), ok200}, 1,
			[]string{"302 Found"}, nil},
		{"persistent 500 gives up", []http.HandlerFunc{status(500)}, 3,
			[]string{"GET /v1/users gave up after 3 attempts", "500 Internal Server Error"}, nil},
		{"a Retry-After beyond the limit gives up", []http.HandlerFunc{status(429, "Retry-After", "3600"), ok200}, 1,
			[]string{"429 Too Many Requests", "retry after 1h0m0s", "run it again later"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &script{steps: tt.steps}
			srv := httptest.NewServer(s)
			defer srv.Close()
			c, rec := newTestClient(t, srv, func(c *Config) { c.MaxAttempts, c.MaxRetryAfter = 3, 10*time.Minute })
			_, err := get(c)
			if err == nil {
				t.Fatal("get succeeded")
			}
			if tt.is != nil && !tt.is(err) {
				t.Errorf("error %v (%T) is not the kind expected", err, err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error %q holds the secret", err)
			}
			if s.requests() != tt.wantRequests || len(rec.all()) != tt.wantRequests-1 {
				t.Errorf("%d requests and sleeps %v; want %d requests", s.requests(), rec.all(), tt.wantRequests)
			}
		})
	}
}

func isAuth(err error) bool {
	var ae *AuthError
	return errors.As(err, &ae)
}

func TestAPIClient_CancelledWhileWaiting(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(status(500))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c, _ := newTestClient(t, srv, func(c *Config) {
		c.sleep = func(context.Context, time.Duration) error { cancel(); return context.Canceled }
	})
	if _, err := c.get(ctx, c.endpoint(nil, "v1", "users")); !errors.Is(err, context.Canceled) {
		t.Errorf("get = %v, want context.Canceled", err)
	}
}

func TestAPIClient_EndpointEscapesEachSegment(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(ok200)
	defer srv.Close()
	c, _ := newTestClient(t, srv, func(c *Config) { c.APIURL = "https://stack.example.com/base/" })
	got := c.endpoint(nil, "api", "v1", "users", "../../admin?x=1").String()
	if want := "https://stack.example.com/base/api/v1/users/..%2F..%2Fadmin%3Fx=1"; got != want {
		t.Errorf("endpoint = %s, want %s", got, want)
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value  string
		want   time.Duration
		wantOK bool
	}{
		{"7", 7 * time.Second, true},
		{" 0 ", 0, true},
		{fixedNow.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{fixedNow.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{"99999999999999999999", 0, false},
		{"999999999", 24 * time.Hour, true},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.value != "" {
			h.Set("Retry-After", tt.value)
		}
		got, ok := retryAfter(h, fixedNow)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("retryAfter(%q) = %s, %v; want %s, %v", tt.value, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for attempt := 1; attempt <= 40; attempt++ {
		d := min(100*time.Millisecond<<min(attempt-1, 30), 5*time.Second)
		for range 20 {
			if got := backoff(attempt, 100*time.Millisecond, 5*time.Second); got < d/2 || got > d {
				t.Fatalf("backoff(%d) = %s, want %s to %s", attempt, got, d/2, d)
			}
		}
	}
}

func TestRun_ListingNotFoundNamesTheURL(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(status(404))
	defer srv.Close()
	r := &run{cfg: Config{Provider: outbox.ProviderClerk, APIURL: srv.URL + "/v1"}}
	c, _ := newTestClient(t, srv, func(c *Config) { c.APIURL = srv.URL + "/v1" })
	r.src = &clerkSource{api: c, pageSize: 10}
	err := r.list(context.Background())
	if err == nil || !strings.Contains(err.Error(), "check --api-url") || !strings.Contains(err.Error(), srv.URL+"/v1") {
		t.Errorf("list = %v; want a sentence about --api-url naming it", err)
	}
}
