package replicator

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clerkEnvelopeSQL builds a Clerk user.updated webhook body of about 1.1 KB
// for user u (an integer expression) at event ms epoch t, as Clerk sends it.
const clerkEnvelopeSQL = `jsonb_build_object(
	'data', jsonb_build_object(
		'backup_code_enabled', false, 'banned', false, 'create_organization_enabled', true,
		'created_at', 1654012591514, 'delete_self_enabled', true,
		'email_addresses', jsonb_build_array(jsonb_build_object(
			'email_address', 'user' || u || '.' || (t % 97) || '@example.org', 'id', 'idn_' || md5(u::text),
			'linked_to', '[]'::jsonb, 'object', 'email_address',
			'verification', jsonb_build_object('status', 'verified', 'strategy', 'ticket'))),
		'external_accounts', '[]'::jsonb, 'external_id', u::text, 'first_name', 'First' || (t % 1000),
		'has_image', false, 'id', 'user_' || md5(u::text), 'image_url', 'https://img.clerk.com/' || md5(t::text),
		'last_active_at', t, 'last_name', 'Last' || (u % 1000), 'last_sign_in_at', t, 'legal_accepted_at', null,
		'locale', null, 'locked', false, 'object', 'user', 'password_enabled', true, 'phone_numbers', '[]'::jsonb,
		'primary_email_address_id', 'idn_' || md5(u::text), 'primary_phone_number_id', null,
		'primary_web3_wallet_id', null, 'private_metadata', '{}'::jsonb,
		'public_metadata', jsonb_build_object('plan', 'pro', 'seats', u % 50), 'saml_accounts', '[]'::jsonb,
		'totp_enabled', false, 'two_factor_enabled', false, 'unsafe_metadata', '{}'::jsonb,
		'updated_at', t, 'username', null, 'web3_wallets', '[]'::jsonb),
	'event_attributes', jsonb_build_object('http_request', jsonb_build_object('client_ip', '192.0.2.1', 'user_agent', 'Mozilla/5.0')),
	'instance_id', 'ins_123', 'object', 'event', 'timestamp', t, 'type', 'user.updated')`

// Benchmark workload: realistic Clerk payloads over many users, with event
// times mostly increasing and some out of order (stale events).
const (
	benchUsers  = 20000
	benchEvents = 50000
)

// insertClerkEvents commits n Clerk events, in transactions of perTx rows.
func insertClerkEvents(b *testing.B, db *testDB, n, perTx int) {
	b.Helper()
	ctx := context.Background()
	for done := 0; done < n; done += perTx {
		_, err := db.conn.Exec(ctx, `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id)
			SELECT 'clerk', 'user.updated', `+clerkEnvelopeSQL+`, 'msg_' || i
			FROM (SELECT i, (i * 7919) % $3 AS u, 1700000000000 + i * 10 - (CASE WHEN i % 10 = 0 THEN 5000 ELSE 0 END) AS t
				FROM generate_series($1::int, $2::int) i) s`, done+1, min(done+perTx, n), benchUsers)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// insertClerkEventsOneTxEach commits n Clerk events, one transaction each,
// as a busy application does, pipelining the statements.
func insertClerkEventsOneTxEach(b *testing.B, db *testDB, n int) {
	b.Helper()
	ctx := context.Background()
	const perCall = 500
	for done := 0; done < n; done += perCall {
		var sql strings.Builder
		for i := done + 1; i <= min(done+perCall, n); i++ {
			sql.WriteString(`INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id)
				SELECT 'clerk', 'user.updated', ` + clerkEnvelopeSQL + `, 'msg_' || i FROM (SELECT ` +
				itoa(i) + ` AS i, ` + itoa((i*7919)%benchUsers) + ` AS u, ` + itoa(1700000000000+i*10) + `::bigint AS t) s;`)
		}
		if _, err := db.conn.Exec(ctx, sql.String()); err != nil {
			b.Fatal(err)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// BenchmarkStream_Drain measures draining a backlog of one-row transactions
// from the WAL: compare with pg_recvlogical decoding the same WAL
// (make bench does, side by side).
func BenchmarkStream_Drain(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		db := newTestDB(b)
		r := db.start(Config{})
		waitLogged(b, r.logs, 20*time.Second, "msg=streaming") // slot created, catch-up done
		if err := r.stop(); err != nil {
			b.Fatal(err)
		}
		insertClerkEventsOneTxEach(b, db, benchEvents)
		b.StartTimer()
		start, cpu := time.Now(), startCPUMeter()
		db.start(Config{skipStartupCatchUp: true}) // the stream alone folds the backlog
		waitLastFolded(b, db)
		b.ReportMetric(float64(benchEvents)/time.Since(start).Seconds(), "events/s")
		cpu.report(b, db.conn, benchEvents)
	}
}

// BenchmarkCatchUp_Backfill measures the initial backfill of rows committed
// before the slot existed.
func BenchmarkCatchUp_Backfill(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		db := newTestDB(b)
		insertClerkEvents(b, db, benchEvents, 10000)
		b.StartTimer()
		start, cpu := time.Now(), startCPUMeter()
		db.start(Config{})
		waitLastFolded(b, db)
		b.ReportMetric(float64(benchEvents)/time.Since(start).Seconds(), "events/s")
		cpu.report(b, db.conn, benchEvents)
	}
}

// cpuMeter reports CPU time per event of each part of the pipeline, which,
// unlike events per second, holds still on a machine shared with other work.
type cpuMeter struct {
	start time.Time
	self  time.Duration
}

func startCPUMeter() cpuMeter { return cpuMeter{start: time.Now(), self: selfCPU()} }

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report reads the CPU used by the replicator's backends (which live as
// long as its session) and by this process, per event.
func (m cpuMeter) report(b *testing.B, conn *pgx.Conn, events int) {
	rows, err := conn.Query(context.Background(), `SELECT pid, backend_type FROM pg_stat_activity WHERE application_name = $1`, replicatorAppName)
	if err != nil {
		b.Fatal(err)
	}
	byType := map[string]time.Duration{}
	var pid int
	var typ string
	_, err = pgx.ForEachRow(rows, []any{&pid, &typ}, func() error { byType[typ] += procCPU(pid); return nil })
	if err != nil {
		b.Fatal(err)
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(events) }
	b.ReportMetric(per(byType["client backend"]), "pg-apply-µs/ev")
	b.ReportMetric(per(byType["walsender"]), "walsender-µs/ev")
	b.ReportMetric(per(selfCPU()-m.self), "go-µs/ev")
}

// procCPU is the user and system time of process pid.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// waitLastFolded waits until the newest outbox row is accounted for, which
// in a backlog folded in id order means all are, then checks that they
// are. It polls with an index probe: a benchmark must not compete with
// what it measures.
func waitLastFolded(b *testing.B, db *testDB) {
	b.Helper()
	ctx := context.Background()
	var last int64
	if err := db.conn.QueryRow(ctx, "SELECT max(id) FROM neon_auth.outbox").Scan(&last); err != nil {
		b.Fatal(err)
	}
	pgtest.WaitFor(b, 5*time.Minute, "the newest outbox row to be folded", func() (bool, error) {
		var done bool
		err := db.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM neon_auth.users_sync_history WHERE outbox_id = $1)
			OR EXISTS (SELECT 1 FROM neon_auth.outbox_rejects WHERE outbox_id = $1)`, last).Scan(&done)
		if !done && err == nil {
			time.Sleep(100 * time.Millisecond)
		}
		return done, err
	})
	b.StopTimer()
	db.waitCaughtUp(time.Minute)
	b.StartTimer()
}
