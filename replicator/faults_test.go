package replicator

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
)

// The tests of this file inject the faults of SPEC.md's guarantees: kill -9,
// Postgres restarts and crashes, a second instance racing the first, a
// paused instance waking up, a dropped slot, an idle stream. Each ends by
// checking the exactly-once invariant and the fold equality.

// connectFaults opens a connection closed when the test ends.
func connectFaults(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// outboxTally counts outbox rows and the history and reject rows.
type outboxTally struct{ outbox, history, rejects int64 }

func (c outboxTally) accounted() int64 { return c.history + c.rejects }

func tally(ctx context.Context, conn *pgx.Conn) (outboxTally, error) {
	var c outboxTally
	err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM neon_auth.outbox),
		(SELECT count(*) FROM neon_auth.users_sync_history),
		(SELECT count(*) FROM neon_auth.outbox_rejects)`).Scan(&c.outbox, &c.history, &c.rejects)
	return c, err
}

// tallyAt counts on a new connection, for servers that restart under the test.
func tallyAt(ctx context.Context, url string) (outboxTally, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return outboxTally{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return tally(ctx, conn)
}

// checkCounts asserts that there are exactly as many history and reject rows
// as outbox rows, which with checkInvariants rules out duplicates.
func checkCounts(t testing.TB, ctx context.Context, conn *pgx.Conn) outboxTally {
	t.Helper()
	c, err := tally(ctx, conn)
	if err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if c.accounted() != c.outbox {
		t.Errorf("%d history + %d reject rows for %d outbox rows, want one each", c.history, c.rejects, c.outbox)
	}
	return c
}

func slotGeneration(ctx context.Context, conn *pgx.Conn, slot string) (int64, error) {
	var gen int64
	err := conn.QueryRow(ctx, `SELECT generation FROM neon_auth.replicator_checkpoint WHERE slot_name = $1`, slot).Scan(&gen)
	return gen, err
}

// randomEvent is one generic event for one of users users: mostly valid,
// with event times that collide, sometimes absent or only in the payload,
// and now and then malformed.
func randomEvent(rng *rand.Rand, users int, eventID string) event {
	id := fmt.Sprintf("u%02d", rng.IntN(users))
	ev := event{provider: "generic", occurredAt: at(rng.IntN(240))}
	if rng.IntN(3) == 0 {
		ev.eventID = &eventID
	}
	obj := map[string]any{"id": id}
	switch r := rng.IntN(100); {
	case r < 35:
		ev.typ = "user.created"
	case r < 80:
		ev.typ = "user.updated"
	default:
		ev.typ = "user.deleted"
	}
	if ev.typ != "user.deleted" {
		obj["name"] = fmt.Sprintf("name %d", rng.IntN(1000))
		obj["email"] = fmt.Sprintf("%s.%d@example.com", id, rng.IntN(10))
	}
	if rng.IntN(7) == 0 { // the event time from the payload, or received_at
		ev.occurredAt = nil
		if rng.IntN(2) == 0 {
			obj["updated_at"] = at(rng.IntN(240)).Format(time.RFC3339)
		}
	}
	switch rng.IntN(150) { // about 3% malformed
	case 0:
		delete(obj, "id")
	case 1:
		obj["id"] = 42
	case 2:
		obj["updated_at"] = "yesterday-ish"
	case 3:
		ev.typ = "user.exploded"
	case 4:
		ev.payload = `["not", "an", "object"]`
		return ev
	}
	b, _ := json.Marshal(obj)
	ev.payload = string(b)
	return ev
}

// loadGen inserts random events from several writers until stopped, in
// transactions of one to six rows.
type loadGen struct {
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	committed atomic.Int64
	mu        sync.Mutex
	errs      []error // what stopped intolerant writers
	failures  int     // failed transactions, of tolerant writers too
}

// startLoad starts writers on url. Tolerant writers reconnect after errors
// (the server restarts under them); others stop at their first error.
func startLoad(t testing.TB, url string, writers int, seed uint64, tolerant bool) *loadGen {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadGen{cancel: cancel}
	for w := range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.write(ctx, url, w, rand.New(rand.NewPCG(seed, uint64(w))), tolerant)
		}()
	}
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *loadGen) write(ctx context.Context, url string, w int, rng *rand.Rand, tolerant bool) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	for seq := 0; ctx.Err() == nil; seq++ {
		var err error
		if conn == nil {
			conn, err = pgx.Connect(ctx, url)
		}
		if err == nil {
			evs := make([]event, 1)
			if rng.IntN(4) == 0 {
				evs = make([]event, 2+rng.IntN(5))
			}
			for i := range evs {
				evs[i] = randomEvent(rng, 30, fmt.Sprintf("w%d-%d-%d", w, seq, i))
			}
			// Not cancelled by stop: a commit cut short would leave its outcome unknown.
			ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			if _, err = insertEvents(ictx, conn, evs...); err == nil {
				l.committed.Add(int64(len(evs)))
			}
			cancel()
		}
		if err != nil && ctx.Err() == nil {
			l.mu.Lock()
			l.failures++
			if !tolerant {
				l.errs = append(l.errs, fmt.Errorf("writer %d: %w", w, err))
			}
			l.mu.Unlock()
			if !tolerant {
				return
			}
			if conn != nil {
				_ = conn.Close(ctx)
				conn = nil
			}
			pause(ctx, 50*time.Millisecond) // the server is down: don't spin
			continue
		}
		pause(ctx, time.Duration(2+rng.IntN(10))*time.Millisecond) // pace the load
	}
}

// pause sleeps for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// stop stops the writers and returns how many events they committed and the
// errors of intolerant writers.
func (l *loadGen) stop() (int64, []error) {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.committed.Load(), l.errs
}

// TestRun_SurvivesSIGKILLWhileWritersInsert kills replicator processes with
// SIGKILL at random moments while writers insert, restarting each, then lets
// a last one catch up: every outbox row is folded or rejected exactly once
// and users_sync is the pure fold of the outbox.
func TestRun_SurvivesSIGKILLWhileWritersInsert(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1000))

	load := startLoad(t, db.url, 4, seed, false)
	deadline := time.Now().Add(9 * time.Second)
	kills, streaming := 0, 0
	for kills < 5 || time.Now().Before(deadline) {
		// Small batches on some runs split multi-row transactions into chunks.
		c := db.startChild(fmt.Sprintf("USERSYNC_TEST_BATCH=%d", 3+rng.IntN(200)))
		time.Sleep(300*time.Millisecond + time.Duration(rng.Int64N(int64(1200*time.Millisecond)))) // let it work for a while
		if c.exited() {
			t.Fatalf("replicator child exited on its own with %d; logs:\n%s", c.code, c.logs.String())
		}
		if strings.Contains(c.logs.String(), `"msg":"streaming"`) {
			streaming++
		}
		c.kill9()
		kills++
	}
	committed, errs := load.stop()
	for _, err := range errs {
		t.Errorf("insert: %v", err)
	}
	before, err := tally(ctx, db.conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d kills (%d while streaming, the others during the catch-up); writers committed %d events; %d folded and %d rejected before the last start",
		kills, streaming, committed, before.history, before.rejects)
	if committed < 500 {
		t.Fatalf("writers committed only %d events, too few to exercise the replicator", committed)
	}
	if before.accounted() == 0 {
		t.Fatalf("the killed replicators folded nothing, so the kills tested nothing")
	}

	last := db.startChild()
	db.waitCaughtUp(90 * time.Second)
	checkInvariants(t, ctx, db.conn)
	c := checkCounts(t, ctx, db.conn)
	if c.outbox != committed {
		t.Errorf("outbox has %d rows, writers committed %d", c.outbox, committed)
	}
	last.signal(syscall.SIGTERM)
	if code := last.wait(30 * time.Second); code != 0 {
		t.Errorf("last replicator exited %d after SIGTERM, want 0; logs:\n%s", code, last.logs.String())
	}
}

// TestRun_StandbyTakesOver runs two replicators on one slot: one streams,
// the other stands by without exiting, and takes over when the first is
// killed.
func TestRun_StandbyTakesOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	a := db.startChild()
	waitLogged(t, a.logs, 60*time.Second, `"msg":"streaming"`)
	b := db.startChild()
	waitLogged(t, b.logs, 60*time.Second, "standing by")

	var aWal int32
	pgtest.WaitFor(t, 10*time.Second, "the first replicator's walsender to hold the slot", func() (bool, error) {
		active, err := slotActivePID(ctx, db.conn, db.slot)
		if err != nil {
			return false, err
		}
		aWal, err = a.walsenderPID(ctx, db.conn)
		return active != 0 && active == aWal, err
	})
	gen, err := slotGeneration(ctx, db.conn, db.slot)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		db.insert(event{provider: "generic", typ: "user.created", payload: genericUser(fmt.Sprintf("s%d", i), "before"), occurredAt: at(i)})
	}
	db.waitCaughtUp(30 * time.Second)
	if b.exited() {
		t.Fatalf("the standby exited with %d; logs:\n%s", b.code, b.logs.String())
	}
	if bWal, err := b.walsenderPID(ctx, db.conn); err != nil || bWal != 0 {
		t.Fatalf("the standby has a walsender (pid %d, err %v) while the first instance streams", bWal, err)
	}
	if strings.Contains(b.logs.String(), `"msg":"streaming"`) {
		t.Fatalf("the standby streamed while the first instance held the slot; logs:\n%s", b.logs.String())
	}

	a.kill9()
	var bWal int32
	pgtest.WaitFor(t, 30*time.Second, "the standby's walsender to hold the slot and its generation to fence the old one", func() (bool, error) {
		active, err := slotActivePID(ctx, db.conn, db.slot)
		if err != nil {
			return false, err
		}
		bWal, err = b.walsenderPID(ctx, db.conn)
		if err != nil || active == 0 || active != bWal {
			return false, err
		}
		g, err := slotGeneration(ctx, db.conn, db.slot)
		return g > gen, err
	})
	if bWal == aWal {
		t.Fatalf("the slot's walsender is still %d after the first instance died", aWal)
	}
	waitLogged(t, b.logs, 10*time.Second, "taking over")
	for i := range 20 {
		db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser(fmt.Sprintf("s%d", i), "after"), occurredAt: at(100 + i)})
	}
	db.waitCaughtUp(30 * time.Second)
	checkInvariants(t, ctx, db.conn)
	checkCounts(t, ctx, db.conn)
	var renamed int
	if err := db.conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.users_sync WHERE name = 'after'`).Scan(&renamed); err != nil || renamed != 20 {
		t.Errorf("%d users renamed after the takeover (err %v), want 20", renamed, err)
	}
}

// applyBackendState returns the pg_stat_activity state of c's ordinary
// (non-replication) connection, "" when it has none.
func applyBackendState(ctx context.Context, conn *pgx.Conn, c *child) (string, error) {
	ports, err := c.localPorts()
	if err != nil {
		return "", err
	}
	rows, err := conn.Query(ctx, `SELECT client_port, COALESCE(state, '') FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND client_port IS NOT NULL`)
	if err != nil {
		return "", err
	}
	var port int32
	var state, found string
	_, err = pgx.ForEachRow(rows, []any{&port, &state}, func() error {
		if ports[int(port)] {
			found = state
		}
		return nil
	})
	return found, err
}

// appliedBatches counts the "applied batch" lines of a child's JSON logs
// and the events they name.
func appliedBatches(logs string) (batches, events int) {
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Msg    string `json:"msg"`
			Events int    `json:"events"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "applied batch" {
			batches++
			events += rec.Events
		}
	}
	return batches, events
}

// TestRun_PausedInstanceIsFenced pauses the streaming replicator (SIGSTOP)
// between two applies in the middle of a large source transaction, lets the
// server time its walsender out and a standby take over, then wakes it: it
// must not commit anything, and must go back to standing by — and take over
// soundly when the new owner dies in turn.
func TestRun_PausedInstanceIsFenced(t *testing.T) {
	t.Parallel()
	testPausedInstance(t, false)
}

// TestRun_PausedMidApplyDoesNotBlockTakeover pauses the streaming replicator
// inside an apply transaction, holding the checkpoint row that a standby
// must update to take over: the server ends that transaction after
// idle_in_transaction_session_timeout (lowered to 3s here), the standby
// takes over, and the woken instance commits nothing.
func TestRun_PausedMidApplyDoesNotBlockTakeover(t *testing.T) {
	t.Parallel()
	testPausedInstance(t, true)
}

func testPausedInstance(t *testing.T, insideApply bool) {
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, map[string]string{"wal_sender_timeout": "2s"})
	db := migratedDB(t, cluster.URL("postgres"))
	env := []string{"USERSYNC_TEST_IDLE_TX_TIMEOUT=3s"}
	a := db.startChild(append(env, "USERSYNC_TEST_BATCH=10")...)
	waitLogged(t, a.logs, 60*time.Second, `"msg":"streaming"`)
	b := db.startChild(env...)
	waitLogged(t, b.logs, 60*time.Second, "standing by")
	gen, err := slotGeneration(ctx, db.conn, db.slot)
	if err != nil {
		t.Fatal(err)
	}

	// One large source transaction, which a applies 10 events at a time.
	const big = 4000
	evs := make([]event, big)
	for i := range evs {
		evs[i] = event{provider: "generic", typ: "user.updated", payload: genericUser(fmt.Sprintf("p%02d", i%50), fmt.Sprintf("v%d", i)), occurredAt: at(i)}
	}
	db.insert(evs...)
	pgtest.WaitFor(t, 30*time.Second, "the first replicator to start on the large transaction", func() (bool, error) {
		c, err := tally(ctx, db.conn)
		return c.history > 0, err
	})
	// Between two applies, a must also not be paused between a commit and
	// its log line: every batch a committed is then logged, so any batch it
	// logs after waking was committed after the takeover.
	paused := func(state string, stopped outboxTally) bool {
		if insideApply {
			return state == "idle in transaction"
		}
		_, logged := appliedBatches(a.logs.String())
		return state == "idle" && int64(logged) == stopped.accounted()
	}
	var stopped outboxTally
	attempt := 0
	for ; ; attempt++ {
		a.signal(syscall.SIGSTOP)
		// What a sent before it stopped may still sit unread in the server's
		// socket: the backend's state must hold for a while, not just once.
		var state string
		var since time.Time
		pgtest.WaitFor(t, 10*time.Second, "the paused replicator's connection to settle", func() (bool, error) {
			s, err := applyBackendState(ctx, db.conn, a)
			if err != nil {
				return false, err
			}
			if s != state {
				state, since = s, time.Now()
			}
			return state != "active" && time.Since(since) > 300*time.Millisecond, nil
		})
		if stopped, err = tally(ctx, db.conn); err != nil {
			t.Fatal(err)
		}
		if paused(state, stopped) {
			break
		}
		if attempt == 100 {
			t.Fatalf("could not pause the replicator where the test needs it (inside an apply: %v; last state %q)", insideApply, state)
		}
		a.signal(syscall.SIGCONT)
		time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond) // let it run on a little
	}
	t.Logf("paused the first replicator after %d attempts with %d of %d events of the transaction folded", attempt+1, stopped.history, big)

	var bWal int32
	pgtest.WaitFor(t, 30*time.Second, "the standby to take the slot over from the paused instance", func() (bool, error) {
		active, err := slotActivePID(ctx, db.conn, db.slot)
		if err != nil {
			return false, err
		}
		bWal, err = b.walsenderPID(ctx, db.conn)
		if err != nil || active == 0 || active != bWal {
			return false, err
		}
		g, err := slotGeneration(ctx, db.conn, db.slot)
		return g > gen, err
	})
	newGen, err := slotGeneration(ctx, db.conn, db.slot)
	if err != nil {
		t.Fatal(err)
	}
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("late1", "while paused"), occurredAt: at(5000)})
	db.waitCaughtUp(60 * time.Second)

	woke := len(a.logs.String())
	a.signal(syscall.SIGCONT)
	pgtest.WaitFor(t, 30*time.Second, "the woken replicator to stand by", func() (bool, error) {
		return strings.Contains(a.logsSince(woke), "standing by"), nil
	})
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("late2", "after waking"), occurredAt: at(5001)})
	db.waitCaughtUp(30 * time.Second)

	// Every batch a commits is logged, possibly only after it wakes (a
	// batch's commit and the begin of the next share a round trip): so a
	// commit after the takeover would make a's total exceed what was
	// accounted for when it was paused.
	logs := a.logsSince(woke)
	if _, events := appliedBatches(a.logs.String()); int64(events) != stopped.accounted() || strings.Contains(logs, `"msg":"streaming"`) {
		t.Errorf("the woken replicator applied or streamed after a standby took over: it logged %d events applied in all, %d were accounted for when it was paused; its logs since waking:\n%s",
			events, stopped.accounted(), logs)
	}
	if strings.Contains(logs, ErrFenced.Error()) {
		t.Logf("the woken replicator's apply was fenced")
	}
	if a.exited() {
		t.Errorf("the woken replicator exited with %d, want it standing by; logs:\n%s", a.code, a.logs.String())
	}
	if g, err := slotGeneration(ctx, db.conn, db.slot); err != nil || g != newGen {
		t.Errorf("checkpoint generation moved from %d to %d (err %v): the woken instance took the slot back", newGen, g, err)
	}
	if active, err := slotActivePID(ctx, db.conn, db.slot); err != nil || active != bWal {
		t.Errorf("slot held by walsender %d (err %v), want the standby's %d", active, err, bWal)
	}
	checkInvariants(t, ctx, db.conn)
	checkCounts(t, ctx, db.conn)

	// The woken instance is a sound standby: when the new owner dies it
	// takes over, with nothing of what it held when it froze.
	b.kill9()
	retook := len(a.logs.String())
	pgtest.WaitFor(t, 60*time.Second, "the woken instance to take over when the new owner dies", func() (bool, error) {
		return strings.Contains(a.logsSince(retook), `"msg":"streaming"`), nil
	})
	db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("late1", "after the second takeover"), occurredAt: at(5002)})
	db.waitCaughtUp(30 * time.Second)
	checkInvariants(t, ctx, db.conn)
	checkCounts(t, ctx, db.conn)
}

// reconnectLine is the log line of a reconnect, which must carry the
// attempt and the delay.
var reconnectLine = regexp.MustCompile(`msg="replication interrupted; reconnecting".* attempt=\d+ delay=\S+`)

// TestRun_PostgresRestartMidStream restarts the server (fast shutdown),
// then crashes it (immediate shutdown), while writers insert and the
// replicator streams: it reconnects and folds every committed row once.
func TestRun_PostgresRestartMidStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, map[string]string{"wal_sender_timeout": "5s"})
	url := cluster.URL("postgres")
	first := migratedDB(t, url)
	r := first.start(Config{MaxBackoff: 2 * time.Second})
	waitLogged(t, r.logs, 30*time.Second, "msg=streaming ")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	load := startLoad(t, url, 2, seed, true)

	progress := func(what string) {
		t.Helper()
		first, err := tallyAt(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		pgtest.WaitFor(t, 60*time.Second, what, func() (bool, error) {
			c, err := tallyAt(ctx, url)
			return c.outbox > first.outbox+50 && c.accounted() > first.accounted()+50, err
		})
	}
	streams := func(n int) {
		t.Helper()
		pgtest.WaitFor(t, 60*time.Second, fmt.Sprintf("streaming session %d", n), func() (bool, error) {
			return strings.Count(r.logs.String(), "msg=streaming ") >= n, nil
		})
	}
	progress("folding before the restart")
	if err := cluster.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	streams(2)
	progress("folding after the restart")
	if err := cluster.StopImmediate(ctx); err != nil {
		t.Fatalf("crash: %v", err)
	}
	if err := cluster.Start(ctx); err != nil {
		t.Fatalf("start after crash: %v", err)
	}
	streams(3)
	progress("folding after the crash")
	committed, _ := load.stop()
	t.Logf("writers committed %d events; %d transactions failed while the server was down", committed, load.failures)

	db := &testDB{t: t, url: url, conn: connectFaults(t, url), slot: first.slot}
	db.waitCaughtUp(60 * time.Second)
	checkInvariants(t, ctx, db.conn)
	c := checkCounts(t, ctx, db.conn)
	if c.outbox < committed {
		t.Errorf("outbox has %d rows, but writers saw %d commits succeed", c.outbox, committed)
	}
	logs := r.logs.String()
	if !reconnectLine.MatchString(logs) {
		t.Errorf("no reconnect log line with attempt and delay; logs:\n%s", logs)
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run returned %v after the restarts, want nil", err)
	}
	t.Logf("%d events; %d streaming sessions", c.outbox, strings.Count(logs, "msg=streaming "))
}

// TestRun_SlotDroppedWhileStopped drops the slot while the replicator is
// stopped and inserts more rows: on start it recreates the slot, folds what
// the slot missed, and says so in a warning.
func TestRun_SlotDroppedWhileStopped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	r := db.start(Config{})
	for i := range 10 {
		db.insert(event{provider: "generic", typ: "user.created", payload: genericUser(fmt.Sprintf("d%d", i), "first"), occurredAt: at(10 + i)})
	}
	db.waitCaughtUp(30 * time.Second)
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	pgtest.WaitFor(t, 10*time.Second, "the slot to be dropped", func() (bool, error) {
		_, err := db.conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, db.slot)
		return err == nil, err
	})
	db.insert(
		event{provider: "generic", typ: "user.updated", payload: genericUser("d1", "second"), occurredAt: at(100)},
		event{provider: "generic", typ: "user.updated", payload: genericUser("d2", "older"), occurredAt: at(1)}, // stale
		event{provider: "generic", typ: "user.deleted", payload: `{"id": "d3"}`, occurredAt: at(100)},
		event{provider: "generic", typ: "user.created", payload: genericUser("d99", "new"), occurredAt: at(100)},
		event{provider: "generic", typ: "user.created", payload: `{"name": "no id"}`, occurredAt: at(100)}, // reject
	)

	r = db.start(Config{})
	db.waitCaughtUp(30 * time.Second)
	checkInvariants(t, ctx, db.conn)
	checkCounts(t, ctx, db.conn)
	logs := r.logs.String()
	if !regexp.MustCompile(`level=WARN msg="replication slot was missing[^"]*recreated`).MatchString(logs) {
		t.Errorf("no warning about the recreated slot; logs:\n%s", logs)
	}
	// The recreated slot streams.
	db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("d4", "streamed"), occurredAt: at(200)})
	db.waitCaughtUp(30 * time.Second)
	checkInvariants(t, ctx, db.conn)
}

// walsenderPIDs returns the PIDs in pg_stat_replication.
func walsenderPIDs(ctx context.Context, conn *pgx.Conn) ([]int32, error) {
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_replication ORDER BY pid`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int32])
}

// TestRun_IdleStreamSurvivesWalSenderTimeout leaves the stream idle for
// more than twice wal_sender_timeout: the status updates keep the
// connection alive, so no reconnect happens and a new event is folded.
func TestRun_IdleStreamSurvivesWalSenderTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, map[string]string{"wal_sender_timeout": "5s"})
	db := migratedDB(t, cluster.URL("postgres"))
	r := db.start(Config{})
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("i1", "one"), occurredAt: at(1)})
	db.waitCaughtUp(30 * time.Second)
	var before []int32
	pgtest.WaitFor(t, 10*time.Second, "one walsender", func() (bool, error) {
		var err error
		before, err = walsenderPIDs(ctx, db.conn)
		return len(before) == 1, err
	})

	time.Sleep(12 * time.Second) // idle on purpose: more than twice wal_sender_timeout

	db.insert(event{provider: "generic", typ: "user.updated", payload: genericUser("i1", "two"), occurredAt: at(2)})
	db.waitCaughtUp(10 * time.Second)
	after, err := walsenderPIDs(ctx, db.conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 1 || after[0] != before[0] {
		t.Errorf("walsenders %v after the idle period, want the same one as before, %v", after, before)
	}
	if logs := r.logs.String(); strings.Contains(logs, "reconnecting") {
		t.Errorf("the replicator reconnected while idle; logs:\n%s", logs)
	}
	checkInvariants(t, ctx, db.conn)
}

// noise writes rows of about 1 KB into public.noise, a table outside the
// publication, until ctx ends or total bytes are written; it returns the
// bytes written.
func noise(ctx context.Context, conn *pgx.Conn, total int) (int, error) {
	written := 0
	for written < total && ctx.Err() == nil {
		if _, err := conn.Exec(ctx, `INSERT INTO public.noise (v) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 500) g`); err != nil {
			return written, err
		}
		written += 500 * 1024
	}
	return written, nil
}

// TestRun_FastShutdownOfPostgresIsPrompt stops the server in fast mode while
// the replicator is connected and idle and another table gets writes. A
// walsender waits for its client to confirm all it sent before the server
// can stop, so this finishes only if the confirmed position follows the
// server's WAL end while nothing is pending.
func TestRun_FastShutdownOfPostgresIsPrompt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, nil) // the default wal_sender_timeout (60s): no timeout rescues a stuck shutdown
	db := migratedDB(t, cluster.URL("postgres"))
	if _, err := db.conn.Exec(ctx, `CREATE TABLE public.noise (id bigserial PRIMARY KEY, v text)`); err != nil {
		t.Fatal(err)
	}
	r := db.start(Config{})
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("f1", "one"), occurredAt: at(1)})
	db.waitCaughtUp(30 * time.Second)

	wctx, stopWrites := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgx.Connect(wctx, db.url)
		if err != nil {
			return
		}
		defer conn.Close(context.WithoutCancel(wctx))
		_, _ = noise(wctx, conn, 1<<40) // until stopped; the shutdown ends it with an error
	}()
	time.Sleep(2 * time.Second) // let the writes run for a while

	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	began := time.Now()
	err := cluster.Stop(sctx)
	took := time.Since(began)
	stopWrites()
	wg.Wait()
	if err != nil {
		t.Fatalf("fast shutdown failed after %s: %v; replicator logs:\n%s", took.Round(time.Millisecond), err, r.logs.String())
	}
	t.Logf("fast shutdown took %s", took.Round(time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("fast shutdown took %s with the replicator connected, want it well under 20s", took.Round(time.Millisecond))
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
}

// TestRun_IdleSlotDoesNotPinWAL writes 20 MB into a table outside the
// publication while the outbox is idle: the slot's confirmed position
// follows the server's WAL, so the slot does not hold that WAL back.
func TestRun_IdleSlotDoesNotPinWAL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, nil)
	db := migratedDB(t, cluster.URL("postgres"))
	if _, err := db.conn.Exec(ctx, `CREATE TABLE public.noise (id bigserial PRIMARY KEY, v text)`); err != nil {
		t.Fatal(err)
	}
	r := db.start(Config{})
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("w1", "one"), occurredAt: at(1)})
	db.waitCaughtUp(30 * time.Second)

	var start pglogrepl.LSN
	if err := db.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&start); err != nil {
		t.Fatal(err)
	}
	if _, err := noise(ctx, db.conn, 20<<20); err != nil {
		t.Fatalf("write noise: %v", err)
	}
	var end pglogrepl.LSN
	if err := db.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d MB of WAL outside the publication", (end-start)>>20)

	// A checkpoint logs the running transactions, a point the slot's
	// restart_lsn (the WAL it keeps) can move to once it is confirmed.
	if _, err := db.conn.Exec(ctx, `CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
	var confirmed, restart, current pglogrepl.LSN
	pgtest.WaitFor(t, 45*time.Second, "the slot to follow the WAL written outside the publication", func() (bool, error) {
		err := db.conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, restart_lsn::text, pg_current_wal_lsn()::text
			FROM pg_replication_slots WHERE slot_name = $1`, db.slot).Scan(&confirmed, &restart, &current)
		return confirmed >= end && current-confirmed < 1<<20 && restart >= end, err
	})
	t.Logf("confirmed_flush_lsn %s is %d bytes behind pg_current_wal_lsn(), restart_lsn %s %d bytes",
		confirmed, current-confirmed, restart, current-restart)
	if logs := r.logs.String(); strings.Contains(logs, "reconnecting") {
		t.Errorf("the replicator reconnected; logs:\n%s", logs)
	}
}

// TestRun_SIGTERMExitsZero stops a replicator process with SIGTERM in the
// middle of a large source transaction: it exits 0 promptly, having
// committed or abandoned its open batch cleanly, and a new instance
// completes the fold exactly once.
func TestRun_SIGTERMExitsZero(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newTestDB(t)
	c := db.startChild("USERSYNC_TEST_BATCH=25")
	waitLogged(t, c.logs, 60*time.Second, `"msg":"streaming"`)
	evs := make([]event, 2000)
	for i := range evs {
		evs[i] = event{provider: "generic", typ: "user.updated", payload: genericUser(fmt.Sprintf("t%02d", i%40), fmt.Sprintf("v%d", i)), occurredAt: at(i)}
	}
	db.insert(evs...)
	pgtest.WaitFor(t, 30*time.Second, "the replicator to start folding", func() (bool, error) {
		n, err := tally(ctx, db.conn)
		return n.history > 0, err
	})
	c.signal(syscall.SIGTERM)
	began := time.Now()
	if code := c.wait(15 * time.Second); code != 0 {
		t.Fatalf("replicator exited %d after SIGTERM, want 0; logs:\n%s", code, c.logs.String())
	}
	t.Logf("exited %s after SIGTERM", time.Since(began).Round(time.Millisecond))
	if !strings.Contains(c.logs.String(), `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" log line; logs:\n%s", c.logs.String())
	}
	pgtest.WaitFor(t, 10*time.Second, "the slot to be released", func() (bool, error) {
		pid, err := slotActivePID(ctx, db.conn, db.slot)
		return pid == 0, err
	})
	stopped, err := tally(ctx, db.conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d events folded at exit", stopped.history, len(evs))

	db.start(Config{})
	db.waitCaughtUp(60 * time.Second)
	checkInvariants(t, ctx, db.conn)
	checkCounts(t, ctx, db.conn)
}

// TestRun_OwnershipWaitDoesNotStarveTheWalsender holds the checkpoint row
// (as an instance paused mid-apply does) for longer than wal_sender_timeout
// while a new owner starts: the new owner must keep its walsender answered
// during the wait and take over once, not be cut off and start again.
func TestRun_OwnershipWaitDoesNotStarveTheWalsender(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.NewCluster(t, map[string]string{"wal_sender_timeout": "2s"})
	db := migratedDB(t, cluster.URL("postgres"))
	r := db.start(Config{})
	waitStreaming(t, r)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 20*time.Second, "slot released", func() (bool, error) {
		pid, err := slotActivePID(ctx, db.conn, db.slot)
		return pid == 0, err
	})
	before, err := slotGeneration(ctx, db.conn, db.slot)
	if err != nil {
		t.Fatal(err)
	}
	holder := connectFaults(t, db.url)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT * FROM neon_auth.replicator_checkpoint WHERE slot_name = $1 FOR UPDATE", db.slot); err != nil {
		t.Fatal(err)
	}
	r2 := db.start(Config{})
	time.Sleep(4 * time.Second) // twice wal_sender_timeout, within the 10 s lock timeout
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, r2)
	db.insert(event{provider: "generic", typ: "user.created", payload: genericUser("u1", "After the wait")})
	db.waitCaughtUp(20 * time.Second)
	after, err := slotGeneration(ctx, db.conn, db.slot)
	if err != nil {
		t.Fatal(err)
	}
	if after != before+1 {
		t.Errorf("one takeover moved the generation from %d to %d, want +1", before, after)
	}
	if logs := r2.logs.String(); strings.Contains(logs, "reconnecting") {
		t.Errorf("the new owner lost its connection during the ownership wait:\n%s", logs)
	}
}
