package replicator

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
)

// The tests of this file cover what differs between the PostgreSQL
// versions the replicator supports (14 to 18; `make test-matrix` runs the
// suite on each): failover slots from 17 on, and the ways a server
// invalidates a slot.

// serverVersion returns server_version_num, e.g. 170010.
func serverVersion(t testing.TB, conn *pgx.Conn) int {
	t.Helper()
	var v int
	if err := conn.QueryRow(context.Background(), "SELECT current_setting('server_version_num')::int").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRun_SlotIsFailoverFrom17 checks that the slot is created as a
// failover slot on PostgreSQL 17+ (so that a standby with
// sync_replication_slots carries it across a failover), and that creating
// it works on older servers, which have no such option.
func TestRun_SlotIsFailoverFrom17(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	waitStreaming(t, db.start(Config{}))
	var failover *bool
	if err := db.conn.QueryRow(ctx, `SELECT (to_jsonb(s) ->> 'failover')::bool FROM pg_replication_slots s WHERE slot_name = $1`,
		db.slot).Scan(&failover); err != nil {
		t.Fatal(err)
	}
	v := serverVersion(t, db.conn)
	switch {
	case v >= 170000 && failover == nil:
		t.Errorf("PostgreSQL %d: pg_replication_slots has no failover column", v)
	case v >= 170000 && !*failover:
		t.Errorf("PostgreSQL %d: slot failover = false, want true", v)
	case v < 170000 && failover != nil:
		t.Errorf("PostgreSQL %d has no failover slots, yet pg_replication_slots says failover = %v", v, *failover)
	}
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("f1", "one"), occurredAt: at(1)})
	db.waitCaughtUp(30 * time.Second)
	checkInvariants(t, ctx, db.conn)
}

// TestRun_SlotInvalidatedWhileStopped lets max_slot_wal_keep_size
// invalidate the slot while the replicator is stopped and rows it has not
// seen are in the outbox: on start the replicator drops and recreates the
// slot, folds what the lost slot would have carried, says why in a
// warning, and streams again.
func TestRun_SlotInvalidatedWhileStopped(t *testing.T) {
	t.Parallel()
	settings := map[string]string{"max_slot_wal_keep_size": "1MB", "wal_keep_size": "0"}
	testSlotInvalidated(t, settings, "the WAL it needed was removed", func(db *testDB) {
		ctx := context.Background()
		if _, err := db.conn.Exec(ctx, `CREATE TABLE public.noise (id bigserial PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
		pgtest.WaitFor(t, 60*time.Second, "max_slot_wal_keep_size to invalidate the slot", func() (bool, error) {
			if _, err := noise(ctx, db.conn, 4<<20); err != nil {
				return false, err
			}
			if _, err := db.conn.Exec(ctx, `SELECT pg_switch_wal()`); err != nil {
				return false, err
			}
			if _, err := db.conn.Exec(ctx, `CHECKPOINT`); err != nil {
				return false, err
			}
			return slotLost(ctx, db)
		})
	})
}

// TestRun_SlotIdleTimeoutInvalidation lets idle_replication_slot_timeout, new in
// PostgreSQL 18, invalidate the slot while the replicator is stopped.
func TestRun_SlotIdleTimeoutInvalidation(t *testing.T) {
	t.Parallel()
	probe := newTestDB(t) // on the package's shared server, of the version under test
	if v := serverVersion(t, probe.conn); v < 180000 {
		t.Skipf("idle_replication_slot_timeout is new in PostgreSQL 18; this server is %d", v)
	}
	testSlotInvalidated(t, map[string]string{"idle_replication_slot_timeout": "1s"}, "idle_replication_slot_timeout", func(db *testDB) {
		ctx := context.Background()
		pgtest.WaitFor(t, 30*time.Second, "idle_replication_slot_timeout to invalidate the slot", func() (bool, error) {
			// Slots are checked for idleness at checkpoints.
			if _, err := db.conn.Exec(ctx, `CHECKPOINT`); err != nil {
				return false, err
			}
			return slotLost(ctx, db)
		})
	})
}

// slotLost reports whether the server invalidated the test's slot.
func slotLost(ctx context.Context, db *testDB) (bool, error) {
	info, err := readSlot(ctx, db.conn, db.slot)
	return info.Exists && info.Lost, err
}

// testSlotInvalidated folds some rows, stops the replicator, inserts rows
// the slot must carry, has invalidate make the server invalidate the slot,
// and starts the replicator again: it must recreate the slot, fold the
// rows, warn naming wantCause, and stream.
func testSlotInvalidated(t *testing.T, settings map[string]string, wantCause string, invalidate func(db *testDB)) {
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, settings)
	db := migratedDB(t, cluster.URL("postgres"))
	r := db.start(Config{})
	waitStreaming(t, r) // past the first catch-up: the slot owes none
	for i := range 10 {
		db.insert(event{provider: "generic", typ: "user.created", payload: genericUser(fmt.Sprintf("v%d", i), "first"), occurredAt: at(10 + i)})
	}
	db.waitCaughtUp(30 * time.Second)
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	pgtest.WaitFor(t, 10*time.Second, "the slot to be released", func() (bool, error) {
		pid, err := slotActivePID(ctx, db.conn, db.slot)
		return pid == 0, err
	})
	db.insert(
		event{provider: "generic", typ: "user.updated", payload: genericUser("v1", "second"), occurredAt: at(100)},
		event{provider: "generic", typ: "user.updated", payload: genericUser("v2", "older"), occurredAt: at(1)}, // stale
		event{provider: "generic", typ: "user.deleted", payload: `{"id": "v3"}`, occurredAt: at(100)},
		event{provider: "generic", typ: "user.created", payload: genericUser("v99", "new"), occurredAt: at(100)},
		event{provider: "generic", typ: "user.created", payload: `{"name": "no id"}`, occurredAt: at(100)}, // reject
	)
	invalidate(db)
	info, err := readSlot(ctx, db.conn, db.slot)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("slot invalidated (invalidation_reason %q)", info.LostReason)

	r = db.start(Config{})
	db.waitCaughtUp(30 * time.Second)
	checkInvariants(t, ctx, db.conn)
	checkCounts(t, ctx, db.conn)
	warning := regexp.MustCompile(`level=WARN msg="replication slot was invalidated \([^"]*` + regexp.QuoteMeta(wantCause))
	if logs := r.logs.String(); !warning.MatchString(logs) {
		t.Errorf("no warning naming the cause %q; logs:\n%s", wantCause, logs)
	}
	if info, err := readSlot(ctx, db.conn, db.slot); err != nil || !info.Exists || info.Lost {
		t.Errorf("slot after the restart: %+v (err %v), want a live one", info, err)
	}
	db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("v4", "streamed"), occurredAt: at(200)})
	db.waitCaughtUp(30 * time.Second)
	checkInvariants(t, ctx, db.conn)
}

func TestInvalidationCause(t *testing.T) {
	t.Parallel()
	for reason, want := range map[string]string{
		"":                       "max_slot_wal_keep_size", // 14-16 name no reason; WAL removal is the usual one
		"wal_removed":            "max_slot_wal_keep_size",
		"idle_timeout":           "idle_replication_slot_timeout",
		"rows_removed":           "vacuum",
		"wal_level_insufficient": "wal_level",
		"something_new":          "something_new",
	} {
		if got := invalidationCause(reason); !regexp.MustCompile(regexp.QuoteMeta(want)).MatchString(got) {
			t.Errorf("invalidationCause(%q) = %q, want it to mention %q", reason, got, want)
		}
	}
}
