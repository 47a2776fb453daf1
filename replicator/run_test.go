package replicator

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox"
)

func TestRun_BackfillsRowsCommittedBeforeTheSlot(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.insert(
		event{provider: "generic", typ: "user.created", payload: genericUser("u1", "Ada"), occurredAt: at(1)},
		event{provider: "generic", typ: "user.created", payload: genericUser("u2", "Bob"), occurredAt: at(2)},
	)
	db.start(Config{})
	db.waitCaughtUp(20 * time.Second)
	var backfilled int
	if err := db.conn.QueryRow(context.Background(), "SELECT count(*) FROM neon_auth.users_sync_history WHERE source_lsn IS NULL").Scan(&backfilled); err != nil {
		t.Fatal(err)
	}
	if backfilled != 2 {
		t.Errorf("history rows from the backfill (source_lsn null) = %d, want 2", backfilled)
	}
	checkInvariants(t, context.Background(), db.conn)
}

func TestRun_StreamsNewRows(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	r := db.start(Config{})
	waitStreaming(t, r)
	ids := db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u1", "Ada"), occurredAt: at(1)})
	db.waitCaughtUp(20 * time.Second)
	var lsn *string
	var committed *time.Time
	var op string
	if err := db.conn.QueryRow(context.Background(), `SELECT operation, source_lsn::text, source_committed_at
		FROM neon_auth.users_sync_history WHERE outbox_id = $1`, ids[0]).Scan(&op, &lsn, &committed); err != nil {
		t.Fatal(err)
	}
	if op != "insert" || lsn == nil || committed == nil {
		t.Errorf("streamed history row: operation %q, source_lsn %v, committed %v; want insert with both set", op, lsn, committed)
	}
	var name string
	if err := db.conn.QueryRow(context.Background(), "SELECT name FROM neon_auth.users_sync WHERE id = 'u1'").Scan(&name); err != nil || name != "Ada" {
		t.Errorf("users_sync name = %q (%v), want Ada", name, err)
	}
	checkInvariants(t, context.Background(), db.conn)
}

func TestRun_OutOfOrderAndDuplicateEvents(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	r := db.start(Config{})
	waitStreaming(t, r)
	// Newest first, then the older ones, each in its own transaction; a
	// redelivery of the same provider event id is a no-op insert.
	db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "Third"), occurredAt: at(3), eventID: ptr("e3")})
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u1", "First"), occurredAt: at(1), eventID: ptr("e1")})
	db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "Second"), occurredAt: at(2), eventID: ptr("e2")})
	tag, err := db.conn.Exec(context.Background(), `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id)
		VALUES ('generic', 'user.updated', $1::jsonb, 'e3') ON CONFLICT (provider, event_id) DO NOTHING`, genericUser("u1", "Again"))
	if err != nil || tag.RowsAffected() != 0 {
		t.Fatalf("redelivery: %v rows, err %v; want 0 rows", tag.RowsAffected(), err)
	}
	db.waitCaughtUp(20 * time.Second)
	var name string
	if err := db.conn.QueryRow(context.Background(), "SELECT name FROM neon_auth.users_sync WHERE id = 'u1'").Scan(&name); err != nil || name != "Third" {
		t.Errorf("name = %q (%v), want Third (the newest event wins whatever the arrival order)", name, err)
	}
	ops := historyOps(t, db.conn)
	if want := "update,stale,stale"; ops != "insert,stale,stale" && ops != want {
		t.Errorf("history operations = %s, want insert,stale,stale", ops)
	}
	checkInvariants(t, context.Background(), db.conn)
}

func historyOps(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var ops string
	if err := conn.QueryRow(context.Background(), "SELECT string_agg(operation, ',' ORDER BY outbox_id) FROM neon_auth.users_sync_history").Scan(&ops); err != nil {
		t.Fatal(err)
	}
	return ops
}

func TestRun_RejectsDoNotBlockTheStream(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	r := db.start(Config{})
	waitStreaming(t, r)
	ids := db.insert(
		event{provider: "generic", typ: "user.created", payload: `{"name": "no id"}`},
		event{provider: "auth0", typ: "user.created", payload: genericUser("u9", "x")},
		event{provider: "generic", typ: "user.banned", payload: genericUser("u9", "x")},
		event{provider: "generic", typ: "user.created", payload: `[1, 2]`},
		event{provider: "generic", typ: "user.created", payload: genericUser("u1", "After")},
	)
	db.waitCaughtUp(20 * time.Second)
	rows, err := db.conn.Query(context.Background(), "SELECT outbox_id, error FROM neon_auth.outbox_rejects ORDER BY outbox_id")
	if err != nil {
		t.Fatal(err)
	}
	reasons, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		ID    int64
		Error string
	}])
	if err != nil {
		t.Fatal(err)
	}
	if len(reasons) != 4 {
		t.Fatalf("rejects = %v, want the 4 malformed rows", reasons)
	}
	for i, want := range []string{"id", "auth0", "user.banned", "object"} {
		if reasons[i].ID != ids[i] || !strings.Contains(reasons[i].Error, want) {
			t.Errorf("reject %d = %+v, want outbox id %d with a reason mentioning %q", i, reasons[i], ids[i], want)
		}
	}
	var name string
	if err := db.conn.QueryRow(context.Background(), "SELECT name FROM neon_auth.users_sync WHERE id = 'u1'").Scan(&name); err != nil || name != "After" {
		t.Errorf("the event after the rejects: name %q (%v), want After", name, err)
	}
	checkInvariants(t, context.Background(), db.conn)
}

func TestRun_LargePayload(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	r := db.start(Config{})
	waitStreaming(t, r)
	big := strings.Repeat("x", 400<<10)
	payload, _ := json.Marshal(map[string]any{"id": "big", "name": "Big", "bio": big})
	db.insert(event{provider: "generic", typ: "user.created", payload: string(payload)})
	db.waitCaughtUp(20 * time.Second)
	var n int
	if err := db.conn.QueryRow(context.Background(), "SELECT length(raw_json->>'bio') FROM neon_auth.users_sync WHERE id = 'big'").Scan(&n); err != nil || n != len(big) {
		t.Errorf("raw_json bio length = %d (%v), want %d", n, err, len(big))
	}
	checkInvariants(t, context.Background(), db.conn)
}

func TestRun_RestartsFromCheckpointWithoutDuplicates(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	r := db.start(Config{})
	waitStreaming(t, r)
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u1", "One"), occurredAt: at(1)})
	db.waitCaughtUp(20 * time.Second)
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	var checkpoint string
	if err := db.conn.QueryRow(context.Background(), "SELECT lsn::text FROM neon_auth.replicator_checkpoint WHERE slot_name = $1", db.slot).Scan(&checkpoint); err != nil {
		t.Fatal(err)
	}
	if checkpoint == "0/0" {
		t.Fatalf("checkpoint still 0/0 after a streamed apply")
	}
	// Committed while stopped: folded by the start-up catch-up; then one
	// streamed after the restart, which must resume at the checkpoint.
	db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "Two"), occurredAt: at(2)})
	// The server ends the old walsender a moment after the client left.
	pgtest.WaitFor(t, 20*time.Second, "the old walsender to release the slot", func() (bool, error) {
		var active bool
		err := db.conn.QueryRow(context.Background(), "SELECT active FROM pg_replication_slots WHERE slot_name = $1", db.slot).Scan(&active)
		return !active, err
	})
	r2 := db.start(Config{})
	waitStreaming(t, r2)
	db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "Three"), occurredAt: at(3)})
	db.waitCaughtUp(20 * time.Second)
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}
	from := regexp.MustCompile(`msg=streaming .*from=([0-9A-F]+/[0-9A-F]+)`).FindStringSubmatch(r2.logs.String())
	if from == nil {
		t.Fatalf("second run did not log where it streamed from; logs:\n%s", r2.logs.String())
	}
	resumed, _ := pglogrepl.ParseLSN(from[1])
	saved, _ := pglogrepl.ParseLSN(checkpoint)
	if resumed < saved {
		t.Errorf("second run streamed from %s, before the checkpoint %s", resumed, saved)
	}
	if ops := historyOps(t, db.conn); ops != "insert,update,update" {
		t.Errorf("history operations = %s, want insert,update,update (each event once)", ops)
	}
	checkInvariants(t, context.Background(), db.conn)
}

func TestRun_LargeTransactionInBoundedChunks(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	r := db.start(Config{BatchSize: 100})
	waitStreaming(t, r)
	_, err := db.conn.Exec(context.Background(), `INSERT INTO neon_auth.outbox (provider, event_type, payload)
		SELECT 'generic', 'user.created', jsonb_build_object('id', 'u' || i, 'name', 'n' || i) FROM generate_series(1, 5000) i`)
	if err != nil {
		t.Fatal(err)
	}
	db.waitCaughtUp(60 * time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(r.logs.String(), "applied batch"); n < 50 {
		t.Errorf("a 5000-row transaction was applied in %d batches, want at least 50 of at most 100 events", n)
	}
	checkInvariants(t, context.Background(), db.conn)
}

func TestRun_RefusesWithoutSchema(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	err := Run(context.Background(), Config{DatabaseURL: url})
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "replicator migrate") {
		t.Fatalf("Run on an unmigrated database = %v, want a ConfigError telling to run 'replicator migrate'", err)
	}
}

func TestRun_RefusesWithoutLogicalWAL(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t, map[string]string{"wal_level": "replica"})
	db := migratedDB(t, cluster.URL("postgres"))
	err := Run(context.Background(), Config{DatabaseURL: db.url})
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "wal_level") || !strings.Contains(err.Error(), "logical") {
		t.Fatalf("Run with wal_level=replica = %v, want a ConfigError about wal_level", err)
	}
	if strings.Contains(err.Error(), cluster.Password()) {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestApplier_StaleGenerationIsFenced(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	ctx := context.Background()
	ownerA, err := takeOwnership(ctx, db.conn, "users_sync", false, 0, discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pgx.Connect(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	if _, err := takeOwnership(ctx, other, "users_sync", false, 0, discardLogger); err != nil {
		t.Fatal(err)
	}
	ids := db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u1", "Stale")})
	old := &applier{conn: db.conn, slot: "users_sync", generation: ownerA.Generation}
	b := batchOf(readRecord(t, db.conn, ids[0]))
	if _, err := old.apply(ctx, b, nil, nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("apply with a superseded generation = %v, want ErrFenced", err)
	}
	if n, _ := pendingCount(ctx, db.conn); n != 1 {
		t.Errorf("the fenced apply wrote something: %d rows pending, want 1", n)
	}
}

// TestApplier_ReplayIsSkipped applies the same changes twice, as a stream
// replays them after a crash between a commit and its acknowledgement: the
// second apply writes nothing. Changes the applier knows may be replays
// (committed at or before replayUntil) are looked up and dropped before
// the fold; others fold as stale and their rows are skipped on conflict.
func TestApplier_ReplayIsSkipped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		replayUntil uint64
	}{{"looked up", 1 << 40}, {"skipped on conflict", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newTestDB(t)
			ctx := context.Background()
			owner, err := takeOwnership(ctx, db.conn, "users_sync", false, 0, discardLogger)
			if err != nil {
				t.Fatal(err)
			}
			ids := db.insert(
				event{provider: "generic", typ: "user.created", payload: genericUser("u1", "A")},
				event{provider: "generic", typ: "user.created", payload: `{}`},
				event{provider: "generic", typ: "user.updated", payload: genericUser("u1", "B")},
			)
			streamed := func() *batch {
				b := batchOf(readRecord(t, db.conn, ids[0]), readRecord(t, db.conn, ids[1]), readRecord(t, db.conn, ids[2]))
				for i := range b.changes {
					b.changes[i].src.LSN, b.changes[i].src.CommittedAt = 1000, time.Now()
				}
				return b
			}
			app := &applier{conn: db.conn, slot: "users_sync", generation: owner.Generation, replayUntil: tc.replayUntil}
			first, err := app.apply(ctx, streamed(), nil, nil)
			if err != nil || first.Folded != 2 || first.Rejected != 1 {
				t.Fatalf("first apply = %+v, %v; want 2 folded, 1 rejected", first, err)
			}
			before := historyOps(t, db.conn)
			again, err := app.apply(ctx, streamed(), nil, nil)
			if err != nil || again.Skipped != 3 || again.Folded != 0 || again.Rejected != 0 {
				t.Fatalf("replayed apply = %+v, %v; want all three skipped", again, err)
			}
			if after := historyOps(t, db.conn); after != before {
				t.Errorf("the replay changed history from %s to %s", before, after)
			}
			checkInvariants(t, ctx, db.conn)
		})
	}
}

func readRecord(t *testing.T, conn *pgx.Conn, id int64) (rec outbox.Record) {
	t.Helper()
	row, err := conn.Query(context.Background(), `SELECT o.id::text, o.provider, o.event_type, o.payload::text, o.event_id,
		o.occurred_at::text, o.received_at::text FROM neon_auth.outbox o WHERE id = $1`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer row.Close()
	if !row.Next() {
		t.Fatalf("outbox row %d not found", id)
	}
	var tr textRow
	for i, v := range row.RawValues() {
		if v != nil {
			tr[i] = append([]byte{}, v...)
		}
	}
	rec, err = parseRecord(&tr, conn.TypeMap())
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// waitStreaming waits until the replicator has caught up and streams, so
// that what a test inserts next travels through the WAL.
func waitStreaming(t *testing.T, r *running) {
	t.Helper()
	pgtest.WaitFor(t, 20*time.Second, "replicator streaming", func() (bool, error) {
		return strings.Contains(r.logs.String(), "msg=streaming"), nil
	})
}

func TestParsePgoutput_TruncatedDataIsAnError(t *testing.T) {
	t.Parallel()
	for _, data := range [][]byte{{'I'}, {'I', 0, 0, 0, 1, 'N'}, {'R', 0, 0}, {'B', 1, 2}, {'C'}} {
		if _, err := parsePgoutput(data); err == nil {
			t.Errorf("parsePgoutput(%q) = nil error, want an error", data)
		}
	}
}

func TestRun_RowTheDatabaseRefusesBecomesAReject(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	// A trigger stands in for any refusal of the folded row (a too-large key,
	// a constraint added by the user): only that event may be lost to it.
	if _, err := db.conn.Exec(context.Background(), `
		CREATE FUNCTION neon_auth.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poisoned name' USING ERRCODE = '22023'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON neon_auth.users_sync
			FOR EACH ROW EXECUTE FUNCTION neon_auth.refuse_poison();`); err != nil {
		t.Fatal(err)
	}
	r := db.start(Config{})
	waitStreaming(t, r)
	ids := db.insert(
		event{provider: "generic", typ: "user.created", payload: genericUser("u1", "Before")},
		event{provider: "generic", typ: "user.created", payload: genericUser("u2", "poison")},
		event{provider: "generic", typ: "user.created", payload: genericUser("u3", "After")},
	)
	db.waitCaughtUp(20 * time.Second)
	var reason string
	if err := db.conn.QueryRow(context.Background(), "SELECT error FROM neon_auth.outbox_rejects WHERE outbox_id = $1", ids[1]).Scan(&reason); err != nil {
		t.Fatalf("the refused event has no reject row: %v", err)
	}
	if !strings.Contains(reason, "poisoned name") {
		t.Errorf("reject reason %q does not carry the database's message", reason)
	}
	var folded int
	if err := db.conn.QueryRow(context.Background(), "SELECT count(*) FROM neon_auth.users_sync WHERE id IN ('u1', 'u3')").Scan(&folded); err != nil || folded != 2 {
		t.Errorf("users around the refused one: %d folded (%v), want 2", folded, err)
	}
}

func TestRun_CatchUpOwedAfterAnInterruptedOneIsDone(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	r := db.start(Config{})
	waitStreaming(t, r)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 20*time.Second, "the old walsender to release the slot", func() (bool, error) {
		var active bool
		err := db.conn.QueryRow(context.Background(), "SELECT active FROM pg_replication_slots WHERE slot_name = $1", db.slot).Scan(&active)
		return !active, err
	})
	// A slot re-created after this row committed, whose catch-up never
	// completed: the slot does not carry the row, the checkpoint records the debt.
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u1", "Owed")})
	ctx := context.Background()
	if _, err := db.conn.Exec(ctx, "SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())", db.slot); err != nil {
		t.Fatal(err)
	}
	if _, err := db.conn.Exec(ctx, "UPDATE neon_auth.replicator_checkpoint SET catchup_epoch = caught_up_epoch + 1 WHERE slot_name = $1", db.slot); err != nil {
		t.Fatal(err)
	}
	// Even without the start-up catch-up, the recorded debt is paid.
	db.start(Config{skipStartupCatchUp: true})
	db.waitCaughtUp(20 * time.Second)
	pgtest.WaitFor(t, 20*time.Second, "the catch-up debt to be cleared", func() (bool, error) {
		var owed bool
		err := db.conn.QueryRow(context.Background(), "SELECT caught_up_epoch < catchup_epoch FROM neon_auth.replicator_checkpoint WHERE slot_name = $1", db.slot).Scan(&owed)
		return !owed, err
	})
}

// batchOf decodes records read from the outbox into a batch, as the catch-up does.
func batchOf(recs ...outbox.Record) *batch {
	b := &batch{}
	for _, r := range recs {
		b.add(decodeChange(sourceRecord{Record: r}))
	}
	return b
}

// TestRun_OutboxTimeBeforeYearOneIsAReject: the outbox's timestamptz
// columns accept years BC, which history images (RFC 3339) cannot hold. An
// event whose time is one becomes a reject, and the images of the others
// stay true. (Found in review: 44 BC was written as AD 44.)
func TestRun_OutboxTimeBeforeYearOneIsAReject(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	bc := time.Date(-43, 3, 15, 12, 0, 0, 0, time.UTC) // 0044-03-15 BC
	ids := db.insert(
		event{provider: "generic", typ: "user.created", payload: `{"id":"caesar","name":"Julius"}`, occurredAt: &bc},
		event{provider: "generic", typ: "user.created", payload: `{"id":"brutus","name":"Marcus"}`, occurredAt: at(1)},
		event{provider: "generic", typ: "user.deleted", payload: `{"id":"brutus"}`, occurredAt: &bc},
	)
	r := db.start(Config{})
	db.waitCaughtUp(30 * time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range []int64{ids[0], ids[2]} {
		var reason string
		if err := db.conn.QueryRow(ctx, "SELECT error FROM neon_auth.outbox_rejects WHERE outbox_id = $1", id).Scan(&reason); err != nil {
			t.Fatalf("outbox row %d: no reject: %v", id, err)
		}
		if !strings.Contains(reason, "occurred_at") {
			t.Errorf("outbox row %d: reject reason %q does not name occurred_at", id, reason)
		}
	}
	checkInvariants(t, ctx, db.conn)
}
