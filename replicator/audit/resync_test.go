package audit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestResync_WhileRunStreams corrupts users_sync and repairs it with
// resync --all, over and over, while writers insert events that the
// replicator streams: nothing may be lost or folded twice, and at the end
// users_sync is the pure fold and verify is clean. Each round corrupts
// users the writers keep changing (the replicator may rewrite those from
// its own fold state before resync gets to them) and one they left alone
// (resync must repair it).
func TestResync_WhileRunStreams(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.start()
	for q := range 10 {
		db.insert(generic("user.created", fmt.Sprintf("quiet%d", q), "Quiet", 1))
	}
	db.waitCaughtUp()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgxConnect(ctx, db.url)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(context.Background())
			for i := 0; ctx.Err() == nil && i < 400; i++ {
				id := fmt.Sprintf("u%d", (i*7+w)%25)
				ev := generic("user.updated", id, fmt.Sprintf("N%d_%d", w, i), i%50)
				if i%11 == 0 {
					ev = generic("user.deleted", id, "x", i%50)
				}
				if _, err := insertEvents(ctx, conn, ev); err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	repairs := 0
	deadline := time.Now().Add(30 * time.Second)
	for round := 0; time.Now().Before(deadline); round++ {
		select {
		case <-writersDone:
			if round >= 3 {
				deadline = time.Time{}
			}
		default:
		}
		db.exec(`UPDATE neon_auth.users_sync SET name = 'corrupt', deleted_at = NULL
			WHERE id IN (SELECT id FROM neon_auth.users_sync WHERE id NOT LIKE 'quiet%' ORDER BY random() LIMIT 2)
				OR id = (SELECT id FROM neon_auth.users_sync WHERE id LIKE 'quiet%' ORDER BY random() LIMIT 1)`)
		rr, err := Resync(context.Background(), db.conn, ResyncConfig{All: true, Verify: VerifyConfig{Slot: db.slot}})
		if err != nil {
			t.Fatalf("resync round %d: %v", round, err)
		}
		repairs += int(rr.Repaired)
	}
	<-writersDone
	cancel()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	db.waitCaughtUp()
	if repairs == 0 {
		t.Error("resync repaired nothing: the corruption was never found")
	}
	db.checkExactlyOnce()
	db.checkMatchesPureFold()
	if _, diffs := db.verify(VerifyConfig{}); len(diffs) != 0 {
		t.Errorf("verify after resync under load:%s", describe(diffs))
	}
	if n := db.count("SELECT count(*) FROM neon_auth.users_sync_history WHERE operation = 'resync'"); n != int64(repairs) {
		t.Errorf("%d resync history rows, want one per repair (%d)", n, repairs)
	}
}

// TestResync_HoldsTheApplyOff has an event streamed for a user between
// resync's read of the user and its write: the apply must wait for the
// repair and fold the event on top of it, not be overwritten by it.
func TestResync_HoldsTheApplyOff(t *testing.T) {
	db := newTestDB(t)
	db.start()
	db.insert(generic("user.created", "ada", "Ada", 1))
	db.waitCaughtUp()
	db.exec("UPDATE neon_auth.users_sync SET name = 'corrupt' WHERE id = 'ada'")
	writer, err := pgxConnect(context.Background(), db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(context.Background())
	testHookBeforeRepair = func([]string) {
		if _, err := insertEvents(context.Background(), writer, generic("user.updated", "ada", "Grace", 2)); err != nil {
			t.Errorf("insert: %v", err)
		}
		time.Sleep(time.Second) // time enough for an apply that did not wait to commit
	}
	defer func() { testHookBeforeRepair = nil }()
	if _, err := Resync(context.Background(), db.conn, ResyncConfig{UserIDs: []string{"ada"}}); err != nil {
		t.Fatal(err)
	}
	db.waitCaughtUp()
	var name string
	if err := db.conn.QueryRow(context.Background(), "SELECT name FROM neon_auth.users_sync WHERE id = 'ada'").Scan(&name); err != nil || name != "Grace" {
		t.Errorf("name = %q (%v), want Grace: the event streamed during the repair was lost", name, err)
	}
	if _, diffs := db.verify(VerifyConfig{}); len(diffs) != 0 {
		t.Errorf("verify:%s", describe(diffs))
	}
}
