package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgcluster"
)

// bench holds what the phases share: the cluster, the binary, the workload.
type bench struct {
	o       options
	bin     string
	work    string // scratch directory: the built binary, the replicator's logs
	cluster *pgcluster.Cluster
	logf    func(format string, args ...any)
	// gen produced the backfill's events; the drain continues its clock.
	gen *generator
	res *results
}

const (
	replicatorDB = "bench_replicator"
	referenceDB  = "bench_reference"
)

// run measures every figure and reports them: a table on stdout and, with
// o.Out set, benchmarks.md and the charts there. Progress goes to stderr.
func run(ctx context.Context, o options, stdout, stderr io.Writer) (_ *results, err error) {
	b := &bench{o: o, logf: func(format string, args ...any) {
		fmt.Fprintf(stderr, "bench: "+format+"\n", args...)
	}}
	b.res = &results{Started: time.Now(), Options: o}
	if b.work, err = os.MkdirTemp("", "usersync-bench-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(b.work)
	if b.bin = o.Replicator; b.bin == "" {
		b.logf("building ./cmd/replicator")
		if b.bin, err = buildReplicator(ctx, b.work); err != nil {
			return nil, err
		}
	}
	b.cluster, err = pgcluster.Start(ctx, pgcluster.Options{
		Settings: map[string]string{"track_commit_timestamp": "on"},
		Logf:     b.logf,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if derr := b.cluster.Destroy(context.WithoutCancel(ctx)); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	if err := b.measure(ctx); err != nil {
		return nil, err
	}
	b.res.Took = time.Since(b.res.Started)
	printTable(stdout, b.res)
	if o.Out != "" {
		if err := writeReport(o.Out, b.res); err != nil {
			return nil, err
		}
		b.logf("wrote %s", filepath.Join(o.Out, reportName))
	}
	if !b.res.Backfill.Check.Matched() {
		// The figures are printed and written, but a ratio against a
		// reference that computes something else must not pass unnoticed.
		return b.res, errors.New("the reference's results differ from the replicator's (first differences above): " +
			"one of them does not fold as SPEC.md says")
	}
	return b.res, nil
}

func (b *bench) measure(ctx context.Context) error {
	if err := b.describeMachine(ctx); err != nil {
		return err
	}
	if err := b.backfill(ctx); err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	p, err := b.drain(ctx)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	defer p.kill()
	if err := b.live(ctx, p); err != nil {
		return fmt.Errorf("live: %w", err)
	}
	return nil
}

func (b *bench) describeMachine(ctx context.Context) error {
	b.res.Machine = describeMachine()
	conn, err := connect(ctx, b.cluster.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, "SHOW server_version").Scan(&b.res.Machine.PostgreSQL)
}

func (b *bench) workload() workloadConfig {
	// Backfill and drain together span a week of event time ending a day
	// ago, so that the live events, stamped with the wall clock, are newer.
	span := 7 * 24 * time.Hour
	return workloadConfig{
		Users:       b.o.users(),
		Seed:        b.o.Seed,
		Start:       time.Now().Add(-span - 24*time.Hour).Truncate(time.Second),
		Step:        span / time.Duration(2*b.o.events()),
		LateRatio:   0.05,
		LateBy:      48 * time.Hour,
		TieRatio:    0.01,
		DeleteRatio: b.o.DeleteRatio,
	}
}

// createDatabase creates a database and migrates it with the binary.
func (b *bench) createDatabase(ctx context.Context, name string) (*pgx.Conn, error) {
	admin, err := connect(ctx, b.cluster.URL("postgres"))
	if err != nil {
		return nil, err
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+name)
	admin.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	if err := runOnce(ctx, b.bin, b.cluster.URL(name), "migrate"); err != nil {
		return nil, err
	}
	return connect(ctx, b.cluster.URL(name))
}

// eventSource feeds generated events to COPY.
type eventSource struct {
	gen          *generator
	left         int
	cur          event
	payloadBytes int64
	withReceived bool
}

func (s *eventSource) Next() bool {
	if s.left == 0 {
		return false
	}
	s.left--
	s.cur = s.gen.next()
	s.payloadBytes += int64(len(s.cur.Payload))
	return true
}

func (s *eventSource) Values() ([]any, error) {
	v := []any{"clerk", s.cur.EventType, json.RawMessage(s.cur.Payload), s.cur.EventID, s.cur.OccurredAt}
	if s.withReceived {
		v = append(v, s.cur.ReceivedAt)
	}
	return v, nil
}

func (s *eventSource) Err() error { return nil }

// loadOutbox copies n generated events into the outbox in one transaction
// and returns the bytes of payload written.
func loadOutbox(ctx context.Context, conn *pgx.Conn, gen *generator, n int) (int64, error) {
	src := &eventSource{gen: gen, left: n, withReceived: true}
	_, err := conn.CopyFrom(ctx, pgx.Identifier{"neon_auth", "outbox"},
		[]string{"provider", "event_type", "payload", "event_id", "occurred_at", "received_at"}, src)
	if err != nil {
		return 0, fmt.Errorf("load outbox: %w", err)
	}
	return src.payloadBytes, nil
}

// timeout allows a phase of n events to run at 300 events/s and more.
func timeout(n int) time.Duration { return time.Minute + time.Duration(n)*time.Second/300 }
