package replicator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestRun_PublicationDroppedWhileRunning drops the publication under a
// running replicator while rows are committed, and has it created again —
// by an operator, or by the replicator's next session (ensurePublication).
// The slot's WAL from before the re-creation cannot be decoded (pgoutput
// looks the publication up in the historic catalog: "publication does not
// exist"), so resuming the slot fails forever; every outbox row, the one
// committed while the publication was missing included, must still be
// folded.
func TestRun_PublicationDroppedWhileRunning(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		recreate bool // the operator creates the publication again
	}{
		{"operator", true},
		{"replicator", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := newTestDB(t)
			r := db.start(Config{MaxBackoff: time.Second})
			waitStreaming(t, r)
			db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("p1", "one"), occurredAt: at(1)})
			db.waitCaughtUp(20 * time.Second)

			if _, err := db.conn.Exec(ctx, `DROP PUBLICATION users_sync_outbox`); err != nil {
				t.Fatal(err)
			}
			// Committed while the publication is missing.
			db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("gap", "gap"), occurredAt: at(5)})
			if tc.recreate {
				if _, err := db.conn.Exec(ctx, `CREATE PUBLICATION users_sync_outbox FOR TABLE neon_auth.outbox WITH (publish = 'insert')`); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 5 {
				db.insert(event{provider: "generic", typ: "user.created", payload: genericUser(fmt.Sprintf("q%d", i), "two"), occurredAt: at(10 + i)})
			}
			db.waitCaughtUp(30 * time.Second)
			checkInvariants(t, ctx, db.conn)
		})
	}
}

// TestRun_OutboxLeftOutOfThePublicationForAWhile takes the outbox out of the
// publication under a running replicator and puts it back, committing a row
// in between: pgoutput does not send that row, and the stream goes on
// without an error, so only a catch-up can fold it. It must be folded
// without waiting for the process to restart.
func TestRun_OutboxLeftOutOfThePublicationForAWhile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	r := db.start(Config{MaxBackoff: time.Second})
	waitStreaming(t, r)
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("a1", "one"), occurredAt: at(1)})
	db.waitCaughtUp(20 * time.Second)

	if _, err := db.conn.Exec(ctx, `ALTER PUBLICATION users_sync_outbox DROP TABLE neon_auth.outbox`); err != nil {
		t.Fatal(err)
	}
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("gap", "gap"), occurredAt: at(5)})
	if _, err := db.conn.Exec(ctx, `ALTER PUBLICATION users_sync_outbox ADD TABLE neon_auth.outbox`); err != nil {
		t.Fatal(err)
	}
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("a2", "two"), occurredAt: at(10)})
	db.waitCaughtUp(30 * time.Second)
	checkInvariants(t, ctx, db.conn)
}

// TestRun_OutboxTruncatedWithRestartIdentity empties the outbox with
// TRUNCATE ... RESTART IDENTITY under a running replicator (an operator
// clearing rows already synced). History and rejects keep the old ids: the
// identity must not hand them to new rows (migration 0007 moves it past
// them), or a new row whose id an old reject holds would be skipped, and
// one whose id an old history row holds would get no history row.
func TestRun_OutboxTruncatedWithRestartIdentity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	r := db.start(Config{MaxBackoff: time.Second})
	waitStreaming(t, r)
	db.insert(
		event{provider: "generic", typ: "user.created", payload: `{"name": "no id"}`, occurredAt: at(1)}, // id 1: a reject
		event{provider: "generic", typ: "user.created", payload: genericUser("old", "old"), occurredAt: at(2)},
	)
	db.waitCaughtUp(20 * time.Second)

	if _, err := db.conn.Exec(ctx, `TRUNCATE neon_auth.outbox RESTART IDENTITY`); err != nil {
		t.Fatal(err)
	}
	ids := db.insert(
		event{provider: "generic", typ: "user.created", payload: genericUser("new1", "Ada"), occurredAt: at(10)},
		event{provider: "generic", typ: "user.created", payload: genericUser("new2", "Bob"), occurredAt: at(11)},
	)
	if ids[0] <= 2 {
		t.Errorf("new outbox ids %v reuse ids that history and rejects hold (1 and 2)", ids)
	}
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("new3", "Cy"), occurredAt: at(12)})
	waitUsers(t, db, 20*time.Second, "the row after them folded", "new3")
	var users []string
	rows, _ := db.conn.Query(ctx, `SELECT id FROM neon_auth.users_sync WHERE id IN ('new1', 'new2') ORDER BY id`)
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 {
		t.Errorf("users_sync holds %v of the new users new1 and new2 (their outbox ids were used before the TRUNCATE)", users)
	}
	var histories int
	if err := db.conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.users_sync_history WHERE user_id IN ('new1', 'new2')`).Scan(&histories); err != nil {
		t.Fatal(err)
	}
	if histories != 2 {
		t.Errorf("%d history rows for the two new users, want 2", histories)
	}
}

// TestRun_OutboxTruncatedWithRestartIdentityWhileLagging empties the outbox
// with TRUNCATE ... RESTART IDENTITY while rows committed before it are
// still in the slot's WAL, not yet folded (the replicator is behind: here
// its apply waits on the fold lock). The trigger of migration 0007 moves
// the identity past the ids history and rejects hold, and those rows have
// none yet: it must also move it past the ids handed out before the
// TRUNCATE, or each new row, streamed after the old row of the same id was
// folded, gets no history row of its own. (Found in review.)
func TestRun_OutboxTruncatedWithRestartIdentityWhileLagging(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	r := db.start(Config{MaxBackoff: time.Second})
	waitStreaming(t, r)
	locker := connectFaults(t, db.url)
	if _, err := locker.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(foldLockID)); err != nil {
		t.Fatal(err)
	}
	old := db.insert(
		event{provider: "generic", typ: "user.created", payload: genericUser("old1", "Old"), occurredAt: at(1)},
		event{provider: "generic", typ: "user.created", payload: genericUser("old2", "Old"), occurredAt: at(2)},
	)
	waitApplyOnFoldLock(t, db)
	if _, err := db.conn.Exec(ctx, `TRUNCATE neon_auth.outbox RESTART IDENTITY`); err != nil {
		t.Fatal(err)
	}
	ids := db.insert(
		event{provider: "generic", typ: "user.created", payload: genericUser("new1", "Ada"), occurredAt: at(10)},
		event{provider: "generic", typ: "user.created", payload: genericUser("new2", "Bob"), occurredAt: at(11)},
	)
	if ids[0] <= old[len(old)-1] {
		t.Errorf("new outbox ids %v reuse ids %v handed out before the TRUNCATE and not yet folded", ids, old)
	}
	if _, err := locker.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(foldLockID)); err != nil {
		t.Fatal(err)
	}
	waitUsers(t, db, 30*time.Second, "the old users folded", "old1", "old2")
	db.waitCaughtUp(30 * time.Second)
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("last", "Last"), occurredAt: at(20)})
	waitUsers(t, db, 30*time.Second, "the row after them folded", "last")
	var users int
	if err := db.conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.users_sync WHERE id IN ('new1', 'new2')`).Scan(&users); err != nil {
		t.Fatal(err)
	}
	if users != 2 {
		t.Errorf("users_sync holds %d of the new users new1 and new2, want 2", users)
	}
	var histories int
	if err := db.conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.users_sync_history WHERE user_id IN ('new1', 'new2')`).Scan(&histories); err != nil {
		t.Fatal(err)
	}
	if histories != 2 {
		t.Errorf("%d history rows for the new users new1 and new2, want 2 (one per outbox row)", histories)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestRun_PublicationChangedInPlace changes, under a running replicator,
// what the publication streams of the outbox while its oid, the outbox's
// pg_publication_rel row and the table's oid all stay — its publish option,
// or (15+) its schema membership — and commits a row meanwhile: pgoutput
// does not send it, so the identity must see the change (the publication
// row's version, the schema's membership row) and the slot be recreated.
// Meanwhile the publication does not publish the outbox, which is fatal at
// a first start but waited out by a process that has streamed. (Found in
// review.)
func TestRun_PublicationChangedInPlace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		minMajor  int
		create    string
		out, back string
	}{
		{"publish option", 14,
			`CREATE PUBLICATION users_sync_outbox FOR TABLE neon_auth.outbox WITH (publish = 'insert')`,
			`ALTER PUBLICATION users_sync_outbox SET (publish = 'update')`,
			`ALTER PUBLICATION users_sync_outbox SET (publish = 'insert')`},
		{"tables in schema", 15,
			`CREATE PUBLICATION users_sync_outbox FOR TABLES IN SCHEMA neon_auth WITH (publish = 'insert')`,
			`ALTER PUBLICATION users_sync_outbox DROP TABLES IN SCHEMA neon_auth`,
			`ALTER PUBLICATION users_sync_outbox ADD TABLES IN SCHEMA neon_auth`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := newTestDB(t)
			var major int
			if err := db.conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int / 10000`).Scan(&major); err != nil {
				t.Fatal(err)
			}
			if major < tc.minMajor {
				t.Skipf("PostgreSQL %d has no such publication", major)
			}
			if _, err := db.conn.Exec(ctx, tc.create); err != nil {
				t.Fatal(err)
			}
			r := db.start(Config{MaxBackoff: time.Second, StatusInterval: 200 * time.Millisecond})
			waitStreaming(t, r)
			db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("a1", "one"), occurredAt: at(1)})
			db.waitCaughtUp(20 * time.Second)

			if _, err := db.conn.Exec(ctx, tc.out); err != nil {
				t.Fatal(err)
			}
			db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("gap", "gap"), occurredAt: at(5)})
			time.Sleep(time.Second) // several periodic checks while the outbox's inserts are not published
			if _, err := db.conn.Exec(ctx, tc.back); err != nil {
				t.Fatal(err)
			}
			db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("a2", "two"), occurredAt: at(10)})
			waitUsers(t, db, 20*time.Second, "the row after the gap folded", "a2")
			db.waitCaughtUp(20 * time.Second)
			checkInvariants(t, ctx, db.conn)
		})
	}
}

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
	waitApplyOnFoldLock(t, db)
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
