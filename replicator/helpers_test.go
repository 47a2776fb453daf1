package replicator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" { // a replicator subprocess started by startChild
		os.Exit(runChild())
	}
	pgtest.Main(m)
}

// testDB is a fresh migrated database for one test.
type testDB struct {
	t    testing.TB
	url  string
	conn *pgx.Conn
	// slot is unique to the database: slot names are cluster-wide, and the
	// package's tests share one cluster.
	slot string
}

func newTestDB(t testing.TB) *testDB {
	t.Helper()
	return migratedDB(t, pgtest.NewDatabase(t))
}

func migratedDB(t testing.TB, url string) *testDB {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := Migrate(ctx, conn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	var dbName string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	slot := "s_" + strings.ToLower(nonIdent.ReplaceAllString(dbName, "_"))
	return &testDB{t: t, url: url, conn: conn, slot: slot[:min(len(slot), 63)]}
}

// syncBuffer is a log sink safe for the goroutines under test.
type syncBuffer = pgtest.SyncBuffer

// running is a replicator started in-process by a test.
type running struct {
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

// start runs the replicator against db until the test ends or stop is called.
func (db *testDB) start(cfg Config) *running {
	db.t.Helper()
	logs := &syncBuffer{}
	cfg.DatabaseURL = db.url
	if cfg.Slot == "" {
		cfg.Slot = db.slot
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- Run(ctx, cfg) }()
	db.t.Cleanup(func() {
		_ = r.stop()
		if db.t.Failed() {
			db.t.Logf("replicator logs:\n%s", logs.String())
		}
	})
	return r
}

// stop cancels the replicator and returns what Run returned.
func (r *running) stop() error {
	r.cancel()
	select {
	case err, ok := <-r.done:
		if !ok {
			return nil
		}
		close(r.done)
		return err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("replicator did not stop within 30s; logs:\n%s", r.logs.String())
	}
}

// event is an outbox row to insert.
type event struct {
	provider, typ string
	payload       string
	eventID       *string
	occurredAt    *time.Time
}

// genericUser is a generic payload for user id with a name.
func genericUser(id, name string) string {
	b, _ := json.Marshal(map[string]any{"id": id, "name": name, "email": id + "@example.com"})
	return string(b)
}

func (db *testDB) insert(evs ...event) []int64 {
	db.t.Helper()
	ids, err := insertEvents(context.Background(), db.conn, evs...)
	if err != nil {
		db.t.Fatalf("insert outbox rows: %v", err)
	}
	return ids
}

// insertEvents inserts evs in one transaction and returns their ids.
func insertEvents(ctx context.Context, conn *pgx.Conn, evs ...event) ([]int64, error) {
	var ids []int64
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, ev := range evs {
			var id int64
			if err := tx.QueryRow(ctx, `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
				VALUES ($1, $2, $3::jsonb, $4, $5) RETURNING id`, ev.provider, ev.typ, ev.payload, ev.eventID, ev.occurredAt).Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	return ids, err
}

func at(sec int) *time.Time {
	t := time.Date(2026, 1, 1, 0, 0, sec, 0, time.UTC)
	return &t
}

// pendingCount counts committed outbox rows with neither a history nor a reject row.
func pendingCount(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var n int64
	err := conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.outbox o
		WHERE NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
		AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)`).Scan(&n)
	return n, err
}

// waitCaughtUp waits until every committed outbox row is accounted for.
func (db *testDB) waitCaughtUp(timeout time.Duration) {
	db.t.Helper()
	pgtest.WaitFor(db.t, timeout, "every outbox row folded or rejected", func() (bool, error) {
		n, err := pendingCount(context.Background(), db.conn)
		return n == 0, err
	})
}

// checkInvariants asserts SPEC's guarantees on the final state: every
// committed outbox row has exactly one history row or exactly one reject,
// never both, never neither; and users_sync equals the pure fold of the
// outbox, computed here from scratch.
func checkInvariants(t testing.TB, ctx context.Context, conn *pgx.Conn) {
	t.Helper()
	var bad int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.outbox o
		WHERE (SELECT count(*) FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
		    + (SELECT count(*) FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id) <> 1`).Scan(&bad); err != nil {
		t.Fatalf("check exactly-once: %v", err)
	}
	if bad != 0 {
		t.Errorf("exactly-once violated: %d outbox rows without exactly one history-or-reject row", bad)
	}
	var orphans int64
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM neon_auth.users_sync_history h
			WHERE NOT EXISTS (SELECT 1 FROM neon_auth.outbox o WHERE o.id = h.outbox_id))
		+ (SELECT count(*) FROM neon_auth.outbox_rejects r
			WHERE NOT EXISTS (SELECT 1 FROM neon_auth.outbox o WHERE o.id = r.outbox_id))`).Scan(&orphans); err != nil {
		t.Fatalf("check orphans: %v", err)
	}
	if orphans != 0 {
		t.Errorf("%d history/reject rows refer to no outbox row", orphans)
	}
	checkHistoryImages(t, ctx, conn)
	want := pureFold(t, ctx, conn)
	got := readUsers(t, ctx, conn)
	if len(got) != len(want) {
		t.Errorf("users_sync has %d rows, the pure fold of the outbox has %d", len(got), len(want))
	}
	for id, w := range want {
		if g, ok := got[id]; !ok || !outbox.RowsEqual(g, w) {
			t.Errorf("users_sync row %s differs from the pure fold:\n got %s\nwant %s", id, g.JSON(), w.JSON())
		}
	}
}

// pureFold reads the whole outbox and folds it with outbox.Fold, no database involved.
func pureFold(t testing.TB, ctx context.Context, conn *pgx.Conn) map[string]*outbox.Row {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT id, provider, event_type, payload::text, event_id, occurred_at, received_at
		FROM neon_auth.outbox ORDER BY id`)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	states := map[string]outbox.State{}
	for rows.Next() {
		var r outbox.Record
		var payload string
		if err := rows.Scan(&r.ID, &r.Provider, &r.EventType, &payload, &r.EventID, &r.OccurredAt, &r.ReceivedAt); err != nil {
			t.Fatalf("scan outbox: %v", err)
		}
		r.Payload = []byte(payload)
		if r.OccurredAt != nil {
			u := r.OccurredAt.UTC()
			r.OccurredAt = &u
		}
		r.ReceivedAt = r.ReceivedAt.UTC()
		ev, err := outbox.Decode(r)
		if err != nil {
			continue
		}
		states[ev.UserID], _ = outbox.Fold(states[ev.UserID], ev)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	out := map[string]*outbox.Row{}
	for id, st := range states {
		out[id] = st.Row
	}
	return out
}

func readUsers(t testing.TB, ctx context.Context, conn *pgx.Conn) map[string]*outbox.Row {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT id, name, email, created_at, updated_at, deleted_at, raw_json::text FROM neon_auth.users_sync`)
	if err != nil {
		t.Fatalf("read users_sync: %v", err)
	}
	out := map[string]*outbox.Row{}
	for rows.Next() {
		var r outbox.Row
		var raw string
		if err := rows.Scan(&r.ID, &r.Name, &r.Email, &r.CreatedAt, &r.UpdatedAt, &r.DeletedAt, &raw); err != nil {
			t.Fatalf("scan users_sync: %v", err)
		}
		r.RawJSON = json.RawMessage(raw)
		out[r.ID] = &r
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read users_sync: %v", err)
	}
	return out
}

var nonIdent = regexp.MustCompile(`[^a-zA-Z0-9_]`)

func ptr[T any](v T) *T { return &v }

var discardLogger = slog.New(slog.DiscardHandler)

// checkHistoryImages asserts that the history's before/after images tell
// each user's story without a gap: each row's before is the previous row's
// after, a stale row changes nothing, every image has exactly the seven
// columns of users_sync, and the last after is the users_sync row.
func checkHistoryImages(t testing.TB, ctx context.Context, conn *pgx.Conn) {
	t.Helper()
	var broken, stale, shape int64
	err := conn.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE n > 1 AND before IS DISTINCT FROM prev),
			count(*) FILTER (WHERE operation = 'stale' AND before IS DISTINCT FROM after),
			count(*) FILTER (WHERE (after IS NOT NULL AND (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(after) k) <> $1)
				OR (before IS NOT NULL AND (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(before) k) <> $1))
		FROM (SELECT h.*, lag(after) OVER w AS prev, row_number() OVER w AS n
			FROM neon_auth.users_sync_history h WINDOW w AS (PARTITION BY user_id ORDER BY id)) x`,
		[]string{"created_at", "deleted_at", "email", "id", "name", "raw_json", "updated_at"}).Scan(&broken, &stale, &shape)
	if err != nil {
		t.Fatalf("check history images: %v", err)
	}
	if broken+stale+shape > 0 {
		t.Errorf("history images: %d rows whose before is not the previous after, %d stale rows that change the row, %d images without exactly the users_sync columns", broken, stale, shape)
	}
	rows, err := conn.Query(ctx, `SELECT DISTINCT ON (user_id) user_id, after::text FROM neon_auth.users_sync_history ORDER BY user_id, id DESC`)
	if err != nil {
		t.Fatalf("read last images: %v", err)
	}
	last := map[string]*outbox.Row{}
	for rows.Next() {
		var id string
		var after *string
		if err := rows.Scan(&id, &after); err != nil {
			t.Fatalf("read last images: %v", err)
		}
		if after == nil {
			last[id] = nil
			continue
		}
		var r outbox.Row
		if err := json.Unmarshal([]byte(*after), &r); err != nil {
			t.Fatalf("history image of %s does not read back as a row: %v\n%s", id, err, *after)
		}
		last[id] = &r
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read last images: %v", err)
	}
	users := readUsers(t, ctx, conn)
	for id, img := range last {
		if u := users[id]; !outbox.RowsEqual(u, img) {
			t.Errorf("the last history image of %s is not its users_sync row:\nimage %s\n  row %s", id, img.JSON(), u.JSON())
		}
	}
}

// waitApplyOnFoldLock waits until an apply of db waits for the fold lock
// (which the test holds).
func waitApplyOnFoldLock(t testing.TB, db *testDB) {
	t.Helper()
	pgtest.WaitFor(t, 30*time.Second, "an apply waiting for the fold lock", func() (bool, error) {
		var waiting bool
		err := db.conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory')`).Scan(&waiting)
		return waiting, err
	})
}

// waitUsers waits until users_sync holds every one of ids.
func waitUsers(t testing.TB, db *testDB, timeout time.Duration, what string, ids ...string) {
	t.Helper()
	pgtest.WaitFor(t, timeout, what, func() (bool, error) {
		var n int
		err := db.conn.QueryRow(context.Background(), `SELECT count(*) FROM neon_auth.users_sync WHERE id = ANY($1)`, ids).Scan(&n)
		return n == len(ids), err
	})
}
