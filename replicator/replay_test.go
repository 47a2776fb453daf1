package replicator

import (
	"context"
	"testing"
	"time"
)

// TestApplier_RefusedChangeReplayedStaysAReject replays, in a later
// session, a change the database refused (a reject made by the
// change-by-change retry) from a transaction the checkpoint never passed:
// it was applied as a chunk of a large transaction, and the session ended
// before the transaction's end was checkpointed. Folded again it would be
// stale against the newer change applied after it, and get a history row
// next to its reject; the session's replay horizon (replayHorizon, as a
// session computes it when it takes ownership) makes it looked up and
// dropped. (Found in review.)
func TestApplier_RefusedChangeReplayedStaysAReject(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	ctx := context.Background()
	execOrFatal(t, db.conn, `
		CREATE FUNCTION neon_auth.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poisoned name' USING ERRCODE = '22023'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON neon_auth.users_sync
			FOR EACH ROW EXECUTE FUNCTION neon_auth.refuse_poison()`)
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
	session := func() *applier {
		horizon, err := replayHorizon(ctx, db.conn, 0) // the checkpoint never moved
		if err != nil {
			t.Fatal(err)
		}
		return &applier{conn: db.conn, slot: "users_sync", generation: owner.Generation, replayUntil: horizon}
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
	var n int
	if err := db.conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM neon_auth.users_sync_history WHERE outbox_id = $1)
		+ (SELECT count(*) FROM neon_auth.outbox_rejects WHERE outbox_id = $1)`, ids[0]).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("outbox row %d has %d history and reject rows, want exactly one", ids[0], n)
	}
}
