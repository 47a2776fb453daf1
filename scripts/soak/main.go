// Command soak runs the real replicator binaries against a throwaway
// PostgreSQL for a while under realistic load and random faults, then
// checks SPEC.md's invariants and prints what it injected and how long
// recovery took. `make soak DURATION=30m` runs it; SEED=n replays a run's
// schedule of faults and events (timing still differs run to run).
//
//	go run ./scripts/soak -duration 10m -seed 42
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/netfault"
	"github.com/usersync/usersync/internal/pgcluster"
	"github.com/usersync/usersync/outbox/webhook"
	"github.com/usersync/usersync/replicator"
)

func main() {
	duration := flag.Duration("duration", 30*time.Minute, "how long to inject faults under load")
	seed := flag.Uint64("seed", 0, "random seed; 0 picks one (printed, to replay with -seed)")
	bin := flag.String("bin", "bin/replicator", "the replicator binary to run")
	samplesDir := flag.String("samples", "outbox/testdata/providers", "directory of the providers' sample webhook bodies")
	writers := flag.Int("writers", 3, "concurrent writers inserting into the outbox")
	only := flag.String("faults", "", "inject only the faults whose names contain one of these comma-separated words (e.g. blackhole,slot)")
	flag.Parse()
	if err := selectFaults(*only); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if *seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*seed = binary.LittleEndian.Uint64(b[:]) >> 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code := run(ctx, config{duration: *duration, seed: *seed, bin: *bin, samples: *samplesDir, writers: *writers})
	os.Exit(code)
}

type config struct {
	duration time.Duration
	seed     uint64
	bin      string
	samples  string
	writers  int
}

// soak is the state of one run.
type soak struct {
	cfg        config
	cluster    *pgcluster.Cluster
	proxy      *netfault.Proxy
	directURL  string // for the writers, ingest and the checks
	proxiedURL string // for the replicators: through the fault proxy
	logDir     string
	faults     map[string]*faultStats
	started    time.Time

	mu          sync.Mutex
	replicators []*proc
	nextID      int
	anomalies   []string
}

func (s *soak) logf(format string, args ...any) {
	fmt.Printf("[%7s] %s\n", time.Since(s.started).Round(time.Second), fmt.Sprintf(format, args...))
}

// anomaly records something that went wrong without stopping the run; any
// anomaly fails it.
func (s *soak) anomaly(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.logf("ANOMALY: %s", msg)
	s.mu.Lock()
	s.anomalies = append(s.anomalies, msg)
	s.mu.Unlock()
}

func run(ctx context.Context, cfg config) int {
	s := &soak{cfg: cfg, faults: map[string]*faultStats{}, started: time.Now()}
	for _, f := range faults {
		s.faults[f.name] = &faultStats{}
	}
	fmt.Printf("soak: seed %d (replay with SEED=%d), duration %s\n", cfg.seed, cfg.seed, cfg.duration)
	if _, err := os.Stat(cfg.bin); err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v: build it first (make build)\n", err)
		return 2
	}
	var err error
	if s.logDir, err = os.MkdirTemp("", "usersync-soak-"); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	fmt.Printf("soak: process logs in %s\n", s.logDir)
	if err := s.setUp(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer s.tearDown()
	ok := s.soak(ctx)
	if ok {
		_ = os.RemoveAll(s.logDir)
		return 0
	}
	fmt.Printf("soak: FAILED; logs kept in %s\n", s.logDir)
	return 1
}

// setUp starts PostgreSQL (PG_BINDIR chooses the version), migrates it and
// puts the fault proxy in front of it.
func (s *soak) setUp(ctx context.Context) error {
	var err error
	s.cluster, err = pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{
		"wal_sender_timeout": "10s", // a frozen or partitioned instance loses the slot within seconds
		"max_wal_size":       "256MB",
	}})
	if err != nil {
		return err
	}
	s.directURL = s.cluster.URL("postgres")
	conn, err := pgx.Connect(ctx, s.directURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		return err
	}
	fmt.Printf("soak: PostgreSQL %s from %s\n", version, s.cluster.BinDir())
	if _, err := replicator.Migrate(ctx, conn); err != nil {
		return err
	}
	if s.proxy, err = netfault.Start(fmt.Sprintf("127.0.0.1:%d", s.cluster.Port())); err != nil {
		return err
	}
	u, _ := url.Parse(s.directURL)
	u.Host = s.proxy.Addr()
	s.proxiedURL = u.String()
	return nil
}

func (s *soak) tearDown() {
	s.mu.Lock()
	procs := s.replicators
	s.mu.Unlock()
	for _, p := range procs {
		if !p.exited() {
			p.kill9()
		}
	}
	if s.proxy != nil {
		_ = s.proxy.Close()
	}
	if s.cluster != nil {
		_ = s.cluster.Destroy(context.Background())
	}
}

// soak runs the load and the nemesis for the duration, heals everything,
// waits for the replicator to catch up and checks the invariants.
func (s *soak) soak(ctx context.Context) bool {
	keys, env := map[string][]byte{}, []string{}
	for _, p := range []string{"clerk", "stack", "workos", "generic"} {
		key := make([]byte, 24)
		_, _ = rand.Read(key)
		secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
		if p == "workos" { // WorkOS secrets are used as they are
			secret = hex.EncodeToString(key)
			key = []byte(secret)
		}
		keys[p] = key
		env = append(env, webhook.SecretEnv(p)+"="+secret)
	}
	addr, err := freeAddr()
	if err != nil {
		s.anomaly("choose a port for ingest: %v", err)
		return false
	}
	ingest, err := startProc("ingest", s.cfg.bin, s.logDir, append(env, "DATABASE_URL="+s.directURL), "--log-format", "json", "ingest", "--listen", addr)
	if err != nil {
		s.anomaly("%v", err)
		return false
	}
	defer func() { _ = ingest.stop(30 * time.Second) }()
	if err := s.ensureReplicator(); err != nil {
		s.anomaly("%v", err)
		return false
	}

	smp, err := loadSamples(s.cfg.samples)
	if err != nil {
		s.anomaly("%v", err)
		return false
	}
	epoch := time.Now().Add(-time.Hour).Truncate(time.Second)
	st := &loadStats{}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range s.cfg.writers {
		gen := &eventGen{rng: newRand(s.cfg.seed, uint64(10+w)), samples: smp, users: 2000, epoch: epoch}
		wg.Go(func() { writer(loadCtx, s.directURL, w, gen, st) })
	}
	d := &deliverer{url: "http://" + addr, keys: keys, st: st, acked: map[string]delivery{},
		gen: &eventGen{rng: newRand(s.cfg.seed, 2), samples: smp, users: 2000, epoch: epoch}}
	wg.Go(func() { d.run(loadCtx) })

	nemCtx, stopNemesis := context.WithTimeout(ctx, s.cfg.duration)
	nemErr := s.nemesis(nemCtx, newRand(s.cfg.seed, 1))
	stopNemesis()
	stopLoad()
	wg.Wait()
	if nemErr != nil {
		s.anomaly("nemesis: %v", nemErr)
	}

	// Heal everything and let one replicator finish.
	s.proxy.Restore()
	s.proxy.SetLatency(0)
	if err := s.ensureReplicator(); err != nil {
		s.anomaly("%v", err)
	}
	caughtUp, err := s.waitCaughtUp(ctx, 5*time.Minute)
	if err != nil {
		s.anomaly("final catch-up: %v", err)
	}
	res, err := check(ctx, s.directURL, d.ackedMessages())
	if err != nil {
		s.anomaly("check: %v", err)
	}
	for _, p := range s.running() {
		if err := p.stop(time.Minute); err != nil {
			s.anomaly("%v", err)
		}
	}
	s.summary(st, res, caughtUp)
	return len(s.anomalies) == 0 && res.ok()
}

// waitCaughtUp waits until every outbox row is accounted for.
func (s *soak) waitCaughtUp(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var pending int64
		err := s.withConn(ctx, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.outbox o
				WHERE NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
				AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)`).Scan(&pending)
		})
		if err == nil && pending == 0 {
			return time.Since(began), nil
		}
		if ctx.Err() != nil {
			return time.Since(began), fmt.Errorf("%d outbox rows still pending after %s (last error: %v)", pending, timeout, err)
		}
		pause(ctx, 200*time.Millisecond)
	}
}

// startReplicator starts one more `replicator run` through the proxy.
func (s *soak) startReplicator() (*proc, error) {
	s.mu.Lock()
	s.nextID++
	name := fmt.Sprintf("replicator-%d", s.nextID)
	s.mu.Unlock()
	p, err := startProc(name, s.cfg.bin, s.logDir, []string{"DATABASE_URL=" + s.proxiedURL}, "--log-format", "json", "run")
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.replicators = append(s.replicators, p)
	s.mu.Unlock()
	return p, nil
}

// ensureReplicator starts a replicator unless one runs; one that exited on
// its own is an anomaly (run only returns on a configuration error).
func (s *soak) ensureReplicator() error {
	for _, p := range s.all() {
		if p.exited() {
			s.anomaly("%s exited on its own with %d (log %s)", p.name, p.exit, p.logPath)
			s.forget(p)
		}
	}
	if len(s.running()) > 0 {
		return nil
	}
	_, err := s.startReplicator()
	return err
}

func (s *soak) all() []*proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*proc(nil), s.replicators...)
}

func (s *soak) running() []*proc {
	var out []*proc
	for _, p := range s.all() {
		if !p.exited() {
			out = append(out, p)
		}
	}
	return out
}

// others returns the running replicators other than p.
func (s *soak) others(p *proc) []*proc {
	var out []*proc
	for _, q := range s.running() {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// active returns the running replicator whose last lifecycle log line says
// it streams, or nil.
func (s *soak) active() *proc {
	for _, p := range s.running() {
		if p.state() == "streaming" {
			return p
		}
	}
	return nil
}

// forget drops a stopped replicator from the running set.
func (s *soak) forget(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.replicators {
		if q == p {
			s.replicators = append(s.replicators[:i], s.replicators[i+1:]...)
			return
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// summary prints what the run did and found.
func (s *soak) summary(st *loadStats, res checkResult, caughtUp time.Duration) {
	fmt.Printf("\n=== soak summary (seed %d, %s of faults, PostgreSQL from %s)\n", s.cfg.seed, s.cfg.duration, s.cluster.BinDir())
	fmt.Printf("load: %d events committed by %d writers (%d malformed, %d large transactions, %d duplicate inserts ignored, %d transactions failed during faults)\n",
		st.committed.Load(), s.cfg.writers, st.malformed.Load(), st.largeTx.Load(), st.duplicates.Load(), st.txFailed.Load())
	fmt.Printf("ingest: %d webhooks acknowledged (%d redeliveries of acknowledged messages), %d retried attempts (non-2xx or no answer)\n",
		st.delivered.Load(), st.redelivered.Load(), st.deliveryRetries.Load())
	fmt.Printf("\n%-60s %8s %10s %10s %10s %8s\n", "fault", "injected", "p50", "p99", "max", "stuck")
	var all []time.Duration
	injected := 0
	for _, f := range faults {
		fs := s.faults[f.name]
		injected += fs.injected
		all = append(all, fs.recovered...)
		fmt.Printf("%-60s %8d %10s %10s %10s %8d\n", f.name, fs.injected, round(percentile(fs.recovered, 50)),
			round(percentile(fs.recovered, 99)), round(percentile(fs.recovered, 100)), fs.failed)
	}
	fmt.Printf("%-60s %8d %10s %10s %10s\n", "all", injected, round(percentile(all, 50)), round(percentile(all, 99)), round(percentile(all, 100)))
	fmt.Println("(recovery: from the end of the fault until an event inserted then was folded)")
	fmt.Printf("\nfinal catch-up after the last fault: %s\n", round(caughtUp))
	fmt.Println(res.String())
	if len(s.anomalies) > 0 {
		fmt.Printf("%d anomalies:\n", len(s.anomalies))
		for _, a := range s.anomalies {
			fmt.Println("  -", a)
		}
	}
	if len(s.anomalies) == 0 && res.ok() {
		fmt.Println("RESULT: PASS — invariants held")
	} else {
		fmt.Println("RESULT: FAIL")
	}
}

func round(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(10 * time.Millisecond).String()
}
