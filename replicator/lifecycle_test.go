package replicator

import (
	"context"
	"testing"
	"time"

	"github.com/usersync/usersync/internal/pgtest"
)

// TestRun_ShutdownIsBoundedWhileAnApplyWaits stops the replicator while its
// apply waits on the fold lock (held here as a long resync or a person in
// psql would hold it). finish gives the last applies 10 seconds; shutdown
// must not wait for the two-minute apply timeout instead.
func TestRun_ShutdownIsBoundedWhileAnApplyWaits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	r := db.start(Config{})
	waitStreaming(t, r)
	locker := connectFaults(t, db.url)
	if _, err := locker.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(foldLockID)); err != nil {
		t.Fatal(err)
	}
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("w1", "Wait"), occurredAt: at(1)})
	pgtest.WaitFor(t, 30*time.Second, "an apply waiting for the fold lock", func() (bool, error) {
		var waiting bool
		err := db.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory')`).Scan(&waiting)
		return waiting, err
	})
	began := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		close(r.done)
		t.Logf("Run returned %v after %s", err, time.Since(began).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Errorf("Run has not returned %s after cancellation, with finish's 10 s bound", time.Since(began).Round(time.Second))
	}
	if _, err := locker.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(foldLockID)); err != nil {
		t.Fatal(err)
	}
	// The apply cut off is the next start's to make.
	r = db.start(Config{})
	db.waitCaughtUp(20 * time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, ctx, db.conn)
}
