package replicator

import (
	"context"
	"testing"
	"time"
)

// insertSingleRowTransactions commits n outbox rows, one transaction each, as
// a busy application does.
func insertSingleRowTransactions(b *testing.B, db *testDB, n int) {
	b.Helper()
	ctx := context.Background()
	batch := 0
	for batch < n {
		// One statement per row keeps a transaction per row while pipelining.
		sql := ""
		for i := 0; i < 500 && batch < n; i++ {
			sql += "INSERT INTO neon_auth.outbox (provider, event_type, payload) VALUES ('generic', 'user.updated', jsonb_build_object('id', 'u' || (random() * 1000)::int, 'name', md5(random()::text)));"
			batch++
		}
		if _, err := db.conn.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStream_Backlog measures draining a backlog of 1-row transactions
// from the WAL: events per second is the figure to compare with
// pg_recvlogical decoding the same WAL.
func BenchmarkStream_Backlog(b *testing.B) {
	const events = 20000
	for b.Loop() {
		b.StopTimer()
		db := newTestDB(b)
		r := db.start(Config{})
		db.waitCaughtUp(20 * time.Second) // slot created, catch-up done
		if err := r.stop(); err != nil {
			b.Fatal(err)
		}
		insertSingleRowTransactions(b, db, events)
		b.StartTimer()
		start := time.Now()
		db.start(Config{skipStartupCatchUp: true}) // the stream alone folds the backlog
		db.waitCaughtUp(5 * time.Minute)
		b.ReportMetric(float64(events)/time.Since(start).Seconds(), "events/s")
	}
}

// BenchmarkCatchUp_Backfill measures the initial backfill of rows committed
// before the slot existed.
func BenchmarkCatchUp_Backfill(b *testing.B) {
	const events = 50000
	for b.Loop() {
		b.StopTimer()
		db := newTestDB(b)
		if _, err := db.conn.Exec(context.Background(), `INSERT INTO neon_auth.outbox (provider, event_type, payload)
			SELECT 'generic', 'user.updated', jsonb_build_object('id', 'u' || (i % 5000), 'name', md5(i::text))
			FROM generate_series(1, $1) i`, events); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		db.start(Config{})
		db.waitCaughtUp(5 * time.Minute)
		b.ReportMetric(float64(events)/time.Since(start).Seconds(), "events/s")
	}
}
