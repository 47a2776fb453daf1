package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/outbox/importer/importertest"
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

// Credentials of the fakes: distinctive, so a test can tell if one leaks.
const (
	clerkKey      = "sk_test_clerkSECRETvalue"
	stackProject  = "0e1c7a52-5b7e-4d5c-9c1c-2f9d5d0a1b2c"
	stackKey      = "ssk_stackSECRETvalue"
	workosKey     = "sk_test_workosSECRETvalue"
	baseTimeMilli = 1_717_200_000_000 // 2024-06-01
)

var baseTime = time.UnixMilli(baseTimeMilli).UTC()

// kit is what the tests need to know of one provider: its fake, its
// credentials, how to build test user n in some version, and what
// users_sync should then show.
type kit struct {
	provider string
	creds    Credentials
	secrets  []string
	fake     func(t *testing.T) *importertest.Server
	// userID is test user n's id.
	userID func(n int) string
	// user is user n's object in the version tagged tag, last updated at
	// updated (Stack Auth keeps no update time).
	user func(n int, tag string, updated time.Time) json.RawMessage
	// webhook is a webhook body carrying user n at tag, sent at at.
	webhook func(n int, tag string, at time.Time) json.RawMessage
}

var kits = []kit{
	{
		provider: outbox.ProviderClerk,
		creds:    Credentials{ClerkSecretKey: clerkKey},
		secrets:  []string{clerkKey},
		fake:     func(t *testing.T) *importertest.Server { return importertest.NewClerk(t, clerkKey) },
		userID:   func(n int) string { return fmt.Sprintf("user_2clerk%03d", n) },
		user: func(n int, tag string, updated time.Time) json.RawMessage {
			return importertest.ClerkUser(fmt.Sprintf("user_2clerk%03d", n), fmt.Sprintf("First%d", n), tag,
				email(n, tag), baseTime.Add(time.Duration(n)*time.Minute), updated)
		},
		webhook: func(n int, tag string, at time.Time) json.RawMessage {
			return envelope("type", "user.updated", "timestamp", at.UnixMilli(),
				importertest.ClerkUser(fmt.Sprintf("user_2clerk%03d", n), fmt.Sprintf("First%d", n), tag, email(n, tag),
					baseTime.Add(time.Duration(n)*time.Minute), at))
		},
	},
	{
		provider: outbox.ProviderStack,
		creds:    Credentials{StackProjectID: stackProject, StackSecretServerKey: stackKey},
		secrets:  []string{stackKey},
		fake:     func(t *testing.T) *importertest.Server { return importertest.NewStack(t, stackProject, stackKey) },
		userID:   func(n int) string { return fmt.Sprintf("6f0c1d2e-0000-4000-8000-%012d", n) },
		user: func(n int, tag string, _ time.Time) json.RawMessage {
			// User 2 is anonymous: the import must ask for those too.
			return importertest.StackUser(fmt.Sprintf("6f0c1d2e-0000-4000-8000-%012d", n), fmt.Sprintf("First%d %s", n, tag),
				email(n, tag), baseTime.Add(time.Duration(n)*time.Minute), n == 2)
		},
		webhook: func(n int, tag string, _ time.Time) json.RawMessage {
			return envelope("type", "user.updated", "", 0,
				importertest.StackUser(fmt.Sprintf("6f0c1d2e-0000-4000-8000-%012d", n), fmt.Sprintf("First%d %s", n, tag),
					email(n, tag), baseTime.Add(time.Duration(n)*time.Minute), n == 2))
		},
	},
	{
		provider: outbox.ProviderWorkOS,
		creds:    Credentials{WorkOSAPIKey: workosKey},
		secrets:  []string{workosKey},
		fake:     func(t *testing.T) *importertest.Server { return importertest.NewWorkOS(t, workosKey) },
		userID:   func(n int) string { return fmt.Sprintf("user_01WORKOS%03d", n) },
		user: func(n int, tag string, updated time.Time) json.RawMessage {
			return importertest.WorkOSUser(fmt.Sprintf("user_01WORKOS%03d", n), fmt.Sprintf("First%d", n), tag,
				email(n, tag), baseTime.Add(time.Duration(n)*time.Minute), updated)
		},
		webhook: func(n int, tag string, at time.Time) json.RawMessage {
			return envelope("event", "user.updated", "created_at", at.UTC().Format(time.RFC3339Nano),
				importertest.WorkOSUser(fmt.Sprintf("user_01WORKOS%03d", n), fmt.Sprintf("First%d", n), tag, email(n, tag),
					baseTime.Add(time.Duration(n)*time.Minute), at))
		},
	},
}

func email(n int, tag string) string { return fmt.Sprintf("u%d.%s@example.com", n, tag) }

// wantName is what users_sync.name shows for user n at tag, for every
// provider: first and last name (Clerk, WorkOS), or the display name (Stack).
func wantName(n int, tag string) string { return fmt.Sprintf("First%d %s", n, tag) }

// envelope wraps a user object in a webhook body with its event type and,
// when timeKey is set, its event time.
func envelope(typeKey, typ, timeKey string, at any, data json.RawMessage) json.RawMessage {
	body := map[string]any{"id": "evt_" + typ, typeKey: typ, "data": data}
	if timeKey != "" {
		body[timeKey] = at
	}
	b, _ := json.Marshal(body)
	return b
}

// env is one test's database, with the replicator folding it.
type env struct {
	t    *testing.T
	url  string
	pool *pgxpool.Pool
	logs *syncBuffer
}

var slotSeq atomic.Int64

// newEnv migrates a fresh database and runs the real replicator on it, in
// process, until the test ends.
func newEnv(t *testing.T) *env {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replicator.Migrate(ctx, conn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	_ = conn.Close(ctx)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	slot := fmt.Sprintf("importer_test_%d", slotSeq.Add(1)) // slots are per server
	go func() { done <- replicator.Run(runCtx, replicator.Config{DatabaseURL: url, Slot: slot}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replicator.Run: %v", err)
		}
	})
	return &env{t: t, url: url, pool: pool, logs: &syncBuffer{}}
}

// config is a Config for k's fake whose retries are recorded, not waited.
func (e *env) config(k kit, srv *importertest.Server, rec *sleeps) Config {
	return Config{
		Provider: k.provider, APIURL: srv.URL, Credentials: k.creds, PageSize: 3,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, RequestTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		sleep:  rec.sleep,
	}
}

// run imports through a connection of its own, as the command does.
func (e *env) run(ctx context.Context, cfg Config) (Summary, error) {
	e.t.Helper()
	conn, err := pgx.Connect(context.Background(), e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	return Run(ctx, conn, cfg)
}

// mustRun is run that fails the test on an error.
func (e *env) mustRun(cfg Config) Summary {
	e.t.Helper()
	sum, err := e.run(context.Background(), cfg)
	if err != nil {
		e.t.Fatalf("Run: %v (summary %+v)", err, sum)
	}
	return sum
}

// exec runs a statement on the test database.
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// syncRow is what the tests compare of a users_sync row.
type syncRow struct {
	ID, Name, Email string
	Deleted         bool
	RawJSON         any
}

// waitUsers waits until users_sync holds exactly want (in any order), then
// checks that nothing was rejected and every outbox row is accounted for.
func (e *env) waitUsers(want []syncRow) {
	e.t.Helper()
	want = append([]syncRow(nil), want...)
	sort.Slice(want, func(i, j int) bool { return want[i].ID < want[j].ID })
	var got []syncRow
	pending := -1
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		got, err = e.users()
		if err == nil {
			pending = e.count(`SELECT count(*) FROM neon_auth.outbox o WHERE NOT EXISTS
				(SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
				AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)`)
			if pending == 0 && reflect.DeepEqual(got, want) {
				break
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("users_sync never held the expected users (%d outbox rows unfolded, last error %v)\ngot  %+v\nwant %+v",
				pending, err, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rejects := e.count("SELECT count(*) FROM neon_auth.outbox_rejects"); rejects != 0 {
		e.t.Errorf("the replicator rejected %d rows", rejects)
	}
}

func (e *env) users() ([]syncRow, error) {
	rows, err := e.pool.Query(context.Background(),
		`SELECT id, coalesce(name, ''), coalesce(email, ''), deleted_at IS NOT NULL, raw_json::text
		FROM neon_auth.users_sync ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (syncRow, error) {
		var s syncRow
		var raw string
		if err := r.Scan(&s.ID, &s.Name, &s.Email, &s.Deleted, &raw); err != nil {
			return s, err
		}
		return s, json.Unmarshal([]byte(raw), &s.RawJSON)
	})
}

// row is the users_sync row user n of k at tag should give.
func (k kit) row(n int, tag string, obj json.RawMessage, deleted bool) syncRow {
	var raw any
	if err := json.Unmarshal(obj, &raw); err != nil {
		panic(err)
	}
	return syncRow{ID: k.userID(n), Name: wantName(n, tag), Email: email(n, tag), Deleted: deleted, RawJSON: raw}
}

// checkNoSecret fails if a credential of k shows in s.
func checkNoSecret(t *testing.T, k kit, what, s string) {
	t.Helper()
	for _, secret := range k.secrets {
		if bytes.Contains([]byte(s), []byte(secret)) {
			t.Errorf("%s holds a credential: %s", what, s)
		}
	}
}

// syncBuffer is a log sink safe for the goroutines under test.
type syncBuffer = pgtest.SyncBuffer
