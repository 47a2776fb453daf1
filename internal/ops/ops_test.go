package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/replicator"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// syncBuffer is a log sink safe for the goroutines under test.
type syncBuffer = pgtest.SyncBuffer

// instance is a replicator running in-process with its ops endpoints.
type instance struct {
	ops    *Replicator
	srv    *httptest.Server
	cancel context.CancelFunc
	done   chan struct{}
	logs   *syncBuffer
}

func startInstance(t *testing.T, url, slot string) *instance {
	t.Helper()
	in := &instance{
		ops:  NewReplicator(ReplicatorConfig{SampleInterval: 100 * time.Millisecond, ReadyMaxLag: 30 * time.Second}),
		done: make(chan struct{}),
		logs: &syncBuffer{},
	}
	in.srv = httptest.NewServer(in.ops.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	logger := slog.New(slog.NewTextHandler(in.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = in.ops.RunSampler(ctx, url, slot, logger)
	}()
	go func() {
		defer wg.Done()
		err := replicator.Run(ctx, replicator.Config{DatabaseURL: url, Slot: slot, Logger: logger, Observer: in.ops, StatusInterval: 200 * time.Millisecond})
		if err != nil {
			t.Errorf("replicator: %v", err)
		}
	}()
	go func() { wg.Wait(); close(in.done) }()
	t.Cleanup(func() {
		in.stop(t)
		if t.Failed() {
			t.Logf("logs:\n%s", in.logs.String())
		}
	})
	return in
}

func (in *instance) stop(t *testing.T) {
	in.cancel()
	select {
	case <-in.done:
	case <-time.After(30 * time.Second):
		t.Error("instance did not stop")
	}
	in.srv.Close()
}

func (in *instance) readyz(t *testing.T) (int, Readiness) {
	t.Helper()
	resp, err := http.Get(in.srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rd Readiness
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, rd
}

// scrape reads /metrics and parses it with the Prometheus text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value returns the value of the family's metric whose labels are labels ("k=v,...").
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name, labels string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range mf.Metric {
		var parts []string
		for _, l := range m.Label {
			parts = append(parts, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(parts, ",") != labels {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no %s{%s}", name, labels)
	return 0
}

func newDB(t *testing.T) (string, *pgx.Conn, string) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := replicator.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	slot := "o_" + db
	return url, conn, slot[:min(len(slot), 63)]
}

func insert(t *testing.T, conn *pgx.Conn, rows ...string) {
	t.Helper()
	for _, r := range rows {
		if _, err := conn.Exec(context.Background(), "INSERT INTO neon_auth.outbox (provider, event_type, payload, occurred_at) VALUES "+r); err != nil {
			t.Fatal(err)
		}
	}
}

func count(t *testing.T, conn *pgx.Conn, sql string) float64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return float64(n)
}

func waitFolded(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	pgtest.WaitFor(t, 30*time.Second, "every outbox row accounted for", func() (bool, error) {
		var n int64
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM neon_auth.outbox o
			WHERE NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
			AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)`).Scan(&n)
		return n == 0, err
	})
}

// TestReplicator_MetricsMatchHistory folds a known set of events, some by
// the catch-up and some streamed, and checks the counters against the
// history and reject rows they count.
func TestReplicator_MetricsMatchHistory(t *testing.T) {
	t.Parallel()
	url, conn, slot := newDB(t)
	insert(t, conn, // before the slot: the catch-up folds these
		`('generic', 'user.created', '{"id": "a", "name": "A"}', '2026-01-01T00:00:01Z')`,
		`('generic', 'user.created', '{"no": "id"}', NULL)`,
	)
	in := startInstance(t, url, slot)
	pgtest.WaitFor(t, 30*time.Second, "ready", func() (bool, error) { code, _ := in.readyz(t); return code == http.StatusOK, nil })
	insert(t, conn,
		`('generic', 'user.updated', '{"id": "a", "name": "A2"}', '2026-01-01T00:00:03Z')`,
		`('generic', 'user.updated', '{"id": "a", "name": "old"}', '2026-01-01T00:00:02Z')`,
		`('generic', 'user.deleted', '{"id": "a"}', '2026-01-01T00:00:04Z'),
		 ('generic', 'user.created', '{"id": "b"}', '2026-01-01T00:00:01Z'),
		 ('generic', 'user.created', '{"id": "c"}', '2026-01-01T00:00:01Z')`,
		`('clerk', 'user.created', '[]', NULL)`,
	)
	waitFolded(t, conn)
	mfs := scrape(t, in.srv.URL)
	for _, op := range []string{"insert", "update", "delete", "stale", "resync", "forgotten"} {
		want := count(t, conn, "SELECT count(*) FROM neon_auth.users_sync_history WHERE operation = '"+op+"'")
		if got := value(t, mfs, "usersync_events_applied_total", "operation="+op); got != want {
			t.Errorf("usersync_events_applied_total{operation=%q} = %v, history has %v", op, got, want)
		}
	}
	checks := []struct {
		name, labels, sql string
	}{
		{"usersync_events_rejected_total", "", "SELECT count(*) FROM neon_auth.outbox_rejects"},
		{"usersync_catchup_events_total", "", `SELECT (SELECT count(*) FROM neon_auth.users_sync_history WHERE source_lsn IS NULL)
			+ (SELECT count(*) FROM neon_auth.outbox_rejects WHERE source_lsn IS NULL)`},
		{"usersync_commit_to_visible_seconds", "", "SELECT count(*) FROM neon_auth.users_sync_history WHERE source_lsn IS NOT NULL"},
	}
	for _, c := range checks {
		if got, want := value(t, mfs, c.name, c.labels), count(t, conn, c.sql); got != want {
			t.Errorf("%s = %v, want %v", c.name, got, want)
		}
	}
	if sum := mfs["usersync_apply_batch_events"].Metric[0].Histogram.GetSampleSum(); sum != count(t, conn, "SELECT count(*) FROM neon_auth.outbox") {
		t.Errorf("usersync_apply_batch_events sums to %v events, want every outbox row once", sum)
	}
	if got := value(t, mfs, "usersync_active", ""); got != 1 {
		t.Errorf("usersync_active = %v, want 1", got)
	}
	for _, name := range []string{"usersync_slot_lag_bytes", "usersync_confirmed_lsn", "usersync_reconnects_total",
		"usersync_events_replayed_skipped_total", "usersync_apply_batch_seconds", "go_goroutines", "process_cpu_seconds_total"} {
		if mfs[name] == nil {
			t.Errorf("no metric %s", name)
		}
	}
	if got := value(t, mfs, "usersync_confirmed_lsn", ""); got <= 0 {
		t.Errorf("usersync_confirmed_lsn = %v, want the slot's position", got)
	}
}

// TestReplicator_ReadyzFollowsTheSlot: the instance that holds the slot is
// ready, the other answers 503 as a standby, and they swap on a takeover.
func TestReplicator_ReadyzFollowsTheSlot(t *testing.T) {
	t.Parallel()
	url, _, slot := newDB(t)
	first := startInstance(t, url, slot)
	pgtest.WaitFor(t, 30*time.Second, "the first instance ready", func() (bool, error) {
		code, _ := first.readyz(t)
		return code == http.StatusOK, nil
	})
	second := startInstance(t, url, slot)
	pgtest.WaitFor(t, 30*time.Second, "the second instance standing by", func() (bool, error) {
		code, rd := second.readyz(t)
		return code == http.StatusServiceUnavailable && rd.Role == RoleStandby, nil
	})
	if code, rd := first.readyz(t); code != http.StatusOK || rd.Role != RoleActive || rd.LagBytes == nil || rd.LagSeconds == nil {
		t.Errorf("first /readyz = %d %+v, want 200 active with lag figures", code, rd)
	}
	first.stop(t)
	pgtest.WaitFor(t, 30*time.Second, "the second instance to take over and be ready", func() (bool, error) {
		code, rd := second.readyz(t)
		return code == http.StatusOK && rd.Role == RoleActive, nil
	})
}

func TestReadiness_Reasons(t *testing.T) {
	t.Parallel()
	r := NewReplicator(ReplicatorConfig{ReadyMaxLag: 10 * time.Second, SampleInterval: time.Hour})
	steps := []struct {
		do     func()
		ready  bool
		reason string
	}{
		{func() {}, false, "not holding the slot yet"},
		{func() { r.SessionEnded(replicator.ErrSlotBusy) }, false, "another instance holds the slot"},
		{func() { r.SlotHeld(true) }, false, "catching up"},
		{func() { r.CaughtUp() }, false, "no recent lag sample"},
		{func() { r.setLag(replicator.Lag{Seconds: 2}) }, false, "does not show the slot"},
		{func() { r.setLag(replicator.Lag{SlotExists: true, Seconds: 12}) }, false, "apply lag 12.0s is over 10s"},
		{func() { r.setLag(replicator.Lag{SlotExists: true, Seconds: 2}) }, true, ""},
		{func() { r.SlotHeld(false); r.SessionEnded(fmt.Errorf("connection reset")) }, false, "not holding the slot yet"},
	}
	for i, s := range steps {
		s.do()
		rd := r.Readiness()
		if rd.Ready != s.ready || !strings.Contains(rd.Reason, s.reason) {
			t.Errorf("step %d: %+v, want ready=%v with reason %q", i, rd, s.ready, s.reason)
		}
	}
}
