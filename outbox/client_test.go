package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/replicator"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newDB returns a pool on a fresh migrated database.
func newDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := replicator.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func genericEvent(userID, eventID string) outbox.NewEvent {
	payload, _ := json.Marshal(map[string]any{"id": userID, "name": "Ada Lovelace", "email": userID + "@example.com"})
	return outbox.NewEvent{
		Provider:   outbox.ProviderGeneric,
		Type:       outbox.TypeCreated,
		Payload:    payload,
		EventID:    eventID,
		OccurredAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestNewEvent_Validate(t *testing.T) {
	t.Parallel()
	good := genericEvent("u1", "e1")
	tests := []struct {
		name    string
		edit    func(*outbox.NewEvent)
		wantErr string
	}{
		{"valid", func(*outbox.NewEvent) {}, ""},
		{"workos", func(e *outbox.NewEvent) { e.Provider = outbox.ProviderWorkOS }, ""},
		{"no provider", func(e *outbox.NewEvent) { e.Provider = "" }, "Provider"},
		{"unknown provider", func(e *outbox.NewEvent) { e.Provider = "Clerk" }, `Provider "Clerk", want clerk, stack, workos or generic`},
		{"event id too long", func(e *outbox.NewEvent) { e.EventID = strings.Repeat("x", 513) }, "EventID"},
		{"event id not UTF-8", func(e *outbox.NewEvent) { e.EventID = "\xff" }, "EventID"},
		{"session event", func(e *outbox.NewEvent) { e.Type = "session.created" }, `Type "session.created"`},
		{"payload array", func(e *outbox.NewEvent) { e.Payload = json.RawMessage(`[]`) }, "Payload"},
		{"payload not json", func(e *outbox.NewEvent) { e.Payload = json.RawMessage(`{`) }, "Payload"},
		{"payload null", func(e *outbox.NewEvent) { e.Payload = nil }, "Payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := good
			tt.edit(&ev)
			err := ev.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, outbox.ErrInvalidEvent) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want ErrInvalidEvent naming %s", err, tt.wantErr)
			}
			// Insert refuses it before touching the database.
			if _, _, err := outbox.Insert(context.Background(), nil, ev); !errors.Is(err, outbox.ErrInvalidEvent) {
				t.Errorf("Insert = %v, want ErrInvalidEvent", err)
			}
		})
	}
}

func TestInsert(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	ctx := context.Background()

	t.Run("in the caller's transaction", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		id, inserted, err := outbox.Insert(ctx, tx, genericEvent("u1", "tx-1"))
		if err != nil || !inserted || id == 0 {
			t.Fatalf("Insert = %d, %v, %v; want a new row", id, inserted, err)
		}
		if n := count(t, pool, "tx-1"); n != 0 {
			t.Errorf("row visible before commit: %d", n)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if n := count(t, pool, "tx-1"); n != 1 {
			t.Errorf("rows after commit = %d, want 1", n)
		}
	})
	t.Run("rolled back", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := outbox.Insert(ctx, tx, genericEvent("u2", "tx-2")); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if n := count(t, pool, "tx-2"); n != 0 {
			t.Errorf("rows after rollback = %d, want 0", n)
		}
	})
	t.Run("duplicate event id", func(t *testing.T) {
		first, _, err := outbox.Insert(ctx, pool, genericEvent("u3", "dup"))
		if err != nil {
			t.Fatal(err)
		}
		id, inserted, err := outbox.Insert(ctx, pool, genericEvent("u3", "dup"))
		if err != nil || inserted || id != first {
			t.Fatalf("second Insert = %d, %v, %v; want %d, false, nil", id, inserted, err, first)
		}
	})
	t.Run("no event id, no time", func(t *testing.T) {
		ev := genericEvent("u4", "")
		ev.OccurredAt = time.Time{}
		a, _, err1 := outbox.Insert(ctx, pool, ev)
		b, inserted, err2 := outbox.Insert(ctx, pool, ev)
		if err := errors.Join(err1, err2); err != nil || !inserted || a == b {
			t.Fatalf("Insert twice = %d, %d (inserted %v), %v; want two rows", a, b, inserted, err)
		}
		var eventID *string
		var at *time.Time
		if err := pool.QueryRow(ctx, "SELECT event_id, occurred_at FROM neon_auth.outbox WHERE id = $1", a).Scan(&eventID, &at); err != nil {
			t.Fatal(err)
		}
		if eventID != nil || at != nil {
			t.Errorf("event_id, occurred_at = %v, %v; want NULL, NULL", eventID, at)
		}
	})
	t.Run("simple protocol", func(t *testing.T) {
		// As through PgBouncer in transaction mode.
		cfg, err := pgx.ParseConfig(pool.Config().ConnString())
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, inserted, err := outbox.Insert(ctx, conn, genericEvent("u5", "simple")); err != nil || !inserted {
			t.Fatalf("Insert = %v, %v; want inserted", inserted, err)
		}
		var name string
		if err := pool.QueryRow(ctx, "SELECT payload->>'name' FROM neon_auth.outbox WHERE event_id = 'simple'").Scan(&name); err != nil || name != "Ada Lovelace" {
			t.Errorf("payload name = %q, %v; want stored as jsonb", name, err)
		}
	})
}

// TestInsert_ConcurrentDuplicate: a second transaction inserting the same
// event waits for the first and then reports the first's row.
func TestInsert_ConcurrentDuplicate(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	ctx := context.Background()
	tx1, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(ctx)
	first, _, err := outbox.Insert(ctx, tx1, genericEvent("u1", "race"))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		id       int64
		inserted bool
		err      error
	}
	second := make(chan result, 1)
	go func() {
		id, inserted, err := outbox.Insert(ctx, pool, genericEvent("u1", "race"))
		second <- result{id, inserted, err}
	}()
	pgtest.WaitFor(t, 10*time.Second, "the second insert to wait", func() (bool, error) {
		var waiting bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO neon_auth.outbox%')`).Scan(&waiting)
		return waiting, err
	})
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-second; r.err != nil || r.inserted || r.id != first {
		t.Fatalf("second Insert = %+v; want id %d, not inserted", r, first)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, eventID string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM neon_auth.outbox WHERE event_id = $1", eventID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// runReplicator runs replicator.Run until the test ends.
func runReplicator(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- replicator.Run(ctx, replicator.Config{DatabaseURL: pool.Config().ConnString()}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replicator.Run: %v", err)
		}
	})
}

func TestWaitFolded(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	runReplicator(t, pool)
	ctx := context.Background()

	t.Run("folded", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		id, _, err := outbox.Insert(ctx, tx, genericEvent("ada", "signup-1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		res, err := outbox.WaitFolded(wctx, pool, id)
		if err != nil {
			t.Fatal(err)
		}
		want := outbox.FoldResult{OutboxID: id, Operation: outbox.OpInsert, UserID: "ada"}
		if res != want {
			t.Errorf("WaitFolded = %+v, want %+v", res, want)
		}
		// Read your write: the row is there as soon as WaitFolded returns.
		var email string
		if err := pool.QueryRow(ctx, "SELECT email FROM neon_auth.users_sync WHERE id = 'ada'").Scan(&email); err != nil || email != "ada@example.com" {
			t.Errorf("users_sync email = %q, %v; want ada@example.com", email, err)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		ev := genericEvent("", "no-user-id")
		ev.Payload = json.RawMessage(`{"name":"nobody"}`)
		id, _, err := outbox.Insert(ctx, pool, ev)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		res, err := outbox.WaitFolded(wctx, pool, id)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Rejected || res.Error == "" || res.Operation != "" {
			t.Errorf("WaitFolded = %+v, want a reject with its reason", res)
		}
	})
}

func TestWaitFolded_Deadline(t *testing.T) {
	t.Parallel()
	pool := newDB(t) // no replicator: nothing is ever folded
	id, _, err := outbox.Insert(context.Background(), pool, genericEvent("u1", "e1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = outbox.WaitFolded(ctx, pool, id)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not folded") {
		t.Fatalf("WaitFolded = %v, want a wrapped context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("WaitFolded returned %s after its deadline", took)
	}
}

// TestWaitFolded_CommittedTxFailsFast (found in review): the natural misuse of the README's
// snippet, passing the (now committed) tx instead of the pool, fails the
// same way on every poll ("tx is closed"): WaitFolded should say so at
// once rather than poll until the caller's deadline.
func TestWaitFolded_CommittedTxFailsFast(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := outbox.Insert(ctx, tx, genericEvent("u1", "closed-tx"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = outbox.WaitFolded(wctx, tx, id)
	if err == nil {
		t.Fatal("WaitFolded on a committed tx returned no error")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFolded on a committed tx polled until the deadline: %v", err)
	}
}

// TestWaitFolded_KeepsPollingAnUnreachableServer: a connection error may
// clear by itself (a restarting compute), so WaitFolded polls on until its
// deadline and then says what went wrong.
func TestWaitFolded_KeepsPollingAnUnreachableServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, err = outbox.WaitFolded(ctx, pool, 1)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "last error") {
		t.Errorf("WaitFolded = %v, want it to poll until the deadline and name the last error", err)
	}
}
