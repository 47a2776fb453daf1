package replicator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/usersync/usersync/internal/netfault"
	"github.com/usersync/usersync/internal/pgtest"
)

// The tests of this file put a TCP proxy (internal/netfault) between the
// replicator and PostgreSQL and break the network: a silent partition,
// high latency, connection resets. The writers connect directly. Each ends
// with the exactly-once and fold-equality checks.

// proxied returns a copy of db whose URL goes through a new proxy; the copy
// keeps db's direct connection for the test's own queries.
func proxied(t *testing.T, db *testDB) (*testDB, *netfault.Proxy) {
	t.Helper()
	u, err := url.Parse(db.url)
	if err != nil {
		t.Fatal(err)
	}
	p, err := netfault.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	via := *db
	via.url = u.String()
	return &via, p
}

// longNetworkTest skips a minute-long network test when
// USERSYNC_LONG_FAULTS=0: `make test-matrix` runs these on one PostgreSQL
// major only (LONG_FAULTS_ON in the Makefile), as what they exercise — the
// replicator's handling of the network — is the same on every version.
func longNetworkTest(t *testing.T) {
	t.Helper()
	if os.Getenv("USERSYNC_LONG_FAULTS") == "0" {
		t.Skip("USERSYNC_LONG_FAULTS=0: make test-matrix runs this minute-long network test on one PostgreSQL major only")
	}
}

// waitFolding waits until the replicator has folded more rows than it had.
func waitFolding(t *testing.T, db *testDB, what string) {
	t.Helper()
	ctx := context.Background()
	first, err := tally(ctx, db.conn)
	if err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 60*time.Second, what, func() (bool, error) {
		c, err := tally(ctx, db.conn)
		return c.accounted() > first.accounted()+20, err
	})
}

// TestRun_NetworkBlackhole partitions the replicator from PostgreSQL for 60
// seconds without a reset or a FIN, with an apply in flight whose answer
// the partition holds back, while writers go on inserting: the replicator
// must notice the silence on its own, abandon the apply and try a new
// connection during the partition, then catch up once the network is back.
func TestRun_NetworkBlackhole(t *testing.T) {
	longNetworkTest(t)
	t.Parallel()
	const partition = 60 * time.Second
	ctx := context.Background()
	db := newTestDB(t)
	via, proxy := proxied(t, db)
	r := via.start(Config{MaxBackoff: 2 * time.Second})
	waitStreaming(t, r)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	load := startLoad(t, db.url, 2, seed, false)
	waitFolding(t, db, "folding before the partition")

	// Hold the fold lock so that the replicator's next apply waits on the
	// server, partition, then let the apply commit: its answer is held.
	locker := connectFaults(t, db.url)
	if _, err := locker.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(foldLockID)); err != nil {
		t.Fatal(err)
	}
	waitApplyOnFoldLock(t, db)
	before := proxy.Accepted()
	proxy.Blackhole()
	began := time.Now()
	if _, err := locker.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(foldLockID)); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, partition, "a new connection attempt during the partition", func() (bool, error) {
		return proxy.Accepted() > before, nil
	})
	noticed := time.Since(began)
	stuck, err := tally(ctx, db.conn)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(partition - time.Since(began))
	during, err := tally(ctx, db.conn)
	if err != nil {
		t.Fatal(err)
	}
	proxy.Restore()
	restored := time.Now()
	t.Logf("noticed the partition after %s; %d events inserted and %d folded during it", noticed.Round(time.Millisecond),
		during.outbox-stuck.outbox, during.accounted()-stuck.accounted())
	if during.accounted() != stuck.accounted() {
		t.Errorf("%d rows folded while the replicator was partitioned from the database: the proxy leaked", during.accounted()-stuck.accounted())
	}
	waitFolding(t, db, "folding after the partition")
	t.Logf("folding again %s after the network came back", time.Since(restored).Round(time.Millisecond))

	committed, errs := load.stop()
	for _, err := range errs {
		t.Errorf("insert: %v", err)
	}
	db.waitCaughtUp(60 * time.Second)
	checkInvariants(t, ctx, db.conn)
	c := checkCounts(t, ctx, db.conn)
	if c.outbox != committed {
		t.Errorf("outbox has %d rows, writers committed %d", c.outbox, committed)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "the connection looks dead") {
		t.Errorf("the replicator did not say it found the connection dead; logs:\n%s", logs)
	}
}

// TestRun_NetworkLatency adds 150 ms each way between the replicator and a
// server with wal_sender_timeout = 3s, starting with a backlog whose
// catch-up takes longer than that at this latency: the replicator must
// keep the walsender answered throughout, fold everything and never
// reconnect.
func TestRun_NetworkLatency(t *testing.T) {
	longNetworkTest(t)
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, map[string]string{"wal_sender_timeout": "3s"})
	db := migratedDB(t, cluster.URL("postgres"))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for range 4 {
		evs := make([]event, 5000)
		for i := range evs {
			evs[i] = randomEvent(rng, 300, fmt.Sprintf("backlog-%d", rng.Int64()))
		}
		db.insert(evs...)
	}
	via, proxy := proxied(t, db)
	proxy.SetLatency(150 * time.Millisecond)
	began := time.Now()
	r := via.start(Config{MaxBackoff: 2 * time.Second})
	db.waitCaughtUp(120 * time.Second)
	t.Logf("caught up with a backlog of 20000 events in %s at 150 ms each way", time.Since(began).Round(time.Millisecond))
	waitStreaming(t, r)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	load := startLoad(t, db.url, 2, seed, false)
	waitFolding(t, db, "folding the writers' events")
	time.Sleep(5 * time.Second) // several wal_sender_timeouts of streaming at this latency
	committed, errs := load.stop()
	for _, err := range errs {
		t.Errorf("insert: %v", err)
	}
	db.waitCaughtUp(60 * time.Second)
	checkInvariants(t, ctx, db.conn)
	c := checkCounts(t, ctx, db.conn)
	if c.outbox != committed+20000 {
		t.Errorf("outbox has %d rows, want the backlog and the %d committed by writers", c.outbox, committed)
	}
	logs := r.logs.String()
	if n := strings.Count(logs, "msg=streaming "); n != 1 || strings.Contains(logs, "reconnecting") {
		t.Errorf("%d streaming sessions (want 1, no reconnect) at 150 ms latency; logs:\n%s", n, logs)
	}
}

// TestRun_NetworkResets resets every connection of the replicator (RST on
// both sides): first in the middle of a large source transaction that small
// batches apply in chunks, so that the next session streams it again and
// must skip the chunks already applied; then at random moments while
// writers insert. Each reset costs a reconnect, and every row is folded
// exactly once.
func TestRun_NetworkResets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	via, proxy := proxied(t, db)
	r := via.start(Config{MaxBackoff: time.Second, BatchSize: 7})
	waitStreaming(t, r)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 99))

	// Mid-transaction: 20 ms each way makes each 7-event chunk take a
	// while, so the reset lands inside the transaction.
	const big = 400
	evs := make([]event, big)
	for i := range evs {
		evs[i] = event{provider: "generic", typ: "user.updated", payload: genericUser(fmt.Sprintf("mid%03d", i%40), fmt.Sprintf("v%d", i)), occurredAt: at(i)}
	}
	proxy.SetLatency(20 * time.Millisecond)
	db.insert(evs...)
	var folded int
	pgtest.WaitFor(t, 60*time.Second, "the large transaction to be partly applied", func() (bool, error) {
		err := db.conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.users_sync_history WHERE user_id LIKE 'mid%'`).Scan(&folded)
		return folded >= 3*7, err
	})
	proxy.ResetAll()
	proxy.SetLatency(0)
	if folded >= big {
		t.Fatalf("the whole transaction was applied before the reset; nothing tests the replay")
	}
	pgtest.WaitFor(t, 60*time.Second, "the large transaction to be applied after the reset", func() (bool, error) {
		err := db.conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.users_sync_history WHERE user_id LIKE 'mid%'`).Scan(&folded)
		return folded == big, err
	})
	if !regexp.MustCompile(`msg="applied batch" .*skipped=[1-9]`).MatchString(r.logs.String()) {
		t.Errorf("no apply skipped the chunks replayed after the mid-transaction reset; logs:\n%s", r.logs.String())
	}
	checkInvariants(t, ctx, db.conn)

	load := startLoad(t, db.url, 3, seed, false)
	const resets = 6
	for i := range resets {
		// A large transaction now and then, so resets land inside chunks.
		if rng.IntN(2) == 0 {
			evs := make([]event, 50+rng.IntN(100))
			for j := range evs {
				evs[j] = randomEvent(rng, 30, fmt.Sprintf("big-%d-%d", i, j))
			}
			db.insert(evs...)
		}
		waitFolding(t, db, fmt.Sprintf("folding before reset %d", i+1))
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		if n := proxy.ResetAll(); n == 0 {
			t.Fatalf("reset %d: the replicator had no connection through the proxy", i+1)
		}
		pgtest.WaitFor(t, 30*time.Second, fmt.Sprintf("streaming again after reset %d", i+1), func() (bool, error) {
			return strings.Count(r.logs.String(), "msg=streaming ") > i+2, nil
		})
	}
	committed, errs := load.stop()
	for _, err := range errs {
		t.Errorf("insert: %v", err)
	}
	db.waitCaughtUp(60 * time.Second)
	checkInvariants(t, ctx, db.conn)
	c := checkCounts(t, ctx, db.conn)
	if c.outbox < committed {
		t.Errorf("outbox has %d rows, writers committed %d", c.outbox, committed)
	}
	t.Logf("%d resets, %d events", resets+1, c.outbox)
	if err := r.stop(); err != nil {
		t.Errorf("Run returned %v after the resets, want nil", err)
	}
}
