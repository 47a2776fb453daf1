package audit

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox"
)

func old(ev event) event {
	t := time.Now().Add(-40 * 24 * time.Hour)
	ev.receivedAt = &t
	return ev
}

func (db *testDB) outboxIDs() []int64 {
	db.t.Helper()
	rows, _ := db.conn.Query(context.Background(), "SELECT id FROM neon_auth.outbox ORDER BY id")
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		db.t.Fatal(err)
	}
	return ids
}

// TestPrune_RemovesExactlyTheRemovableRows prunes a scripted outbox whose
// removable rows are known: superseded and stale events and rejects older
// than the cutoff. Winning events, recent rows and rows not yet folded stay.
func TestPrune_RemovesExactlyTheRemovableRows(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	ids := db.insert(
		old(generic("user.created", "ada", "Ada", 1)),                                      // 0: superseded by 1
		old(generic("user.updated", "ada", "Grace", 3)),                                    // 1: ada's profile winner
		old(generic("user.updated", "ada", "Stale", 2)),                                    // 2: stale
		old(generic("user.updated", "bob", "Bob0", 0)),                                     // 3: superseded by 4
		old(generic("user.created", "bob", "Bob", 1)),                                      // 4: bob's profile winner
		old(generic("user.deleted", "bob", "x", 5)),                                        // 5: bob's last winner
		old(generic("user.deleted", "tom", "x", 9)),                                        // 6: tom's last winner (a tombstone first)
		old(generic("user.created", "tom", "Tom", 1)),                                      // 7: tom's profile winner, folded after the tombstone
		old(generic("user.deleted", "tom", "x", 8)),                                        // 8: an older delete: superseded
		old(event{provider: "generic", typ: "user.created", payload: `{"name": "no id"}`}), // 9: a reject
		generic("user.updated", "ada", "Recent", 0),                                        // 10: stale, but recent
	)
	r := db.start()
	db.waitCaughtUp()
	r.stop(t)
	pending := db.insert(old(generic("user.updated", "ada", "Pending", 10)))[0] // not folded yet

	report, err := Prune(context.Background(), db.conn, PruneConfig{OutboxOlderThan: 30 * 24 * time.Hour, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if report.Outbox.Deleted != 5 || len(db.outboxIDs()) != 12 {
		t.Errorf("dry run: %+v, %d rows left; want 5 counted and none deleted", report.Outbox, len(db.outboxIDs()))
	}
	report, err = Prune(context.Background(), db.conn, PruneConfig{OutboxOlderThan: 30 * 24 * time.Hour, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{ids[1], ids[4], ids[5], ids[6], ids[7], ids[10], pending}
	if got := db.outboxIDs(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outbox after prune = %v, want %v", got, want)
	}
	if report.Outbox.Deleted != 5 || report.Outbox.Kept != 6 {
		t.Errorf("report %+v, want 5 deleted (3 superseded, 1 stale, 1 reject), 6 old rows kept (5 winners, 1 pending)", report.Outbox)
	}
	if _, diffs := db.verify(VerifyConfig{}); len(diffs) != 0 {
		t.Errorf("verify after prune:%s", describe(diffs))
	}

	// History goes only where the outbox row went, and only once the slot
	// cannot replay it: the catch-up's rows (no source LSN) need a streamed
	// event the slot confirmed, committed after they were applied.
	prunedHistory := func() PruneResult {
		t.Helper()
		report, err := Prune(context.Background(), db.conn, PruneConfig{OutboxOlderThan: 30 * 24 * time.Hour, HistoryOlderThan: time.Microsecond})
		if err != nil {
			t.Fatal(err)
		}
		return *report.History
	}
	if h := prunedHistory(); h.Deleted != 0 {
		t.Errorf("history pruned before any streamed event was confirmed: %+v", h)
	}
	db.start()
	db.waitCaughtUp()
	db.insert(generic("user.created", "zed", "Zed", 1))
	db.waitCaughtUp()
	pgtest.WaitFor(t, 20*time.Second, "the slot to confirm the streamed event", func() (bool, error) {
		var ok bool
		err := db.conn.QueryRow(context.Background(), `SELECT confirmed_flush_lsn > (SELECT max(source_lsn) FROM neon_auth.users_sync_history)
			FROM pg_replication_slots WHERE slot_name = $1`, db.slot).Scan(&ok)
		return ok, err
	})
	before := db.historyOutboxIDs()
	// The pending row, now folded, beat ada's old winner, which goes too.
	if h := prunedHistory(); h.Deleted != 5 {
		t.Errorf("history pruned %+v, want the 5 rows of the pruned folded events; before %v after %v", h, before, db.historyOutboxIDs())
	}
	rows, _ := db.conn.Query(context.Background(), "SELECT outbox_id FROM neon_auth.users_sync_history ORDER BY outbox_id")
	left, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []int64{ids[0], ids[1], ids[2], ids[3], ids[8]} {
		if slices.Contains(left, gone) {
			t.Errorf("history of pruned outbox row %d is still there: %v", gone, left)
		}
	}
	db.checkExactlyOnce()
	if _, diffs := db.verify(VerifyConfig{}); len(diffs) != 0 {
		t.Errorf("verify after history prune:%s", describe(diffs))
	}
}

// TestPrune_WhileRunStreams prunes again and again while writers insert
// (old-looking) events that the replicator streams: verify passes at the
// end, and users_sync is the fold of what is left.
func TestPrune_WhileRunStreams(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.start()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgxConnect(ctx, db.url)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			for i := range 300 {
				id := fmt.Sprintf("u%d", (i+w)%20)
				ev := old(generic("user.updated", id, fmt.Sprintf("N%d_%d", w, i), (i*13)%40))
				if i%9 == 0 {
					ev = old(generic("user.deleted", id, "x", (i*13)%40))
				}
				if _, err := insertEvents(ctx, conn, ev); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var deleted int64
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		report, err := Prune(ctx, db.conn, PruneConfig{OutboxOlderThan: 24 * time.Hour, HistoryOlderThan: time.Microsecond, BatchSize: 50})
		if err != nil {
			t.Fatal(err)
		}
		deleted += report.Outbox.Deleted
	}
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	db.waitCaughtUp()
	if _, err := Prune(ctx, db.conn, PruneConfig{OutboxOlderThan: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if deleted == 0 {
		t.Error("prune deleted nothing while the writers ran")
	}
	db.checkExactlyOnce()
	db.checkMatchesPureFold()
	if _, diffs := db.verify(VerifyConfig{}); len(diffs) != 0 {
		t.Errorf("verify after pruning under load:%s", describe(diffs))
	}
}

func (db *testDB) historyOutboxIDs() []string {
	db.t.Helper()
	rows, _ := db.conn.Query(context.Background(), "SELECT coalesce(outbox_id::text, operation) FROM neon_auth.users_sync_history ORDER BY id")
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		db.t.Fatal(err)
	}
	return ids
}

// TestRunRetention_PrunesOnItsOwn runs the retention loop of
// `run --outbox-retention` with a short interval.
func TestRunRetention_PrunesOnItsOwn(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	ids := db.insert(old(generic("user.created", "ada", "Ada", 1)), old(generic("user.updated", "ada", "Grace", 2)))
	db.start()
	db.waitCaughtUp()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunRetention(ctx, RetentionConfig{DatabaseURL: db.url, Interval: 50 * time.Millisecond,
			Prune: PruneConfig{OutboxOlderThan: 24 * time.Hour}})
	}()
	pgtest.WaitFor(t, 20*time.Second, "the superseded row pruned", func() (bool, error) {
		return fmt.Sprint(db.outboxIDs()) == fmt.Sprint([]int64{ids[1]}), nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunRetention returned %v after cancel, want nil", err)
	}
}

// TestPrune_DamagedProfileRegisterKeepsTheWinner: outboxPrunableSQL says
// the register's winner always stays "even if users_sync_state were
// damaged". A profile register that points at the user's later
// user.deleted event (a hand edit, a restore gone wrong: exactly what
// verify and resync exist for) makes prune delete the real profile winner,
// so the fold of what is left is a tombstone and resync then erases the
// profile for good.
func TestPrune_DamagedProfileRegisterKeepsTheWinner(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	ids := db.insert(
		old(generic("user.created", "dan", "Dan", 1)),
		old(generic("user.updated", "dan", "Daniel", 2)), // the profile winner
		old(generic("user.deleted", "dan", "x", 3)),      // the last winner
	)
	r := db.start()
	db.waitCaughtUp()
	r.stop(t)
	before := db.pureFold()["dan"]
	if before == nil || before.Name == nil || *before.Name != "Daniel" {
		t.Fatalf("pure fold before prune: %v", before)
	}

	// The damage: the profile register names the delete event.
	db.exec(`UPDATE neon_auth.users_sync_state SET profile_outbox_id = $1, profile_at = $2 WHERE user_id = 'dan'`, ids[2], *at(3))
	if _, diffs := db.verify(VerifyConfig{}); len(diffs) == 0 {
		t.Fatal("verify does not see the damaged register: the test cannot tell anything")
	}

	if _, err := Prune(context.Background(), db.conn, PruneConfig{OutboxOlderThan: 30 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if after := db.pureFold()["dan"]; !outbox.RowsEqual(after, before) {
		t.Errorf("prune deleted a winning event: the fold of what is left is %s, was %s (outbox now %v)",
			after.JSON(), before.JSON(), db.outboxIDs())
	}
	if _, err := Resync(context.Background(), db.conn, ResyncConfig{UserIDs: []string{"dan"}}); err != nil {
		t.Fatal(err)
	}
	if got := db.users()["dan"]; got == nil || got.Name == nil || *got.Name != "Daniel" {
		t.Errorf("after prune and resync, dan is %v; want the profile Daniel kept", got)
	}
}
