package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/replicator"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testDB is a fresh migrated database with its own slot name.
type testDB struct {
	t    *testing.T
	url  string
	conn *pgx.Conn
	slot string
}

func newTestDB(t *testing.T) *testDB {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := replicator.Migrate(ctx, conn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	slot := "a_" + strings.NewReplacer("-", "_", ".", "_").Replace(db)
	return &testDB{t: t, url: url, conn: conn, slot: slot[:min(len(slot), 63)]}
}

// syncBuffer is a log sink safe for the goroutines under test.
type syncBuffer = pgtest.SyncBuffer

// replicatorRun is a replicator started in-process.
type replicatorRun struct {
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

// start runs the replicator until stop or the end of the test, and waits
// until it streams.
func (db *testDB) start() *replicatorRun {
	db.t.Helper()
	r := &replicatorRun{done: make(chan error, 1), logs: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	cfg := replicator.Config{
		DatabaseURL: db.url, Slot: db.slot, StatusInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	go func() { r.done <- replicator.Run(ctx, cfg) }()
	db.t.Cleanup(func() {
		r.stop(db.t)
		if db.t.Failed() {
			db.t.Logf("replicator logs:\n%s", r.logs.String())
		}
	})
	pgtest.WaitFor(db.t, 30*time.Second, "the replicator to stream", func() (bool, error) {
		return strings.Contains(r.logs.String(), "msg=streaming"), nil
	})
	return r
}

func (r *replicatorRun) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("replicator: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("replicator did not stop within 30s")
	}
}

// event is an outbox row to insert.
type event struct {
	provider, typ, payload string
	eventID                *string
	occurredAt, receivedAt *time.Time
}

func generic(typ, id, name string, sec int) event {
	b, _ := json.Marshal(map[string]any{"id": id, "name": name, "email": strings.ToLower(name) + "@example.com"})
	return event{provider: "generic", typ: typ, payload: string(b), occurredAt: at(sec)}
}

func at(sec int) *time.Time {
	t := time.Date(2026, 1, 1, 0, 0, sec, 0, time.UTC)
	return &t
}

// insert adds evs in one transaction and returns their ids.
func (db *testDB) insert(evs ...event) []int64 {
	db.t.Helper()
	ids, err := insertEvents(context.Background(), db.conn, evs...)
	if err != nil {
		db.t.Fatalf("insert: %v", err)
	}
	return ids
}

func insertEvents(ctx context.Context, conn *pgx.Conn, evs ...event) ([]int64, error) {
	var ids []int64
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, ev := range evs {
			var id int64
			if err := tx.QueryRow(ctx, `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at, received_at)
				VALUES ($1, $2, $3::jsonb, $4, $5, COALESCE($6, now())) RETURNING id`,
				ev.provider, ev.typ, ev.payload, ev.eventID, ev.occurredAt, ev.receivedAt).Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	return ids, err
}

// exec runs SQL or fails the test.
func (db *testDB) exec(sql string, args ...any) {
	db.t.Helper()
	if _, err := db.conn.Exec(context.Background(), sql, args...); err != nil {
		db.t.Fatalf("%s: %v", sql, err)
	}
}

// count runs a count query.
func (db *testDB) count(sql string, args ...any) int64 {
	db.t.Helper()
	var n int64
	if err := db.conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		db.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

const pendingCountSQL = `SELECT count(*) FROM neon_auth.outbox o
	WHERE NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
	AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)`

func (db *testDB) waitCaughtUp() {
	db.t.Helper()
	pgtest.WaitFor(db.t, 30*time.Second, "every outbox row folded or rejected", func() (bool, error) {
		var n int64
		err := db.conn.QueryRow(context.Background(), pendingCountSQL).Scan(&n)
		return n == 0, err
	})
}

// verify runs Verify and returns its report and differences.
func (db *testDB) verify(cfg VerifyConfig) (VerifyReport, []Difference) {
	db.t.Helper()
	var diffs []Difference
	cfg.Slot = db.slot
	cfg.OnDifference = func(d Difference) error { diffs = append(diffs, d); return nil }
	report, err := Verify(context.Background(), db.conn, cfg)
	if err != nil {
		db.t.Fatalf("verify: %v", err)
	}
	return report, diffs
}

// checkExactlyOnce asserts that every outbox row has exactly one history
// row or exactly one reject.
func (db *testDB) checkExactlyOnce() {
	db.t.Helper()
	bad := db.count(`SELECT count(*) FROM neon_auth.outbox o
		WHERE (SELECT count(*) FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
		    + (SELECT count(*) FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id) <> 1`)
	if bad != 0 {
		db.t.Errorf("%d outbox rows without exactly one history-or-reject row", bad)
	}
}

// pureFold folds the whole outbox from scratch, in memory, as the oracle;
// forgotten users are left out.
func (db *testDB) pureFold() map[string]*outbox.Row {
	db.t.Helper()
	ctx := context.Background()
	rows, err := db.conn.Query(ctx, `SELECT `+outboxColumns+` FROM neon_auth.outbox o
		WHERE NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id) ORDER BY o.id`)
	if err != nil {
		db.t.Fatal(err)
	}
	states := map[string]outbox.State{}
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			db.t.Fatal(err)
		}
		if ev, err := outbox.Decode(rec); err == nil {
			states[ev.UserID], _ = outbox.Fold(states[ev.UserID], ev)
		}
	}
	if err := rows.Err(); err != nil {
		db.t.Fatal(err)
	}
	forgotten := map[string]bool{}
	rows, _ = db.conn.Query(ctx, "SELECT user_id FROM neon_auth.forgotten_users")
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		db.t.Fatal(err)
	}
	for _, id := range ids {
		forgotten[id] = true
	}
	out := map[string]*outbox.Row{}
	for id, st := range states {
		if !forgotten[id] {
			out[id] = st.Row
		}
	}
	return out
}

// users reads users_sync.
func (db *testDB) users() map[string]*outbox.Row {
	db.t.Helper()
	rows, err := db.conn.Query(context.Background(), `SELECT id, name, email, created_at, updated_at, deleted_at, raw_json::text FROM neon_auth.users_sync`)
	if err != nil {
		db.t.Fatal(err)
	}
	out := map[string]*outbox.Row{}
	for rows.Next() {
		var r outbox.Row
		var raw string
		if err := rows.Scan(&r.ID, &r.Name, &r.Email, &r.CreatedAt, &r.UpdatedAt, &r.DeletedAt, &raw); err != nil {
			db.t.Fatal(err)
		}
		r.RawJSON = json.RawMessage(raw)
		out[r.ID] = &r
	}
	if err := rows.Err(); err != nil {
		db.t.Fatal(err)
	}
	return out
}

// checkMatchesPureFold asserts users_sync equals the in-memory oracle.
func (db *testDB) checkMatchesPureFold() {
	db.t.Helper()
	want, got := db.pureFold(), db.users()
	if len(want) != len(got) {
		db.t.Errorf("users_sync has %d rows, the pure fold %d", len(got), len(want))
	}
	for id, w := range want {
		if g := got[id]; !outbox.RowsEqual(g, w) {
			db.t.Errorf("user %s: got %s, want %s", id, g.JSON(), w.JSON())
		}
	}
}

func describe(diffs []Difference) string {
	var b strings.Builder
	for _, d := range diffs {
		fmt.Fprintf(&b, "\n  %+v", d)
	}
	return b.String()
}

func pgxConnect(ctx context.Context, url string) (*pgx.Conn, error) { return pgx.Connect(ctx, url) }
