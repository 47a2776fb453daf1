package replicator

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
)

// TestApplier_RefusedChangeReplayedStaysAReject replays, in a later
// session, a change the database refused (a reject made by the
// change-by-change retry) from a transaction the checkpoint never passed:
// it was applied as a chunk of a large transaction, and the session ended
// before the transaction's end was checkpointed. Folded again it would be
// stale against the newer change applied after it, and get a history row
// next to its reject: every change's reject is looked up with the state
// load, and the change dropped. (Found in review.)
func TestApplier_RefusedChangeReplayedStaysAReject(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	ctx := context.Background()
	refusePoison(t, db.conn)
	owner, err := takeOwnership(ctx, db.conn, "users_sync", false, 0, discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	ids := db.insert(
		event{provider: "generic", typ: "user.created", payload: genericUser("u1", "poison"), occurredAt: at(1)},
		event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "fine"), occurredAt: at(2)},
	)
	// One source transaction [P, Q], streamed in two chunks: the
	// checkpoint stays before it (endLSN 0).
	const commitLSN = 1000
	chunk := func(i int) *batch {
		b := batchOf(readRecord(t, db.conn, ids[i]))
		b.changes[0].src.LSN, b.changes[0].src.CommittedAt = commitLSN, time.Now()
		return b
	}
	session := func() *applier { // the checkpoint never moved: replays are looked up up to 0
		return &applier{conn: db.conn, slot: "users_sync", generation: owner.Generation}
	}
	first := session()
	if st, err := first.apply(ctx, chunk(0), nil, nil); err != nil || st.Rejected != 1 {
		t.Fatalf("first chunk = %+v, %v; want 1 rejected (the database refuses it)", st, err)
	}
	if st, err := first.apply(ctx, chunk(1), nil, nil); err != nil || st.Folded != 1 {
		t.Fatalf("second chunk = %+v, %v; want 1 folded", st, err)
	}
	// The session ends before the transaction's end is checkpointed; the
	// next one replays it from its first chunk.
	if st, err := session().apply(ctx, chunk(0), nil, nil); err != nil || st.Skipped != 1 || st.Folded != 0 {
		t.Fatalf("replayed chunk = %+v, %v; want it skipped", st, err)
	}
	if h, rj := accountedTimes(t, db.conn, ids[0]); h+rj != 1 {
		t.Errorf("outbox row %d has %d history and %d reject rows, want exactly one in all", ids[0], h, rj)
	}
}

// refusePoison installs a trigger that refuses any users_sync row named
// "poison": a stand-in for a refusal of the folded row by the database (as
// TestRun_RowTheDatabaseRefusesBecomesAReject).
func refusePoison(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	execOrFatal(t, conn, `
		CREATE FUNCTION neon_auth.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poisoned name' USING ERRCODE = '22023'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON neon_auth.users_sync
			FOR EACH ROW EXECUTE FUNCTION neon_auth.refuse_poison()`)
}

// accountedTimes returns how many history rows and reject rows outbox row id has.
func accountedTimes(t *testing.T, conn *pgx.Conn, id int64) (history, rejects int) {
	t.Helper()
	if err := conn.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM neon_auth.users_sync_history WHERE outbox_id = $1),
			(SELECT count(*) FROM neon_auth.outbox_rejects WHERE outbox_id = $1)`, id).Scan(&history, &rejects); err != nil {
		t.Fatal(err)
	}
	return history, rejects
}

// TestRun_CaughtUpRejectReplayedAfterReconnectStaysAReject: on process
// start the catch-up (a fresh snapshot) folds rows the slot also carries;
// the stream looks them up only up to the WAL position of that snapshot
// (applier.replayUntil), which lives in the session. When the session ends
// before the stream has moved the checkpoint past those rows, the next
// session of the same process (no catch-up) looks up replays only up to
// the checkpoint and the newest reject's source_lsn — and a reject made
// by the catch-up has no source_lsn. A row the database refused during the
// catch-up (a reject) is then folded again when streamed: stale against
// the newer event applied after it, it gets a history row next to its
// reject.
func TestRun_CaughtUpRejectReplayedAfterReconnectStaysAReject(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	refusePoison(t, db.conn)
	// A first run creates the slot; the rows below are committed after its
	// confirmed position while no replicator runs.
	r := db.start(Config{})
	waitStreaming(t, r)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 20*time.Second, "the walsender to release the slot", func() (bool, error) {
		var active bool
		err := db.conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", db.slot).Scan(&active)
		return !active, err
	})
	poison := db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u1", "poison"), occurredAt: at(1)})[0]
	db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "fine"), occurredAt: at(2)})
	// The session's first streamed batch that moves the checkpoint fails,
	// once (a connection lost at that moment would do the same): the
	// session ends after the catch-up, before the stream passed the rows.
	execOrFatal(t, db.conn, `
		CREATE SEQUENCE neon_auth.review_fail_once;
		CREATE FUNCTION neon_auth.review_fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.lsn > OLD.lsn AND nextval('neon_auth.review_fail_once') = 1 THEN
				RAISE EXCEPTION 'session lost (injected)';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER review_fail_once BEFORE UPDATE ON neon_auth.replicator_checkpoint
			FOR EACH ROW EXECUTE FUNCTION neon_auth.review_fail_once()`)
	// One event per batch, so that the poisoned one is refused on its own.
	r = db.start(Config{BatchSize: 1, MaxBackoff: 200 * time.Millisecond})
	db.waitCaughtUp(20 * time.Second)
	pgtest.WaitFor(t, 30*time.Second, "the injected failure and a second session streaming", func() (bool, error) {
		var failed int64
		err := db.conn.QueryRow(ctx, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM neon_auth.review_fail_once").Scan(&failed)
		return failed > 1, err
	})
	// Let the second session stream the rows again.
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u2", "marker"), occurredAt: at(3)})
	db.waitCaughtUp(20 * time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if h, rj := accountedTimes(t, db.conn, poison); h+rj != 1 {
		t.Errorf("refused outbox row %d has %d history and %d reject rows, want exactly one in all", poison, h, rj)
	}
}

// TestApplier_RejectOfOneSlotFoldedByAnother: replicators of two slots on
// one database (a rename, a misconfiguration: the design has them take
// turns under the fold lock, and the fence's fingerprint includes the
// other slots) both stream every outbox row. A row that one refused (a
// reject made by the change-by-change retry) reaches the other one after a
// newer event of the same user was folded, beyond any replay horizon the
// other knows of: it must stay a reject there, not fold as stale and get a
// history row besides. (Found in review.)
func TestApplier_RejectOfOneSlotFoldedByAnother(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	ctx := context.Background()
	refusePoison(t, db.conn)
	first, second := slotApplier(t, db, "slot_one"), slotApplier(t, db, "slot_two")
	ids := db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u1", "poison"), occurredAt: at(1)})
	ids = append(ids, db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "fine"), occurredAt: at(2)})...)
	streamed := func(i int, lsn uint64) *batch { return streamedBatch(t, db, ids[i], lsn) }
	if st, err := first.apply(ctx, streamed(0, 1000), nil, nil); err != nil || st.Rejected != 1 {
		t.Fatalf("slot one, refused row = %+v, %v; want 1 rejected", st, err)
	}
	if st, err := first.apply(ctx, streamed(1, 2000), nil, nil); err != nil || st.Folded != 1 {
		t.Fatalf("slot one, next row = %+v, %v; want 1 folded", st, err)
	}
	if _, err := second.apply(ctx, streamed(0, 1000), nil, nil); err != nil {
		t.Fatal(err)
	}
	if h, rj := accountedTimes(t, db.conn, ids[0]); h+rj != 1 {
		t.Errorf("refused outbox row %d has %d history and %d reject rows, want exactly one in all", ids[0], h, rj)
	}
}

// TestApplier_CachedBatchWithARejectedChangeStaysAReject: a lone batch
// whose users' state the applier keeps is folded on that state, with no
// load and so no lookup. Its change may still have a reject made by
// another slot's replicator before that state was last confirmed (the
// fence's fingerprint then sees nothing new): the batch's own transaction
// checks its rows for rejects, and the change is dropped.
func TestApplier_CachedBatchWithARejectedChangeStaysAReject(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	ctx := context.Background()
	refusePoison(t, db.conn)
	first, second := slotApplier(t, db, "slot_one"), slotApplier(t, db, "slot_two")
	ids := db.insert(
		event{provider: "generic", typ: "user.created", payload: genericUser("u1", "Ada"), occurredAt: at(1)},
		event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "poison"), occurredAt: at(2)},
		event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "Grace"), occurredAt: at(3)},
	)
	streamed := func(i int) *batch { return streamedBatch(t, db, ids[i], uint64(1000*(i+1))) }
	// Slot one streams all three: the second is refused, a reject.
	for i, want := range []applyStats{{Folded: 1}, {Rejected: 1}, {Folded: 1}} {
		st, err := first.apply(ctx, streamed(i), nil, nil)
		if err != nil || st.Folded != want.Folded || st.Rejected != want.Rejected {
			t.Fatalf("slot one, row %d = %+v, %v; want %+v", i, st, err, want)
		}
	}
	// Slot two streams them too, behind: the first loads u1's state (now
	// confirmed under a fingerprint that already includes slot one's work)
	// and keeps it, so the second is a lone batch folded on that state.
	if _, err := second.apply(ctx, streamed(0), nil, nil); err != nil {
		t.Fatal(err)
	}
	if !second.cache.covers(streamed(1), second.replayUntil) {
		t.Fatal("slot two does not fold the refused row on its kept state: the test cannot tell anything")
	}
	st, err := second.apply(ctx, streamed(1), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != 1 || st.Folded != 0 {
		t.Errorf("slot two, refused row = %+v; want it skipped", st)
	}
	if h, rj := accountedTimes(t, db.conn, ids[1]); h != 0 || rj != 1 {
		t.Errorf("refused outbox row %d has %d history and %d reject rows, want its reject only", ids[1], h, rj)
	}
	// The kept state is good again for the next lone batch.
	if _, err := second.apply(ctx, streamed(2), nil, nil); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, ctx, db.conn)
}

// slotApplier is an applier that owns slot, as a session's would.
func slotApplier(t *testing.T, db *testDB, slot string) *applier {
	t.Helper()
	owner, err := takeOwnership(context.Background(), db.conn, slot, false, 0, discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{conn: db.conn, slot: slot, generation: owner.Generation}
}

// streamedBatch is outbox row id as the stream hands it over alone: a
// transaction committed at lsn.
func streamedBatch(t *testing.T, db *testDB, id int64, lsn uint64) *batch {
	t.Helper()
	b := batchOf(readRecord(t, db.conn, id))
	b.changes[0].src.LSN, b.changes[0].src.CommittedAt = lsn, time.Now()
	b.endLSN = lsn + 8
	return b
}
