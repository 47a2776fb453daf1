package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox/webhook"
)

// These tests attack a `replicator ingest` process from outside, as an
// unauthenticated client on the internet could, and check that signed
// deliveries still get through and that its memory stays bounded.

// exposedReceiver is `replicator ingest` on a migrated database, serving
// /webhooks/generic.
type exposedReceiver struct {
	proc *process
	addr string
	key  []byte
	conn *pgx.Conn
}

// startExposedReceiver runs ingest with the open-file limit nofile (0: the
// test's own), so that a test can reproduce a host with a small limit.
func startExposedReceiver(t *testing.T, nofile int) *exposedReceiver {
	t.Helper()
	url := pgtest.NewDatabase(t)
	key := make([]byte, webhook.MinKeyBytes)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	env := []string{"DATABASE_URL=" + url, "GENERIC_WEBHOOK_SECRET=whsec_" + base64.StdEncoding.EncodeToString(key)}
	migrate := exec.Command(replicatorBinary(t), "migrate")
	migrate.Env = append(os.Environ(), env...)
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	r := &exposedReceiver{addr: freeAddr(t), key: key}
	args := []string{"--log-format", "json", "ingest", "--listen", r.addr}
	cmd := exec.Command(replicatorBinary(t), args...)
	if nofile > 0 {
		// The shell's ulimit sets the soft and the hard limit, so the Go
		// runtime cannot raise it back; exec keeps the pid.
		cmd = exec.Command("/bin/sh", append([]string{"-c", `ulimit -n ` + strconv.Itoa(nofile) + ` && exec "$0" "$@"`, replicatorBinary(t)}, args...)...)
	}
	r.proc = startCommand(t, cmd, env)
	pgtest.WaitFor(t, 20*time.Second, "the receiver to answer /healthz", func() (bool, error) {
		resp, err := http.Get("http://" + r.addr + "/healthz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	r.conn = conn
	return r
}

// deliverSigned posts one signed generic event on a connection of its own
// and checks that it is answered 200 and stored once, within wait.
func (r *exposedReceiver) deliverSigned(t *testing.T, wait time.Duration) time.Duration {
	t.Helper()
	id := fmt.Sprintf("msg_exposure_%d", time.Now().UnixNano())
	body := []byte(`{"type":"user.created","data":{"id":"u_` + id + `","name":"Ada","email":"ada@example.com"}}`)
	req, err := http.NewRequest(http.MethodPost, "http://"+r.addr+"/webhooks/generic", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	req.Header.Set("svix-id", id)
	req.Header.Set("svix-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("svix-signature", webhook.Sign(r.key, id, now, body))
	client := &http.Client{Timeout: wait, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("signed delivery: %v", err)
	}
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("signed delivery answered %d, want 200", resp.StatusCode)
	}
	var n int
	if err := r.conn.QueryRow(context.Background(), "SELECT count(*) FROM neon_auth.outbox WHERE event_id = $1", id).Scan(&n); err != nil || n != 1 {
		t.Fatalf("outbox rows for %s = %d, %v; want 1", id, n, err)
	}
	return took
}

// idleFlood holds connections open to addr the cheap way: most send one
// GET /healthz and never another request (idle keep-alive), some send
// nothing. After the first hold it keeps opening more until stopped or
// maxOpened, so the receiver is under pressure the whole time; it closes
// none of them before it stops.
type idleFlood struct {
	opened atomic.Int64
	stop   chan struct{}
	done   chan struct{}
}

func startIdleFlood(t *testing.T, addr string, hold, maxOpened int) *idleFlood {
	t.Helper()
	f := &idleFlood{stop: make(chan struct{}), done: make(chan struct{})}
	var conns []net.Conn
	open := func() bool {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return false
		}
		if f.opened.Add(1)%10 != 0 {
			_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n")
		}
		conns = append(conns, c)
		return true
	}
	for len(conns) < hold {
		if !open() {
			t.Fatalf("could not open idle connection %d", f.opened.Load())
		}
	}
	go func() {
		defer close(f.done)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for f.opened.Load() < int64(maxOpened) {
			select {
			case <-f.stop:
				return
			case <-tick.C:
				open()
			}
		}
		<-f.stop
	}()
	t.Cleanup(f.halt)
	return f
}

func (f *idleFlood) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
}

// TestIngest_IdleConnectionFlood reproduces the review's lock-out on a host
// whose open-file limit is 1024: 2,000 idle connections held open (and more
// opened all along) used to exhaust the descriptors, so accept failed and a
// signed delivery timed out. Now the connection bound is lowered to fit the
// limit and the longest-idle connection makes room, so each delivery is
// stored within seconds.
func TestIngest_IdleConnectionFlood(t *testing.T) {
	const nofile, hold = 1024, 2000
	r := startExposedReceiver(t, nofile)
	flood := startIdleFlood(t, r.addr, hold, 3*hold)
	for i := range 5 {
		took := r.deliverSigned(t, 15*time.Second)
		t.Logf("delivery %d stored in %s with %d idle connections opened so far", i+1, took.Round(time.Millisecond), flood.opened.Load())
	}
	flood.halt()
	logs := r.proc.output()
	if !strings.Contains(logs, "connection bound lowered to fit the open-file limit") {
		t.Errorf("no warning that --max-conns was lowered to fit ulimit -n %d:\n%.2000s", nofile, logs)
	}
	if strings.Contains(logs, "too many open files") {
		t.Errorf("the receiver ran out of file descriptors:\n%.2000s", logs)
	}
	if code := r.proc.terminate(t); code != 0 {
		t.Errorf("ingest exited %d on SIGTERM, want 0", code)
	}
}

// floodPeakRSS bounds the receiver's peak resident size (VmHWM) through
// TestIngest_UnsignedBodyFlood, with the default limits: 16 MiB of bodies
// being read at once, 1,024 connections. docs/webhooks.md quotes it.
const floodPeakRSS = 160 << 20

// TestIngest_UnsignedBodyFlood sends 1,500 concurrent unauthenticated
// requests of 1 MiB - 1 bytes: without signature headers, with forged ones
// (refusable only once the body is read), and forged with a chunked body of
// undeclared length. Each sends all but the last KiB of its body, then waits
// until every request has been answered or is waiting too, so that the
// receiver faces all of them at once, as from slow clients. The review saw
// such a flood take the process to 1.3-2.7 GB; the receiver's peak RSS must
// stay under floodPeakRSS, and a signed delivery must be stored afterwards.
func TestIngest_UnsignedBodyFlood(t *testing.T) {
	const requests = 1500
	r := startExposedReceiver(t, 0)
	before := rss(t, r.proc.cmd.Process.Pid, "VmRSS")
	body := bytes.Repeat([]byte("x"), webhook.DefaultMaxBody-1)
	forged := func(h http.Header) {
		now := time.Now()
		h.Set("svix-id", fmt.Sprintf("msg_forged_%d", now.UnixNano()))
		h.Set("svix-timestamp", strconv.FormatInt(now.Unix(), 10))
		h.Set("svix-signature", "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32)))
	}
	var waiting, answered atomic.Int64
	release := make(chan struct{})
	kinds := [...]string{"unsigned", "forged", "forged chunked"}
	reqs := make([]*http.Request, requests)
	for i := range reqs {
		var rd io.Reader = &pausingReader{data: body, pauseAt: len(body) - 1024, waiting: &waiting, release: release}
		length := int64(len(body))
		if kinds[i%3] == "forged chunked" {
			length = -1 // sent chunked
		}
		req, err := http.NewRequest(http.MethodPost, "http://"+r.addr+"/webhooks/generic", rd)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = length
		if kinds[i%3] != "unsigned" {
			forged(req.Header)
		}
		reqs[i] = req
	}
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var (
		mu      sync.Mutex
		answers = map[string]int{}
		wg      sync.WaitGroup
	)
	for i, req := range reqs {
		wg.Go(func() {
			outcome := "connection error"
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
				outcome = strconv.Itoa(resp.StatusCode)
			}
			answered.Add(1)
			mu.Lock()
			answers[kinds[i%3]+": "+outcome]++
			mu.Unlock()
		})
	}
	deadline := time.Now().Add(60 * time.Second)
	for waiting.Load()+answered.Load() < requests && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	held := rss(t, r.proc.cmd.Process.Pid, "VmRSS")
	t.Logf("%d requests waiting to send their last KiB, %d answered; RSS %d MiB", waiting.Load(), answered.Load(), held>>20)
	close(release)
	wg.Wait()
	peak := rss(t, r.proc.cmd.Process.Pid, "VmHWM")
	t.Logf("RSS %d MiB before the flood, peak %d MiB (bound %d MiB); answers: %v", before>>20, peak>>20, floodPeakRSS>>20, answers)
	if peak > floodPeakRSS {
		t.Errorf("peak RSS %d MiB, want under %d MiB", peak>>20, floodPeakRSS>>20)
	}
	for outcome, n := range answers {
		kind, status, _ := strings.Cut(outcome, ": ")
		switch {
		case status == "401", status == "503" && kind != "unsigned", status == "connection error":
		default:
			t.Errorf("%d %s requests answered %s, want 401, 503 (forged) or a closed connection", n, kind, status)
		}
	}
	if answers["forged: 503"]+answers["forged chunked: 503"] == 0 {
		t.Errorf("no forged request got 503: the flood never filled the body memory bound")
	}
	r.deliverSigned(t, 15*time.Second)
	if code := r.proc.terminate(t); code != 0 {
		t.Errorf("ingest exited %d on SIGTERM, want 0", code)
	}
}

// pausingReader yields data, but stops at pauseAt (counting itself in
// waiting) until release is closed.
type pausingReader struct {
	data    []byte
	off     int
	pauseAt int
	paused  bool
	waiting *atomic.Int64
	release chan struct{}
}

func (p *pausingReader) Read(b []byte) (int, error) {
	if p.off == p.pauseAt && !p.paused {
		p.paused = true
		p.waiting.Add(1)
		<-p.release
	}
	if p.off == len(p.data) {
		return 0, io.EOF
	}
	end := len(p.data)
	if p.off < p.pauseAt {
		end = p.pauseAt
	}
	n := copy(b, p.data[p.off:end])
	p.off += n
	return n, nil
}

// rss reads a size field (VmRSS, VmHWM) of /proc/PID/status, in bytes.
func rss(t *testing.T, pid int, field string) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", field, rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
