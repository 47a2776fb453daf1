package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a process of the real binary (replicator run or ingest), its
// JSON logs going to a file that is also scanned for lifecycle messages.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	exit    int // exit code once done; -1 when a signal ended it

	mu        sync.Mutex
	lastState string // the last lifecycle message logged: streaming, standing by, ...
	states    map[string]int
}

// lifecycle maps the replicator's log messages to states.
var lifecycle = map[string]string{
	"streaming": "streaming",
	"slot is in use by another instance; standing by to take over": "standing by",
	"replication interrupted; reconnecting":                        "reconnecting",
	"stopped":                                                      "stopped",
}

func startProc(name, bin, logDir string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, logPath: logPath, done: make(chan struct{}), states: map[string]int{}}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = f
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = f.Write(append(line, '\n'))
			var rec struct {
				Msg string `json:"msg"`
			}
			if json.Unmarshal(line, &rec) == nil {
				if st, ok := lifecycle[rec.Msg]; ok {
					p.mu.Lock()
					p.lastState = st
					p.states[st]++
					p.mu.Unlock()
				}
			}
		}
	}()
	go func() {
		<-scanned
		_ = p.cmd.Wait()
		p.exit = p.cmd.ProcessState.ExitCode()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) state() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastState
}

func (p *proc) count(state string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.states[state]
}

func (p *proc) signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// kill9 kills the process and waits until it is gone.
func (p *proc) kill9() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits; a process still running after timeout is
// killed and reported.
func (p *proc) stop(timeout time.Duration) error {
	if p.exited() {
		return nil
	}
	p.signal(syscall.SIGCONT) // a frozen process cannot act on SIGTERM
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.exit != 0 {
			return fmt.Errorf("%s exited %d after SIGTERM (log %s)", p.name, p.exit, p.logPath)
		}
		return nil
	case <-time.After(timeout):
		p.kill9()
		return fmt.Errorf("%s did not exit within %s of SIGTERM (log %s)", p.name, timeout, p.logPath)
	}
}

// waitState waits until the process logs state, counting from after seen
// occurrences, or timeout passes.
func (p *proc) waitState(state string, seen int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.count(state) > seen {
			return true
		}
		if p.exited() {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// logHas reports whether the process's log file contains s.
func (p *proc) logHas(s string) bool {
	data, err := os.ReadFile(p.logPath)
	return err == nil && strings.Contains(string(data), s)
}
