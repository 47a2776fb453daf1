package replicator

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// childEnv makes the test binary run the replicator instead of the tests,
// so that a test can kill it with SIGKILL, pause it with SIGSTOP or stop it
// with SIGTERM like a real process.
const childEnv = "USERSYNC_TEST_CHILD"

// runChild is the test binary's main when childEnv is 1: it builds a Config
// from DATABASE_URL, USERSYNC_TEST_SLOT and USERSYNC_TEST_BATCH (and takes
// USERSYNC_TEST_IDLE_TX_TIMEOUT for the apply connection), logs JSON to
// stderr and runs the replicator until SIGINT/SIGTERM. A second signal kills
// it at once.
func runChild() int {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{DatabaseURL: os.Getenv("DATABASE_URL"), Slot: os.Getenv("USERSYNC_TEST_SLOT"), Logger: logger}
	if s := os.Getenv("USERSYNC_TEST_BATCH"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			logger.Error("USERSYNC_TEST_BATCH is not a number", "value", s)
			return 2
		}
		cfg.BatchSize = n
	}
	if s := os.Getenv("USERSYNC_TEST_IDLE_TX_TIMEOUT"); s != "" {
		// Shorter than the default, so that a test pausing an instance
		// inside an apply sees the server end its transaction soon.
		applyParams["idle_in_transaction_session_timeout"] = s
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // restore the default action: a second signal ends the process
	}()
	if err := Run(ctx, cfg); err != nil {
		logger.Error("run failed", "error", err)
		return 1
	}
	return 0
}

// child is a replicator running in a subprocess of the test.
type child struct {
	t    testing.TB
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{} // closed when the process has exited
	code int           // exit code once done; -1 when ended by a signal
}

// startChild re-executes the test binary as a replicator on url. extraEnv
// holds NAME=value pairs such as USERSYNC_TEST_BATCH=10. The process is
// killed when the test ends, if it still runs.
func startChild(t testing.TB, url string, extraEnv ...string) *child {
	t.Helper()
	c := &child{t: t, logs: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(append(os.Environ(), childEnv+"=1", "DATABASE_URL="+url), extraEnv...)
	c.cmd.Stderr = c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start replicator child: %v", err)
	}
	go func() {
		_ = c.cmd.Wait()
		c.code = c.cmd.ProcessState.ExitCode()
		close(c.done)
	}()
	t.Cleanup(func() {
		if !c.exited() {
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		if strings.Contains(c.logs.String(), "DATA RACE") {
			t.Errorf("replicator child %d hit a data race:\n%s", c.pid(), c.logs.String())
		} else if t.Failed() {
			t.Logf("logs of replicator child %d:\n%s", c.pid(), c.logs.String())
		}
	})
	return c
}

// startChild starts a replicator subprocess on db and its slot.
func (db *testDB) startChild(extraEnv ...string) *child {
	db.t.Helper()
	return startChild(db.t, db.url, append([]string{"USERSYNC_TEST_SLOT=" + db.slot}, extraEnv...)...)
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the child.
func (c *child) signal(sig os.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v to replicator child %d: %v", sig, c.pid(), err)
	}
}

// kill9 kills the child with SIGKILL and waits until it is gone.
func (c *child) kill9() {
	c.t.Helper()
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("replicator child %d still runs 10s after SIGKILL", c.pid())
	}
}

// wait waits up to timeout for the child to exit and returns its exit code
// (-1 when a signal ended it).
func (c *child) wait(timeout time.Duration) int {
	c.t.Helper()
	select {
	case <-c.done:
		return c.code
	case <-time.After(timeout):
		c.t.Fatalf("replicator child %d did not exit within %s; logs:\n%s", c.pid(), timeout, c.logs.String())
		return 0
	}
}

// logsSince returns what the child logged after the first n bytes.
func (c *child) logsSince(n int) string {
	s := c.logs.String()
	if n > len(s) {
		return ""
	}
	return s[n:]
}

// localPorts returns the local TCP ports of the child's sockets, read from
// /proc: the way to tell which walsender serves which child.
func (c *child) localPorts() (map[int]bool, error) {
	dir := fmt.Sprintf("/proc/%d", c.pid())
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	ports := map[int]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(dir, "net", table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			if port, err := strconv.ParseInt(fields[1][i+1:], 16, 32); err == nil {
				ports[int(port)] = true
			}
		}
		_ = f.Close()
	}
	return ports, nil
}

// walsenderPID returns the PID of the walsender serving the child, or 0
// when the child has no replication connection.
func (c *child) walsenderPID(ctx context.Context, conn *pgx.Conn) (int32, error) {
	ports, err := c.localPorts()
	if err != nil {
		return 0, err
	}
	rows, err := conn.Query(ctx, `SELECT pid, client_port FROM pg_stat_replication WHERE client_port IS NOT NULL`)
	if err != nil {
		return 0, err
	}
	var pid, port int32
	var found int32
	_, err = pgx.ForEachRow(rows, []any{&pid, &port}, func() error {
		if ports[int(port)] {
			found = pid
		}
		return nil
	})
	return found, err
}

// slotActivePID returns the PID of the walsender holding slot, 0 when the
// slot is inactive, and an error when it does not exist.
func slotActivePID(ctx context.Context, conn *pgx.Conn, slot string) (int32, error) {
	var pid *int32
	if err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid); err != nil {
		return 0, err
	}
	if pid == nil {
		return 0, nil
	}
	return *pid, nil
}

// TestRun_ChildStartsAndStops checks the child-process harness itself: the
// child streams, logs JSON, and exits 0 on SIGINT.
func TestRun_ChildStartsAndStops(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	c := db.startChild()
	waitLogged(t, c.logs, 60*time.Second, `"msg":"streaming"`)
	c.signal(syscall.SIGINT)
	if code := c.wait(30 * time.Second); code != 0 {
		t.Fatalf("replicator child exited %d after SIGINT, want 0; logs:\n%s", code, c.logs.String())
	}
}

// waitLogged waits until logs contain want.
func waitLogged(t testing.TB, logs *syncBuffer, timeout time.Duration, want string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %q in the replicator's logs:\n%s", timeout, want, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
