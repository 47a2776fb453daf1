package replicator

import (
	"context"
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
		start := time.Now()
		db.start(Config{skipStartupCatchUp: true}) // the stream alone folds the backlog
		db.waitCaughtUp(5 * time.Minute)
		b.ReportMetric(float64(benchEvents)/time.Since(start).Seconds(), "events/s")
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
		start := time.Now()
		db.start(Config{})
		db.waitCaughtUp(5 * time.Minute)
		b.ReportMetric(float64(benchEvents)/time.Since(start).Seconds(), "events/s")
	}
}
