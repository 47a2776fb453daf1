package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildReplicator builds ./cmd/replicator of this module into dir, so that
// the benchmark drives the binary a user runs.
func buildReplicator(ctx context.Context, dir string) (string, error) {
	bin := dir + "/replicator"
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/usersync/usersync/cmd/replicator").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/replicator: %w\n%s", err, out)
	}
	return bin, nil
}

// runOnce runs a short replicator command (migrate) to completion.
func runOnce(ctx context.Context, bin, databaseURL string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+databaseURL)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("replicator %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// replicatorProcess is `replicator run` running as its own process, with
// its JSON logs written to a file, the catch-up's log line watched for, and
// its peak resident size (VmHWM) sampled until it exits.
type replicatorProcess struct {
	cmd     *exec.Cmd
	started time.Time
	logs    *logWatcher
	done    chan struct{} // closed when the process has exited
	waitErr error
	sampler sync.WaitGroup
	mu      sync.Mutex
	hwmKB   int64
}

// startReplicator starts `replicator run` on databaseURL. The URL goes in
// the environment, not the arguments, where ps would show its password.
func startReplicator(bin, databaseURL, logPath string) (*replicatorProcess, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("replicator log: %w", err)
	}
	p := &replicatorProcess{
		cmd:  exec.Command(bin, "--log-format", "json", "run"),
		logs: &logWatcher{file: logFile, caughtUp: make(chan string, 1)},
		done: make(chan struct{}),
	}
	p.cmd.Env = append(os.Environ(), "DATABASE_URL="+databaseURL)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start replicator: %w", err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	p.sampler.Add(1)
	go p.sampleRSS()
	return p, nil
}

// sampleRSS keeps the largest VmHWM seen until the process exits; VmHWM is
// itself a high-water mark, so the last sample holds the peak so far.
func (p *replicatorProcess) sampleRSS() {
	defer p.sampler.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		p.sampleOnce()
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
	}
}

func (p *replicatorProcess) sampleOnce() {
	kb, err := vmHWM(p.cmd.Process.Pid)
	if err != nil {
		return // exited between two samples
	}
	p.mu.Lock()
	p.hwmKB = max(p.hwmKB, kb)
	p.mu.Unlock()
}

// vmHWM reads the peak resident set size of pid, in KiB.
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// exited reports whether the process has ended, with an error saying how.
func (p *replicatorProcess) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("replicator exited unexpectedly (%v)%s", p.waitErr, p.logs.tail())
	default:
		return nil
	}
}

// caughtUp waits for the "caught up with the outbox" log line and returns
// its took field.
func (p *replicatorProcess) caughtUp(ctx context.Context, timeout time.Duration) (string, error) {
	select {
	case took := <-p.logs.caughtUp:
		return took, nil
	case <-p.done:
		return "", p.exited()
	case <-time.After(timeout):
		return "", fmt.Errorf("replicator logged no catch-up within %s%s", timeout, p.logs.tail())
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// stop sends SIGTERM, waits for a clean exit, and returns the peak RSS in KiB.
func (p *replicatorProcess) stop() (int64, error) {
	p.sampleOnce()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, fmt.Errorf("signal replicator: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.kill()
		return 0, fmt.Errorf("replicator did not exit within a minute of SIGTERM%s", p.logs.tail())
	}
	p.sampler.Wait()
	if p.waitErr != nil {
		return 0, fmt.Errorf("replicator exited with %v after SIGTERM%s", p.waitErr, p.logs.tail())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hwmKB, nil
}

// kill ends the process at once; it is safe to call after it exited.
func (p *replicatorProcess) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.sampler.Wait()
}

// logWatcher receives the replicator's output: it keeps it in a file and
// its last lines for error messages, and reports the catch-up's log line.
type logWatcher struct {
	mu       sync.Mutex
	file     *os.File
	partial  []byte
	last     []string
	caughtUp chan string
}

func (w *logWatcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.file.Write(b)
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(w.partial[:i])
		w.partial = w.partial[i+1:]
	}
	return len(b), nil
}

func (w *logWatcher) line(b []byte) {
	w.last = append(w.last, string(b))
	if len(w.last) > 20 {
		w.last = w.last[1:]
	}
	var entry struct {
		Msg  string `json:"msg"`
		Took string `json:"took"`
	}
	if json.Unmarshal(b, &entry) == nil && entry.Msg == "caught up with the outbox" {
		select {
		case w.caughtUp <- entry.Took:
		default:
		}
	}
}

// tail returns the last log lines, to explain a failure.
func (w *logWatcher) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.last) == 0 {
		return ""
	}
	return "\nlast replicator log lines:\n  " + strings.Join(w.last, "\n  ")
}
