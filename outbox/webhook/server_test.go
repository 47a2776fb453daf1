package webhook

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
)

// server is Serve running in the background on a loopback port.
type server struct {
	url    string
	key    []byte
	logs   *syncBuffer
	client *http.Client
	cancel context.CancelFunc
	done   chan error
}

// startServer runs Serve with a generic secret; cfg's Secrets and Logger are set here.
func startServer(t *testing.T, cfg Config) *server {
	t.Helper()
	key, secret := newKey(t, 3)
	s := &server{key: key, logs: &syncBuffer{}, client: &http.Client{Transport: &http.Transport{}}, done: make(chan error, 1)}
	cfg.Secrets = map[string]string{"generic": secret}
	cfg.Logger = slog.New(slog.NewJSONHandler(s.logs, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.url = "http://" + ln.Addr().String()
	var ctx context.Context
	ctx, s.cancel = context.WithCancel(context.Background())
	go func() { s.done <- Serve(ctx, ln, cfg) }()
	t.Cleanup(func() {
		s.cancel()
		if err := <-s.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		s.client.CloseIdleConnections()
	})
	pgtest.WaitFor(t, 10*time.Second, "the receiver to answer /healthz", func() (bool, error) {
		resp, err := s.client.Get(s.url + "/healthz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	return s
}

func (s *server) send(id string, body []byte) (answer, error) {
	return tryPost(s.client, s.url, "generic", signedHeader(s.key, id, time.Now(), body), body)
}

// traffic delivers distinct events one after another until stopped,
// recording which were acknowledged and which were refused.
type traffic struct {
	mu      sync.Mutex
	acked   []string
	refused map[string][]byte
	other   []string
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// halt stops the traffic and waits for its last delivery to be answered.
func (tr *traffic) halt() {
	tr.once.Do(func() { close(tr.stop) })
	<-tr.done
}

func startTraffic(s *server) *traffic {
	tr := &traffic{refused: map[string][]byte{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		deadline := time.Now().Add(2 * time.Minute)
		for i := 0; i < 20000 && time.Now().Before(deadline); i++ {
			select {
			case <-tr.stop:
				return
			default:
			}
			id := newMessageID()
			body := genericBody("user_"+id, time.Now())
			a, err := s.send(id, body)
			tr.record(id, body, a, err)
		}
	}()
	return tr
}

func (tr *traffic) record(id string, body []byte, a answer, err error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	switch {
	case err == nil && a.Status == http.StatusOK:
		tr.acked = append(tr.acked, id)
	case err == nil && a.Status == http.StatusServiceUnavailable:
		tr.refused[id] = body
	case err != nil:
		tr.other = append(tr.other, err.Error())
	default:
		tr.other = append(tr.other, (&statusError{a}).Error())
	}
}

func (tr *traffic) counts() (acked, refused int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.acked), len(tr.refused)
}

func TestServe_DatabaseStopped(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t, nil)
	url := cluster.URL("postgres")
	migrate(t, url)
	s := startServer(t, Config{DatabaseURL: url, InsertTimeout: time.Second})
	tr := startTraffic(s)
	defer tr.halt()
	ctx := context.Background()

	pgtest.WaitFor(t, 30*time.Second, "20 events acknowledged", func() (bool, error) {
		acked, _ := tr.counts()
		return acked >= 20, nil
	})
	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 30*time.Second, "5 events refused while the database is down", func() (bool, error) {
		_, refused := tr.counts()
		return refused >= 5, nil
	})
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ackedBefore, _ := tr.counts()
	pgtest.WaitFor(t, 30*time.Second, "20 more events acknowledged after the restart", func() (bool, error) {
		acked, _ := tr.counts()
		return acked >= ackedBefore+20, nil
	})
	tr.halt()

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if len(tr.other) > 0 {
		t.Errorf("answers other than 200 and 503: %v", tr.other)
	}
	// Every acknowledged event is in the outbox, exactly once.
	var missing []string
	if err := conn.QueryRow(ctx, `SELECT coalesce(array_agg(a.id), '{}') FROM unnest($1::text[]) AS a(id)
		WHERE (SELECT count(*) FROM neon_auth.outbox o WHERE o.provider = 'generic' AND o.event_id = a.id) <> 1`,
		tr.acked).Scan(&missing); err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged events not in the outbox exactly once: %v", len(missing), len(tr.acked), missing)
	}
	// The provider retries what was refused; each lands once.
	for id, body := range tr.refused {
		pgtest.WaitFor(t, 30*time.Second, "redelivery of "+id, func() (bool, error) {
			a, err := s.send(id, body)
			return err == nil && a.Status == http.StatusOK, err
		})
	}
	var rows, distinct int
	if err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT event_id) FROM neon_auth.outbox").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if want := len(tr.acked) + len(tr.refused); distinct != rows || rows < want {
		t.Errorf("outbox has %d rows (%d distinct); want at least %d, all distinct", rows, distinct, want)
	}
	if logs := s.logs.String(); strings.Contains(logs, cluster.Password()) {
		t.Errorf("logs contain the database password:\n%s", logs)
	}
	t.Logf("acknowledged %d, refused with 503 %d", len(tr.acked), len(tr.refused))
}

func TestServe_GracefulShutdown(t *testing.T) {
	t.Parallel()
	url := migratedDatabase(t)
	s := startServer(t, Config{DatabaseURL: url, InsertTimeout: 30 * time.Second})
	ctx := context.Background()
	locker, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(ctx)
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// Hold the insert in flight: EXCLUSIVE blocks INSERT's ROW EXCLUSIVE.
	if _, err := tx.Exec(ctx, "LOCK TABLE neon_auth.outbox IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	id := newMessageID()
	result := make(chan answer, 1)
	go func() {
		a, err := s.send(id, genericBody("u1", time.Now()))
		if err != nil {
			a.Error = err.Error()
		}
		result <- a
	}()
	// Poll from another connection: inside the locker's transaction
	// pg_stat_activity would be a snapshot frozen at its first read.
	watcher, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close(ctx)
	pgtest.WaitFor(t, 10*time.Second, "the insert to wait for the lock", func() (bool, error) {
		var waiting bool
		err := watcher.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO neon_auth.outbox%')`).Scan(&waiting)
		return waiting, err
	})
	s.cancel()
	// The listener closes at once; the request in flight is still answered.
	pgtest.WaitFor(t, 10*time.Second, "the listener to close", func() (bool, error) {
		_, err := net.DialTimeout("tcp", strings.TrimPrefix(s.url, "http://"), time.Second)
		return err != nil, nil
	})
	select {
	case err := <-s.done:
		t.Fatalf("Serve returned %v with a request in flight", err)
	default:
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if a := <-result; a.Status != http.StatusOK || a.Outcome != "stored" {
		t.Fatalf("in-flight delivery = %+v, want 200 stored", a)
	}
	var n int
	if err := locker.QueryRow(ctx, "SELECT count(*) FROM neon_auth.outbox WHERE event_id = $1", id).Scan(&n); err != nil || n != 1 {
		t.Fatalf("outbox rows for the in-flight event = %d, %v; want 1", n, err)
	}
}

func TestServe_MissingSchema(t *testing.T) {
	t.Parallel()
	_, secret := newKey(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = Serve(context.Background(), ln, Config{DatabaseURL: pgtest.NewDatabase(t), Secrets: map[string]string{"clerk": secret}})
	if err == nil || !strings.Contains(err.Error(), "replicator migrate") {
		t.Fatalf("Serve on an unmigrated database = %v, want an error saying to run replicator migrate", err)
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	_, good := newKey(t, 1)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"one provider", Config{Secrets: map[string]string{"stack": good}}, ""},
		{"no secrets", Config{}, "set CLERK_WEBHOOK_SECRET, STACK_WEBHOOK_SECRET, WORKOS_WEBHOOK_SECRET or GENERIC_WEBHOOK_SECRET"},
		{"only blank secrets", Config{Secrets: map[string]string{"clerk": " "}}, "no webhook secret"},
		{"malformed secret", Config{Secrets: map[string]string{"clerk": good, "generic": good + " whsec_s3cr3t!"}}, "secrets of generic (GENERIC_WEBHOOK_SECRET): secret 2 of 2"},
		{"unknown provider", Config{Secrets: map[string]string{"auth0": good}}, `unknown provider "auth0"`},
		{"negative max body", Config{Secrets: map[string]string{"clerk": good}, MaxBody: -1}, "MaxBody"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), good) {
				t.Errorf("error %q quotes a secret", err)
			}
		})
	}
	if err := Run(context.Background(), Config{}); !errors.Is(err, ErrNoSecrets) {
		t.Errorf("Run without secrets = %v, want ErrNoSecrets", err)
	}
}
