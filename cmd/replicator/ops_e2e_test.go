package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/usersync/usersync/internal/pgtest"
)

// runBinary runs the built replicator to completion and returns its exit
// code, stdout and stderr.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(replicatorBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// scrapeMetrics reads /metrics at base and parses it with the Prometheus
// text parser.
func scrapeMetrics(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
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

// metricValue returns a counter or gauge whose labels are exactly labels.
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.Metric {
		match := len(m.Label) == len(labels)
		for _, l := range m.Label {
			match = match && labels[l.GetName()] == l.GetValue()
		}
		if !match {
			continue
		}
		if m.Counter != nil {
			return m.Counter.GetValue(), true
		}
		return m.Gauge.GetValue(), true
	}
	return 0, false
}

func getStatus(url string) (int, map[string]any) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// TestEndToEnd_Operations drives the built binary as an operator would:
// run --http (readiness, metrics parsed with the Prometheus parser), then
// history, as-of, verify, resync, forget and prune against what it folded.
func TestEndToEnd_Operations(t *testing.T) {
	url := pgtest.NewDatabase(t)
	env := []string{"DATABASE_URL=" + url}
	if code, _, stderr := runBinary(t, env, "migrate"); code != 0 {
		t.Fatalf("migrate: %d %s", code, stderr)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	sqlExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Old rows, for prune: folded by the catch-up.
	sqlExec(`INSERT INTO neon_auth.outbox (provider, event_type, payload, occurred_at, received_at) VALUES
		('generic', 'user.created', '{"id": "old", "name": "Old"}', '2026-01-01T00:00:01Z', now() - interval '40 days'),
		('generic', 'user.updated', '{"id": "old", "name": "Older"}', '2026-01-01T00:00:00Z', now() - interval '40 days')`)

	addr := freeAddr(t)
	runner := startProcess(t, env, "--log-format", "json", "run", "--slot", "e2e_ops", "--http", addr, "--lag-sample-interval", "200ms")
	pgtest.WaitFor(t, 30*time.Second, "/readyz to answer 200", func() (bool, error) {
		code, _ := getStatus("http://" + addr + "/readyz")
		return code == http.StatusOK, nil
	})
	if code, body := getStatus("http://" + addr + "/readyz"); body["role"] != "active" || body["lag_bytes"] == nil || body["lag_seconds"] == nil {
		t.Errorf("/readyz = %d %v, want role active with lag_bytes and lag_seconds", code, body)
	}
	var after []string // the server's time after each of ada's events was folded
	for _, ev := range []string{
		`('generic', 'user.created', '{"id": "ada", "name": "Ada", "email": "ada@example.com"}', '2026-01-01T00:00:01Z')`,
		`('generic', 'user.updated', '{"id": "ada", "name": "Grace", "email": "grace.hopper@example.com"}', '2026-01-01T00:00:02Z')`,
		`('generic', 'user.created', '{"name": "no id"}', NULL)`,
	} {
		var id int64
		if err := conn.QueryRow(ctx, "INSERT INTO neon_auth.outbox (provider, event_type, payload, occurred_at) VALUES "+ev+" RETURNING id").Scan(&id); err != nil {
			t.Fatal(err)
		}
		pgtest.WaitFor(t, 20*time.Second, "the event folded", func() (bool, error) {
			var n int
			err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM neon_auth.users_sync_history WHERE outbox_id = $1)
				+ (SELECT count(*) FROM neon_auth.outbox_rejects WHERE outbox_id = $1)`, id).Scan(&n)
			return n == 1, err
		})
		var now time.Time
		if err := conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
			t.Fatal(err)
		}
		after = append(after, now.UTC().Format(time.RFC3339Nano))
	}

	// Metrics match the history and rejects they count.
	mfs := scrapeMetrics(t, "http://"+addr)
	for _, op := range []string{"insert", "update", "stale"} {
		var want float64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM neon_auth.users_sync_history WHERE operation = $1", op).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got, ok := metricValue(mfs, "usersync_events_applied_total", map[string]string{"operation": op}); !ok || got != want {
			t.Errorf("usersync_events_applied_total{operation=%q} = %v (%v), history has %v", op, got, ok, want)
		}
	}
	if got, _ := metricValue(mfs, "usersync_events_rejected_total", nil); got != 1 {
		t.Errorf("usersync_events_rejected_total = %v, want 1", got)
	}
	if got, _ := metricValue(mfs, "usersync_active", nil); got != 1 {
		t.Errorf("usersync_active = %v, want 1", got)
	}

	// history, with the flag after the user id as people type it.
	code, out, stderr := runBinary(t, env, "history", "ada", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.Contains(lines[1], `"name":["Ada","Grace"]`) || !strings.Contains(lines[0], `"operation":"insert"`) {
		t.Errorf("history ada --json: exit %d, %q %s", code, out, stderr)
	}
	code, out, _ = runBinary(t, env, "history", "ada")
	if code != 0 || !strings.Contains(out, "OPERATION") || !strings.Contains(out, "name: Ada → Grace") {
		t.Errorf("history ada: exit %d\n%s", code, out)
	}
	if code, out, _ = runBinary(t, env, "history", "nobody"); code != 0 || out != "" {
		t.Errorf("history of an unknown user: exit %d, %q; want nothing, exit 0", code, out)
	}
	code, out, _ = runBinary(t, env, "as-of", after[0], "ada", "--json")
	if code != 0 || !strings.Contains(out, `"name":"Ada"`) || strings.Count(out, "\n") != 1 {
		t.Errorf("as-of %s ada --json: exit %d, %q", after[0], code, out)
	}
	code, out, _ = runBinary(t, env, "as-of", after[1])
	if code != 0 || !strings.Contains(out, "Grace") || !strings.Contains(out, "old") || strings.Contains(out, " Ada ") {
		t.Errorf("as-of %s: exit %d\n%s", after[1], code, out)
	}
	if code, _, stderr = runBinary(t, env, "as-of", "yesterday"); code != exitUsage || !strings.Contains(stderr, "RFC 3339") {
		t.Errorf("as-of yesterday: exit %d, %q; want a usage error naming RFC 3339", code, stderr)
	}

	// verify: clean, then a hand-made difference, repaired by resync.
	if code, out, stderr = runBinary(t, env, "verify", "--slot", "e2e_ops"); code != 0 || !strings.Contains(out, "verify: clean") {
		t.Fatalf("verify on a clean database: exit %d\n%s%s", code, out, stderr)
	}
	sqlExec("UPDATE neon_auth.users_sync SET email = 'mallory@example.com' WHERE id = 'ada'")
	code, out, stderr = runBinary(t, env, "verify", "--json", "--slot", "e2e_ops")
	if code != 1 || !strings.Contains(out, `{"user_id":"ada","column":"email","want":"grace.hopper@example.com","got":"mallory@example.com"}`) ||
		!strings.Contains(out, `"differences":1`) || !strings.Contains(stderr, "resync") {
		t.Errorf("verify after a hand edit: exit %d\n%s%s", code, out, stderr)
	}
	if code, out, _ = runBinary(t, env, "resync", "--all", "--slot", "e2e_ops"); code != 0 || !strings.Contains(out, "resynced ada: email") {
		t.Errorf("resync --all: exit %d\n%s", code, out)
	}
	if code, out, stderr = runBinary(t, env, "verify", "--slot", "e2e_ops"); code != 0 {
		t.Errorf("verify after resync: exit %d\n%s%s", code, out, stderr)
	}
	if strings.Contains(stderr, "█") || strings.Contains(stderr, "verify") {
		t.Errorf("a progress bar on a pipe: %q", stderr)
	}

	// forget: the data is gone from every table.
	if code, _, stderr = runBinary(t, env, "forget", "ada"); code != exitUsage || !strings.Contains(stderr, "--reason") {
		t.Errorf("forget without --reason: exit %d, %q", code, stderr)
	}
	if code, out, _ = runBinary(t, env, "forget", "ada", "--reason", "ticket 7"); code != 0 || !strings.Contains(out, "forgot ada") {
		t.Errorf("forget: exit %d, %q", code, out)
	}
	var leaks int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM neon_auth.outbox t WHERE t::text LIKE '%hopper%')
		+ (SELECT count(*) FROM neon_auth.users_sync t WHERE t::text LIKE '%hopper%')
		+ (SELECT count(*) FROM neon_auth.users_sync_history t WHERE t::text LIKE '%hopper%')`).Scan(&leaks); err != nil || leaks != 0 {
		t.Errorf("after forget, %d rows still hold the user's email (%v)", leaks, err)
	}

	// prune: the superseded old row goes, the winner stays.
	code, out, _ = runBinary(t, env, "prune", "--outbox-older-than", "30d", "--json")
	if code != 0 || !strings.Contains(out, `"table":"outbox"`) || !strings.Contains(out, `"deleted":1,"kept":1`) {
		t.Errorf("prune: exit %d, %q", code, out)
	}
	if code, _, stderr = runBinary(t, env, "prune", "--outbox-older-than", "soon"); code != exitUsage || !strings.Contains(stderr, "30d") {
		t.Errorf("prune with a bad duration: exit %d, %q", code, stderr)
	}
	if code, out, stderr = runBinary(t, env, "verify", "--slot", "e2e_ops"); code != 0 {
		t.Errorf("verify after forget and prune: exit %d\n%s%s", code, out, stderr)
	}
	if code := runner.terminate(t); code != 0 {
		t.Errorf("run exited %d on SIGTERM, want 0", code)
	}
}
