package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox/webhook"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// replicatorBinary builds cmd/replicator once per test run: the end-to-end
// test drives the real binary, as a user does.
func replicatorBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "replicator-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "replicator")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// process is a replicator subcommand running as its own process.
type process struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
	mu   sync.Mutex
	done chan error
}

func startProcess(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	return startCommand(t, exec.Command(replicatorBinary(t), args...), env)
}

// startCommand starts cmd (the replicator binary, or a shell that execs it)
// with env added to the test's environment.
func startCommand(t *testing.T, cmd *exec.Cmd, env []string) *process {
	t.Helper()
	args := cmd.Args[1:]
	p := &process{cmd: cmd, logs: &bytes.Buffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &lockedWriter{p: p}, &lockedWriter{p: p}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("%s logs:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

type lockedWriter struct{ p *process }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.logs.Write(b)
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// terminate sends SIGTERM and returns the exit code.
func (p *process) terminate(t *testing.T) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatalf("%v did not exit within 30s of SIGTERM", p.cmd.Args)
		return -1
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// deliver posts a signed webhook the way Svix does.
func deliver(t *testing.T, url string, key []byte, id string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	req.Header.Set("svix-id", id)
	req.Header.Set("svix-timestamp", fmt.Sprint(now.Unix()))
	req.Header.Set("svix-signature", webhook.Sign(key, id, now, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("deliver %s: %v", id, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// deliverWorkOS posts body to the /webhooks/workos URL signed as WorkOS does.
func deliverWorkOS(t *testing.T, url string, secret string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("WorkOS-Signature", webhook.SignWorkOS([]byte(secret), time.Now(), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("deliver to %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestEndToEnd_IngestThenRun sends signed Clerk, Stack Auth and WorkOS
// deliveries to the `replicator ingest` binary and checks that `replicator
// run` folds them into users_sync; both exit 0 on SIGTERM, and neither logs a
// secret.
func TestEndToEnd_IngestThenRun(t *testing.T) {
	url := pgtest.NewDatabase(t)
	// Each endpoint has its own secret: ingest refuses one shared by two.
	clerkKey, stackKey := []byte("end-to-end-test-clerk-signing-key"), []byte("end-to-end-test-stack-signing-key")
	clerkSecret := "whsec_" + base64.StdEncoding.EncodeToString(clerkKey)
	stackSecret := "whsec_" + base64.StdEncoding.EncodeToString(stackKey)
	keys := map[string][]byte{"clerk": clerkKey, "stack": stackKey}
	// WorkOS keys the HMAC with the secret as the dashboard shows it.
	const workosSecret = "whsec_EndToEndWorkOSSecret00001"
	env := []string{"DATABASE_URL=" + url, "CLERK_WEBHOOK_SECRET=" + clerkSecret, "STACK_WEBHOOK_SECRET=" + stackSecret, "WORKOS_WEBHOOK_SECRET=" + workosSecret}
	migrate := exec.Command(replicatorBinary(t), "migrate")
	migrate.Env = append(os.Environ(), env...)
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	ingest := startProcess(t, env, "--log-format", "json", "ingest", "--listen", addr)
	runner := startProcess(t, env, "--log-format", "json", "run", "--slot", "e2e_slot")
	pgtest.WaitFor(t, 20*time.Second, "the receiver to answer /healthz", func() (bool, error) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	samples := []struct{ path, file, id string }{
		{"clerk", "clerk_user.created.json", "msg_e2e_clerk_1"},
		{"clerk", "clerk_user.updated.json", "msg_e2e_clerk_2"},
		{"stack", "stackauth_user.created.json", "msg_e2e_stack_1"},
	}
	for _, s := range samples {
		body, err := demoData.ReadFile("demodata/" + s.file)
		if err != nil {
			t.Fatal(err)
		}
		if code := deliver(t, "http://"+addr+"/webhooks/"+s.path, keys[s.path], s.id, body); code != http.StatusOK {
			t.Fatalf("delivery %s answered %d, want 200", s.id, code)
		}
	}
	// WorkOS: the update first, as a retry might; then a redelivery of it,
	// signed anew as WorkOS does, which is stored once (by the event id).
	for _, file := range []string{"workos_user.updated.json", "workos_user.created.json", "workos_user.updated.json"} {
		body, err := os.ReadFile("../../outbox/testdata/providers/" + file)
		if err != nil {
			t.Fatal(err)
		}
		if code := deliverWorkOS(t, "http://"+addr+"/webhooks/workos", workosSecret, body); code != http.StatusOK {
			t.Fatalf("WorkOS delivery of %s answered %d, want 200", file, code)
		}
	}
	// A redelivery is acknowledged and stored once.
	body, _ := demoData.ReadFile("demodata/clerk_user.created.json")
	if code := deliver(t, "http://"+addr+"/webhooks/clerk", clerkKey, "msg_e2e_clerk_1", body); code != http.StatusOK {
		t.Fatalf("redelivery answered %d, want 200", code)
	}
	// A forged WorkOS delivery is refused.
	if code := deliverWorkOS(t, "http://"+addr+"/webhooks/workos", "whsec_NotTheEndToEndSecret000", body); code != http.StatusUnauthorized {
		t.Fatalf("forged WorkOS delivery answered %d, want 401", code)
	}
	// The receiver's own listener serves its metrics.
	mfs := scrapeMetrics(t, "http://"+addr)
	for labels, want := range map[[2]string]float64{{"clerk", "stored"}: 2, {"clerk", "duplicate"}: 1, {"stack", "stored"}: 1, {"workos", "stored"}: 2, {"workos", "duplicate"}: 1, {"workos", "unauthorized"}: 1} {
		got, _ := metricValue(mfs, "usersync_webhook_requests_total", map[string]string{"provider": labels[0], "outcome": labels[1]})
		if got != want {
			t.Errorf("usersync_webhook_requests_total{provider=%q,outcome=%q} = %v, want %v", labels[0], labels[1], got, want)
		}
	}
	if mfs["usersync_webhook_request_seconds"] == nil || mfs["process_cpu_seconds_total"] == nil {
		t.Error("ingest /metrics lacks usersync_webhook_request_seconds or the process collector")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	want := map[string]string{
		"user_29w83sxmDNGwOuEthce5gg56FcC":     "Example Renamed|example.renamed@example.org",
		"3da0df92-6f63-4ee2-b33d-3aa56e90d31d": "Jordan Rivera|jordan@company.co",
		"user_01HQ3D8JZ4W2B7C9E1F3G5H7JK":      "Amara Okafor-Reyes|amara@okafor.dev",
	}
	pgtest.WaitFor(t, 30*time.Second, "the three users in neon_auth.users_sync", func() (bool, error) {
		got := map[string]string{}
		rows, err := conn.Query(ctx, "SELECT id, coalesce(name, '') || '|' || coalesce(email, '') FROM neon_auth.users_sync")
		if err != nil {
			return false, err
		}
		for rows.Next() {
			var id, v string
			if err := rows.Scan(&id, &v); err != nil {
				return false, err
			}
			got[id] = v
		}
		return fmt.Sprint(got) == fmt.Sprint(want), rows.Err()
	})
	var outboxRows, historyRows int
	if err := conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM neon_auth.outbox), (SELECT count(*) FROM neon_auth.users_sync_history)").
		Scan(&outboxRows, &historyRows); err != nil {
		t.Fatal(err)
	}
	if outboxRows != 5 || historyRows != 5 {
		t.Errorf("outbox %d rows, history %d rows; want 5 and 5 (each redelivery stored once)", outboxRows, historyRows)
	}
	if code := runner.terminate(t); code != 0 {
		t.Errorf("replicator run exited %d on SIGTERM, want 0", code)
	}
	if code := ingest.terminate(t); code != 0 {
		t.Errorf("replicator ingest exited %d on SIGTERM, want 0", code)
	}
	password := strings.SplitN(strings.SplitN(strings.TrimPrefix(url, "postgres://"), "@", 2)[0], ":", 2)[1]
	for name, p := range map[string]*process{"ingest": ingest, "run": runner} {
		logs := p.output()
		for _, s := range []string{password, clerkSecret, stackSecret, workosSecret, strings.TrimPrefix(workosSecret, "whsec_"), base64.StdEncoding.EncodeToString(clerkKey), base64.StdEncoding.EncodeToString(stackKey)} {
			if strings.Contains(logs, s) {
				t.Errorf("%s logs contain a secret (%q):\n%s", name, s, logs)
			}
		}
	}
}
