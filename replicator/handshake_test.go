package replicator

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/usersync/usersync/internal/pgtest"
)

// The tests of this file reach the handshakes between the replicator and
// the server that the fault tests do not: a commit caught between the
// slot's consistent point and its visibility, a checkpoint from another
// cluster, asynchronous commit, and an old owner stalled inside a query.

func execOrFatal(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestRun_CatchUpSeesCommitBeforeTheSlotsConsistentPoint builds the race
// of a row committed while the slot is created: T's commit record precedes
// the slot's consistent point (so decoding never streams it), but T is not
// yet visible to an ordinary snapshot, because its commit waits for a
// synchronous standby (on Neon every commit waits for the safekeepers). The
// catch-up must still fold T, reading under the snapshot the slot exported.
//
// The snapshot builder moves on at running-transactions records, which
// CHECKPOINT writes: X1 running when the slot is created makes it wait;
// once X1 is gone with X2 running it has a full snapshot; T then commits
// (and hangs in the synchronous-replication wait); once X2 is gone, the
// next record makes the slot consistent — after T's commit.
func TestRun_CatchUpSeesCommitBeforeTheSlotsConsistentPoint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, nil)
	url := cluster.URL("postgres")
	db := migratedDB(t, url)
	// Every session but T's commits locally; T's waits for a standby that
	// does not exist until the test lets it go.
	execOrFatal(t, db.conn, "ALTER DATABASE postgres SET synchronous_commit = local")
	execOrFatal(t, db.conn, "SET synchronous_commit = local")
	execOrFatal(t, db.conn, "ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
	execOrFatal(t, db.conn, "SELECT pg_reload_conf()")
	release := func() {
		execOrFatal(t, db.conn, "ALTER SYSTEM RESET synchronous_standby_names")
		execOrFatal(t, db.conn, "SELECT pg_reload_conf()")
	}
	defer release()

	x1, x2 := connectFaults(t, url), connectFaults(t, url)
	execOrFatal(t, x1, "BEGIN")
	execOrFatal(t, x1, "SELECT pg_current_xact_id()")
	r := db.start(Config{})
	// The slot's first running-transactions record (written right after
	// its restart_lsn is set) must list X1 and not X2.
	pgtest.WaitFor(t, 30*time.Second, "the slot creation to log its first running transactions", func() (bool, error) {
		var logged bool
		err := db.conn.QueryRow(ctx, `SELECT COALESCE((SELECT restart_lsn < pg_current_wal_flush_lsn()
			FROM pg_replication_slots WHERE slot_name = $1), false)`, db.slot).Scan(&logged)
		return logged, err
	})
	execOrFatal(t, x2, "BEGIN")
	execOrFatal(t, x2, "SELECT pg_current_xact_id()")
	execOrFatal(t, x1, "ROLLBACK")
	execOrFatal(t, db.conn, "CHECKPOINT") // X1 gone: a full snapshot, waiting for X2

	tConn := connectFaults(t, url)
	execOrFatal(t, tConn, "SET synchronous_commit = on")
	committed := make(chan error, 1)
	go func() {
		_, err := insertEvents(ctx, tConn, event{provider: "generic", typ: "user.created", payload: genericUser("t", "Committed at the consistent point"), occurredAt: at(1)})
		committed <- err
	}()
	pgtest.WaitFor(t, 30*time.Second, "T to wait for its synchronous standby", func() (bool, error) {
		var waiting bool
		err := db.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep')`).Scan(&waiting)
		return waiting, err
	})
	execOrFatal(t, x2, "ROLLBACK")
	execOrFatal(t, db.conn, "CHECKPOINT") // X2 gone, T still listed as running: consistent
	waitStreaming(t, r)

	release()
	if err := <-committed; err != nil {
		t.Fatalf("insert T: %v", err)
	}
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u", "Streamed after"), occurredAt: at(2)})
	pgtest.WaitFor(t, 30*time.Second, "the row inserted after T to be streamed", func() (bool, error) {
		var n int
		err := db.conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.users_sync_history WHERE user_id = 'u'`).Scan(&n)
		return n == 1, err
	})
	var folded int
	if err := db.conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.users_sync_history WHERE user_id = 't'`).Scan(&folded); err != nil {
		t.Fatal(err)
	}
	if folded != 1 {
		t.Fatalf("T, committed before the slot's consistent point while waiting for a standby, has %d history rows, want 1: neither streamed nor caught up", folded)
	}
	checkInvariants(t, ctx, db.conn)
	checkCounts(t, ctx, db.conn)
}

// walPositions returns the server's WAL end and the slot's confirmed and
// checkpoint positions.
func walPositions(ctx context.Context, conn *pgx.Conn, slot string) (wal, confirmed, checkpoint pglogrepl.LSN, err error) {
	var w, c, k string
	err = conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text,
			COALESCE((SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1), '0/0')::text,
			COALESCE((SELECT lsn FROM neon_auth.replicator_checkpoint WHERE slot_name = $1), '0/0')::text`, slot).Scan(&w, &c, &k)
	if err != nil {
		return
	}
	for _, p := range []struct {
		s   string
		dst *pglogrepl.LSN
	}{{w, &wal}, {c, &confirmed}, {k, &checkpoint}} {
		if *p.dst, err = pglogrepl.ParseLSN(p.s); err != nil {
			return
		}
	}
	return
}

// futureLSN is far beyond the WAL of any test cluster.
const futureLSN = "7FFF/0"

// ackIntoTheFuture does what an older replicator with a foreign checkpoint
// did: it streams the slot and confirms a position beyond the server's WAL.
func ackIntoTheFuture(t *testing.T, url, slot string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "database"
	repl, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(context.Background())
	if err := pglogrepl.StartReplication(ctx, repl, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'users_sync_outbox'"},
	}); err != nil {
		t.Fatal(err)
	}
	future, _ := pglogrepl.ParseLSN(futureLSN)
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: future, WALFlushPosition: future, WALApplyPosition: future, ReplyRequested: true,
	}); err != nil {
		t.Fatal(err)
	}
	// The server has taken the update once it answers the reply request.
	for {
		msg, err := repl.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("wait for the server's reply: %v", err)
		}
		if cd, ok := msg.(*pgproto3.CopyData); ok && len(cd.Data) > 0 && cd.Data[0] == pglogrepl.PrimaryKeepaliveMessageByteID {
			return
		}
	}
}

// TestRun_ForeignPositionsDoNotStallTheStream starts the replicator where a
// position lies beyond the server's WAL — a checkpoint row restored from
// another cluster (with the slot kept, or recreated as after pg_dump and
// restore into a new project), or a slot an older replicator confirmed into
// the future: new rows must stream, no position beyond the WAL may be
// reported, and a warning must say what was found.
func TestRun_ForeignPositionsDoNotStallTheStream(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// corrupt runs while the replicator is stopped and the slot inactive.
		corrupt func(t *testing.T, db *testDB)
		warning *regexp.Regexp
	}{{
		name: "checkpoint from another cluster",
		corrupt: func(t *testing.T, db *testDB) {
			execOrFatal(t, db.conn, "UPDATE neon_auth.replicator_checkpoint SET lsn = $1", futureLSN)
		},
		warning: regexp.MustCompile(`level=WARN msg="the checkpoint is beyond the server's WAL end[^"]*" .*checkpoint=` + futureLSN),
	}, {
		name: "restored into a new cluster without the slot",
		corrupt: func(t *testing.T, db *testDB) {
			execOrFatal(t, db.conn, "SELECT pg_drop_replication_slot($1)", db.slot)
			execOrFatal(t, db.conn, "UPDATE neon_auth.replicator_checkpoint SET lsn = $1", futureLSN)
		},
		warning: regexp.MustCompile(`level=WARN msg="replication slot was missing`),
	}, {
		name: "slot confirmed into the future",
		corrupt: func(t *testing.T, db *testDB) {
			ackIntoTheFuture(t, db.url, db.slot)
		},
		warning: regexp.MustCompile(`level=WARN msg="replication slot is confirmed up to ` + futureLSN + `, beyond the server's WAL end`),
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := newTestDB(t)
			r := db.start(Config{})
			waitStreaming(t, r)
			db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("before", "Before"), occurredAt: at(1)})
			db.waitCaughtUp(30 * time.Second)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			pgtest.WaitFor(t, 20*time.Second, "slot released", func() (bool, error) {
				pid, err := slotActivePID(ctx, db.conn, db.slot)
				return pid == 0, err
			})
			tc.corrupt(t, db)

			r = db.start(Config{})
			waitStreaming(t, r)
			db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("after", "After"), occurredAt: at(2)})
			db.waitCaughtUp(30 * time.Second)
			// The status update after the apply reaches the slot within a moment.
			pgtest.WaitFor(t, 20*time.Second, "the slot to confirm the streamed row", func() (bool, error) {
				_, confirmed, _, err := walPositions(ctx, db.conn, db.slot)
				return confirmed != 0, err
			})
			wal, confirmed, checkpoint, err := walPositions(ctx, db.conn, db.slot)
			if err != nil {
				t.Fatal(err)
			}
			if confirmed > wal || checkpoint > wal {
				t.Errorf("positions beyond the server's WAL end %s: slot confirmed %s, checkpoint %s", wal, confirmed, checkpoint)
			}
			if logs := r.logs.String(); !tc.warning.MatchString(logs) {
				t.Errorf("no warning matching %q; logs:\n%s", tc.warning, logs)
			}
			checkInvariants(t, ctx, db.conn)
			checkCounts(t, ctx, db.conn)
		})
	}
}

// TestConnectApply_CommitsDurably sets synchronous_commit=off on the
// database and on the role, as an operator tuning for speed might: the
// apply connection must still flush each commit before it returns, since
// the position it covers is acknowledged to the slot right after. Settings
// at least as strong are the operator's to keep.
func TestConnectApply_CommitsDurably(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct{ scope, set, want string }{
		{"DATABASE", "off", "on"},
		{"ROLE", "off", "on"},
		{"DATABASE", "local", "local"},
		{"DATABASE", "remote_apply", "remote_apply"},
	}
	for _, tc := range cases {
		t.Run(tc.scope+" "+tc.set, func(t *testing.T) {
			t.Parallel()
			db := newTestDB(t)
			url := db.url
			switch tc.scope {
			case "DATABASE":
				execOrFatal(t, db.conn, fmt.Sprintf("ALTER DATABASE %s SET synchronous_commit = %s",
					pgx.Identifier{currentDatabase(t, db.conn)}.Sanitize(), tc.set))
			case "ROLE":
				var role string
				url, role = roleURL(t, db, "r_"+currentDatabase(t, db.conn))
				execOrFatal(t, db.conn, fmt.Sprintf("ALTER ROLE %s SET synchronous_commit = %s", role, tc.set))
			}
			conn, err := connectApply(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var got string
			if err := conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("with synchronous_commit = %s on the %s, the apply connection runs with %s, want %s", tc.set, strings.ToLower(tc.scope), got, tc.want)
			}
		})
	}
}

func currentDatabase(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var name string
	if err := conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// roleURL creates a login role (dropped at the end of the test) named
// after name, and returns db's URL with that role as the user, and the role.
func roleURL(t *testing.T, db *testDB, name string) (url, role string) {
	t.Helper()
	role = strings.ToLower(nonIdent.ReplaceAllString(name, "_"))
	role = role[:min(len(role), 60)]
	const password = "role-password"
	execOrFatal(t, db.conn, fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s'", role, password))
	t.Cleanup(func() {
		ctx := context.Background()
		admin, err := pgx.Connect(ctx, db.url)
		if err != nil {
			return
		}
		defer admin.Close(ctx)
		_, _ = admin.Exec(ctx, fmt.Sprintf("DROP ROLE IF EXISTS %s", role))
	})
	cfg, err := pgx.ParseConfig(db.url)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", role, password, cfg.Host, cfg.Port, cfg.Database), role
}

// TestRun_StalledOldOwnerIsTerminated holds the checkpoint row from a
// connection named like the replicator's inside an active statement, as an
// old instance stopped while the server was writing it results would: its
// backend never goes idle, so no idle timeout frees the row. Once the active
// instance is killed, the standby takes the slot and must evict the holder
// and stream within a minute.
func TestRun_StalledOldOwnerIsTerminated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A cluster of its own: the holder's transaction would make every
	// other test's slot creation wait for it (a slot's snapshot waits for
	// the transactions running anywhere in the cluster).
	db := migratedDB(t, pgtest.NewCluster(t, nil).URL("postgres"))
	a := db.startChild()
	waitLogged(t, a.logs, 60*time.Second, `"msg":"streaming"`)
	b := db.startChild()
	waitLogged(t, b.logs, 60*time.Second, "standing by")

	cfg, err := pgx.ParseConfig(db.url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = replicatorAppName
	holder, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	var holderPID int32
	if err := holder.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&holderPID); err != nil {
		t.Fatal(err)
	}
	execOrFatal(t, holder, "BEGIN")
	execOrFatal(t, holder, "SELECT * FROM neon_auth.replicator_checkpoint WHERE slot_name = $1 FOR UPDATE", db.slot)
	sleeping := make(chan error, 1)
	go func() {
		_, err := holder.Exec(ctx, "SELECT pg_sleep(3600)")
		sleeping <- err
	}()
	pgtest.WaitFor(t, 10*time.Second, "the holder to be active", func() (bool, error) {
		var state string
		err := db.conn.QueryRow(ctx, "SELECT COALESCE(state, '') FROM pg_stat_activity WHERE pid = $1", holderPID).Scan(&state)
		return state == "active", err
	})

	a.kill9()
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u1", "After the takeover"), occurredAt: at(1)})
	db.waitCaughtUp(60 * time.Second)
	select {
	case err := <-sleeping:
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57P01" { // admin_shutdown: terminated
			t.Errorf("the holder's statement ended with %v, want it terminated", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the holder's statement still runs after the takeover")
	}
	if !strings.Contains(b.logs.String(), "keeps the checkpoint row locked; terminating it") {
		t.Errorf("the standby did not log the termination; logs:\n%s", b.logs.String())
	}
	checkInvariants(t, ctx, db.conn)
	checkCounts(t, ctx, db.conn)
	if b.exited() {
		t.Errorf("the new owner exited with %d; logs:\n%s", b.code, b.logs.String())
	}
}
