package replicator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/usersync/usersync/internal/pgtest"
)

// TestRun_PostgresCrashesMidDrain crashes PostgreSQL (immediate shutdown:
// no checkpoint, as a power cut) again and again while the replicator
// drains a backlog, aimed at what the apply pipeline risks: a batch
// committed in the same round trip as the next one begins, replays looked
// up and dropped, user objects read from their outbox rows. Each time the
// server comes back, the replicator reconnects and goes on; at the end
// every row is accounted for exactly once and users_sync is the pure fold.
// The backlog is drained by the stream (as after a restart) and by the
// catch-up (as on a first start).
func TestRun_PostgresCrashesMidDrain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		stream bool
	}{{"stream", true}, {"catch-up", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testCrashesMidDrain(t, tc.stream)
		})
	}
}

func testCrashesMidDrain(t *testing.T, stream bool) {
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, map[string]string{"wal_sender_timeout": "5s"})
	url := cluster.URL("postgres")
	db := migratedDB(t, url)
	// Small batches keep the drain going for a few seconds.
	cfg := Config{MaxBackoff: time.Second, BatchSize: 10, skipStartupCatchUp: stream}
	if stream { // the slot exists before the backlog: the stream carries it
		r := db.start(cfg)
		waitStreaming(t, r)
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	const backlog = 6000
	for i := 0; i < backlog; {
		var sql strings.Builder
		for j := 0; j < 100 && i < backlog; j, i = j+1, i+1 {
			ev := randomEvent(rng, 40, fmt.Sprintf("d%d", i))
			at := "NULL"
			if ev.occurredAt != nil {
				at = "'" + ev.occurredAt.Format(time.RFC3339Nano) + "'"
			}
			// One statement per row: a transaction per row, pipelined.
			fmt.Fprintf(&sql, "INSERT INTO neon_auth.outbox (provider, event_type, payload, occurred_at) VALUES (%s, %s, %s::jsonb, %s);",
				quoteLiteral(ev.provider), quoteLiteral(ev.typ), quoteLiteral(ev.payload), at)
		}
		if _, err := db.conn.Exec(ctx, sql.String()); err != nil {
			t.Fatal(err)
		}
	}

	r := db.start(cfg)
	accounted := func() int64 {
		c, err := tallyAt(ctx, url)
		if err != nil {
			return -1
		}
		return c.accounted()
	}
	for crash := 1; crash <= 3; crash++ {
		from := max(accounted(), 0)
		var at int64
		pgtest.WaitFor(t, 60*time.Second, fmt.Sprintf("progress before crash %d", crash), func() (bool, error) {
			at = accounted()
			return at >= from+200, nil
		})
		if at >= backlog {
			t.Fatalf("the backlog was drained before crash %d: the test needs a larger one", crash)
		}
		if err := cluster.StopImmediate(ctx); err != nil {
			t.Fatalf("crash %d: %v", crash, err)
		}
		if err := cluster.Start(ctx); err != nil {
			t.Fatalf("start after crash %d: %v", crash, err)
		}
	}
	check := &testDB{t: t, url: url, conn: connectFaults(t, url), slot: db.slot}
	check.waitCaughtUp(2 * time.Minute)
	checkInvariants(t, ctx, check.conn)
	if c := checkCounts(t, ctx, check.conn); c.outbox != backlog {
		t.Errorf("outbox has %d rows, want %d", c.outbox, backlog)
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run returned %v after the crashes, want nil", err)
	}
	if n := strings.Count(r.logs.String(), `msg="replication interrupted; reconnecting"`); n < 3 {
		t.Errorf("%d reconnects, want at least one per crash", n)
	}
}

// quoteLiteral renders s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
