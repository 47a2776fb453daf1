package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// fault is one kind of trouble the nemesis causes. inject returns once the
// fault is over (healed); the nemesis then measures how long until an
// event inserted at that moment is folded.
type fault struct {
	name   string
	inject func(s *soak, ctx context.Context, rng *rand.Rand) error
}

var faults = []fault{
	{"kill -9 of the active replicator", (*soak).killActive},
	{"PostgreSQL restart -m immediate", (*soak).crashPostgres},
	{"walsender terminated", (*soak).terminateWalsender},
	{"second instance started and stopped", (*soak).secondInstance},
	{"network blackhole (5-60 s)", (*soak).blackhole},
	{"network latency 150 ms each way (10-30 s)", (*soak).latency},
	{"connection resets", (*soak).resets},
	{"active instance frozen (SIGSTOP) until a standby took over", (*soak).freeze},
	{"slot invalidated by max_slot_wal_keep_size while stopped", (*soak).invalidateSlot},
}

// selectFaults keeps the faults whose names contain one of the
// comma-separated words of only (all when it is empty).
func selectFaults(only string) error {
	if only == "" {
		return nil
	}
	var kept []fault
	for _, f := range faults {
		for _, w := range strings.Split(only, ",") {
			if w = strings.TrimSpace(w); w != "" && strings.Contains(f.name, w) {
				kept = append(kept, f)
				break
			}
		}
	}
	if len(kept) == 0 {
		return fmt.Errorf("-faults %q matches no fault", only)
	}
	faults = kept
	return nil
}

// errNoActive means the fault needs a streaming instance and none was:
// nothing was injected (the last fault's recovery may still be under way).
var errNoActive = errors.New("no instance is streaming")

// faultStats is what the summary reports per fault.
type faultStats struct {
	injected  int
	recovered []time.Duration
	failed    int // not folding again within recoveryTimeout
}

const recoveryTimeout = 3 * time.Minute

// nemesis injects a random fault every few seconds until ctx ends.
func (s *soak) nemesis(ctx context.Context, rng *rand.Rand) error {
	for probe := 0; ; probe++ {
		pause(ctx, time.Duration(3+rng.IntN(10))*time.Second)
		if ctx.Err() != nil {
			return nil
		}
		f := faults[rng.IntN(len(faults))]
		s.logf("fault %d: %s", probe+1, f.name)
		st := s.faults[f.name]
		err := f.inject(s, context.WithoutCancel(ctx), rng)
		if errors.Is(err, errNoActive) {
			s.logf("  skipped: %v", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("inject %s: %w", f.name, err)
		}
		st.injected++
		took, err := s.probe(context.WithoutCancel(ctx), probe)
		if err != nil {
			st.failed++
			s.logf("  not folding again after %s: %v", f.name, err)
		} else {
			st.recovered = append(st.recovered, took)
			s.logf("  folding again %s after the fault ended", took.Round(time.Millisecond))
		}
	}
}

// probe inserts a marker event and waits until it is folded: the time the
// replicator needs to stream again after a fault.
func (s *soak) probe(ctx context.Context, n int) (time.Duration, error) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, recoveryTimeout)
	defer cancel()
	var id int64
	for {
		err := s.withConn(ctx, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id)
				VALUES ('generic', 'user.updated', jsonb_build_object('id', 'probe', 'name', $1::text), $1) RETURNING id`,
				fmt.Sprintf("probe-%d", n)).Scan(&id)
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return 0, err
		}
		pause(ctx, 100*time.Millisecond)
	}
	for {
		var folded bool
		err := s.withConn(ctx, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM neon_auth.users_sync_history WHERE outbox_id = $1)`, id).Scan(&folded)
		})
		if err == nil && folded {
			return time.Since(began), nil
		}
		if ctx.Err() != nil {
			return 0, errors.New("timed out")
		}
		pause(ctx, 20*time.Millisecond)
	}
}

// withConn runs f on a fresh direct connection.
func (s *soak) withConn(ctx context.Context, f func(*pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, s.directURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return f(conn)
}

func (s *soak) killActive(ctx context.Context, rng *rand.Rand) error {
	victim := s.active()
	if victim == nil {
		return cmp.Or(s.ensureReplicator(), errNoActive)
	}
	victim.kill9()
	s.forget(victim)
	pause(ctx, time.Duration(rng.IntN(2000))*time.Millisecond)
	return s.ensureReplicator()
}

func (s *soak) crashPostgres(ctx context.Context, rng *rand.Rand) error {
	if err := s.cluster.StopImmediate(ctx); err != nil {
		return err
	}
	pause(ctx, time.Duration(rng.IntN(3000))*time.Millisecond)
	return s.cluster.Start(ctx)
}

func (s *soak) terminateWalsender(ctx context.Context, _ *rand.Rand) error {
	return s.withConn(ctx, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_replication`)
		return err
	})
}

func (s *soak) secondInstance(ctx context.Context, rng *rand.Rand) error {
	extra, err := s.startReplicator()
	if err != nil {
		return err
	}
	pause(ctx, time.Duration(5+rng.IntN(15))*time.Second)
	// Stop one of the two, the newcomer or the old one.
	victim := extra
	if rng.IntN(2) == 0 {
		if old := s.others(extra); len(old) > 0 {
			victim = old[0]
		}
	}
	if rng.IntN(2) == 0 {
		victim.kill9()
	} else if err := victim.stop(time.Minute); err != nil {
		s.anomaly("%v", err)
	}
	s.forget(victim)
	return s.ensureReplicator()
}

func (s *soak) blackhole(ctx context.Context, rng *rand.Rand) error {
	s.proxy.Blackhole()
	pause(ctx, time.Duration(5+rng.IntN(56))*time.Second)
	s.proxy.Restore()
	return nil
}

func (s *soak) latency(ctx context.Context, rng *rand.Rand) error {
	s.proxy.SetLatency(150 * time.Millisecond)
	pause(ctx, time.Duration(10+rng.IntN(21))*time.Second)
	s.proxy.SetLatency(0)
	return nil
}

func (s *soak) resets(ctx context.Context, rng *rand.Rand) error {
	for range 1 + rng.IntN(3) {
		s.proxy.ResetAll()
		pause(ctx, time.Duration(rng.IntN(3000))*time.Millisecond)
	}
	return nil
}

// freeze stops the active instance with SIGSTOP until a standby has taken
// the slot over (the server times the frozen one's walsender out), then
// wakes it: it must stand by, not apply.
func (s *soak) freeze(ctx context.Context, rng *rand.Rand) error {
	active := s.active()
	if active == nil {
		return cmp.Or(s.ensureReplicator(), errNoActive)
	}
	standby, err := s.startReplicator()
	if err != nil {
		return err
	}
	if !standby.waitState("standing by", 0, time.Minute) {
		s.anomaly("%s did not stand by within a minute", standby.name)
	}
	seen := standby.count("streaming")
	active.signal(syscall.SIGSTOP)
	if !standby.waitState("streaming", seen, 2*time.Minute) {
		s.anomaly("the standby did not take over from the frozen instance within 2 minutes")
	}
	pause(ctx, time.Duration(rng.IntN(3000))*time.Millisecond)
	woke := active.count("standing by")
	active.signal(syscall.SIGCONT)
	if !active.waitState("standing by", woke, time.Minute) {
		s.anomaly("the woken instance %s did not stand by within a minute", active.name)
	}
	// Keep one instance: the zombie or the new owner.
	victim := standby
	if rng.IntN(2) == 0 {
		victim = active
	}
	if err := victim.stop(time.Minute); err != nil {
		s.anomaly("%v", err)
	}
	s.forget(victim)
	return s.ensureReplicator()
}

// invalidateSlot stops every replicator, lowers max_slot_wal_keep_size and
// writes WAL until the server invalidates the slot, then starts one again:
// it must recreate the slot and fold what the lost slot carried.
func (s *soak) invalidateSlot(ctx context.Context, _ *rand.Rand) error {
	for _, p := range s.running() {
		if err := p.stop(time.Minute); err != nil {
			s.anomaly("%v", err)
		}
		s.forget(p)
	}
	err := s.withConn(ctx, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, `ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`); err != nil {
			return err
		}
		defer func() {
			_, _ = conn.Exec(ctx, `ALTER SYSTEM RESET max_slot_wal_keep_size`)
			_, _ = conn.Exec(ctx, `SELECT pg_reload_conf()`)
		}()
		if _, err := conn.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS public.soak_noise (id bigserial PRIMARY KEY, v text)`); err != nil {
			return err
		}
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			var lost bool
			if err := conn.QueryRow(ctx, `SELECT COALESCE(bool_or(wal_status = 'lost'), false) FROM pg_replication_slots`).Scan(&lost); err != nil {
				return err
			}
			if lost {
				_, err := conn.Exec(ctx, `TRUNCATE public.soak_noise`)
				return err
			}
			for _, q := range []string{
				`INSERT INTO public.soak_noise (v) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 4000) g`,
				`SELECT pg_switch_wal()`, `CHECKPOINT`,
			} {
				if _, err := conn.Exec(ctx, q); err != nil {
					return err
				}
			}
		}
		return errors.New("the slot was not invalidated within 2 minutes")
	})
	if err != nil {
		return err
	}
	if err := s.ensureReplicator(); err != nil {
		return err
	}
	// The new instance must have seen the invalidation, not a slot that
	// something else recreated.
	deadline := time.Now().Add(time.Minute)
	for _, p := range s.running() {
		for !p.logHas("replication slot was invalidated") && time.Now().Before(deadline) {
			pause(ctx, 100*time.Millisecond)
		}
		if !p.logHas("replication slot was invalidated") {
			s.anomaly("%s did not warn that the slot was invalidated", p.name)
		}
	}
	return nil
}

// percentile returns the p-th percentile (0-100] of ds by the nearest-rank
// method: the smallest value with at least p% of the values at or below it.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
