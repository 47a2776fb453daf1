package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usersync/usersync/internal/pgcluster"
	"github.com/usersync/usersync/outbox"
)

// TestGenerator_ClerkEnvelopes checks that the workload is what the
// benchmark says: Clerk envelopes of about 1.1 KB that the replicator's
// decoder folds (none rejected), reproducible from the seed, with some
// events late enough to be stale.
func TestGenerator_ClerkEnvelopes(t *testing.T) {
	t.Parallel()
	cfg := workloadConfig{Users: 500, Seed: 7, Start: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		Step: time.Second, LateRatio: 0.05, LateBy: 48 * time.Hour, TieRatio: 0.01, DeleteRatio: 0.1}
	a, b := newGenerator(cfg), newGenerator(cfg)
	var bytesTotal, late, ties, deletes int
	lastAt := map[string]time.Time{}
	const n = 5000
	for i := range n {
		ev := a.next()
		if other := b.next(); !bytes.Equal(ev.Payload, other.Payload) || ev.EventID != other.EventID {
			t.Fatalf("event %d differs between two generators with the same seed", i)
		}
		bytesTotal += len(ev.Payload)
		decoded, err := outbox.Decode(outbox.Record{ID: int64(i + 1), Provider: "clerk", EventType: ev.EventType,
			Payload: ev.Payload, EventID: &ev.EventID, OccurredAt: ev.OccurredAt, ReceivedAt: ev.ReceivedAt})
		if err != nil {
			t.Fatalf("event %d is rejected: %v\n%s", i, err, ev.Payload)
		}
		if ev.EventType == outbox.TypeDeleted {
			deletes++
		} else if decoded.Profile.Email == nil {
			t.Errorf("event %d maps to no email: %s", i, ev.Payload)
		}
		if prev, ok := lastAt[decoded.UserID]; ok && decoded.OccurredAt.Before(prev) {
			late++
		} else if ok && decoded.OccurredAt.Equal(prev) {
			ties++
		}
		lastAt[decoded.UserID] = decoded.OccurredAt
	}
	avg := bytesTotal / n
	t.Logf("average payload: %d bytes; %d late, %d ties, %d deletes in %d events", avg, late, ties, deletes, n)
	if avg < 900 || avg > 1300 {
		t.Errorf("average payload is %d bytes, want about 1.1 KB", avg)
	}
	if late == 0 || ties == 0 || deletes == 0 {
		t.Errorf("%d events older than their user's previous one, %d at the same time, %d deletes in %d: want some of each",
			late, ties, deletes, n)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"-scale", "0.5", "-rates", "100, 200", "-out", ""}, io.Discard)
	if err != nil || o.events() != 50_000 || o.users() != 10_000 || len(o.Rates) != 2 || o.Rates[1] != 200 || o.Out != "" {
		t.Fatalf("parseFlags = %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"-scale", "0"}, {"-scale", "-1"}, {"-rates", "1000,x"}, {"-rates", "0"}, {"-clients", "0"},
		{"-deletes", "2"}, {"-live-duration", "0s"}, {"extra"}, {"-nosuchflag"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil || errors.Is(err, flag.ErrHelp) {
			t.Errorf("parseFlags(%q) = %v, want an error", args, err)
		}
	}
}

// TestRun_SmallScale runs the whole benchmark at a tiny scale, with deletes
// in the workload so that every rule of the reference's fold is exercised,
// and checks that every figure is measured, that the reference produced
// exactly the replicator's rows, and that the report is written.
func TestRun_SmallScale(t *testing.T) {
	out := t.TempDir()
	o, err := parseFlags([]string{"-scale", "0.01", "-deletes", "0.1", "-rates", "1000,4000",
		"-live-duration", "500ms", "-warmup", "200ms", "-out", out}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	res, err := run(ctx, o, &stdout, &stderr)
	if errors.Is(err, pgcluster.ErrNoBinaries) && os.Getenv("CI") == "" {
		t.Skipf("no PostgreSQL server binaries: %v", err)
	}
	if err != nil {
		t.Fatalf("run: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	if !res.Backfill.Check.Matched() {
		t.Errorf("run returned no error, but the reference's rows differ from the replicator's:\n%s", stdout.String())
	}
	if ops := res.Backfill.Operations; ops["insert"] == 0 || ops["update"] == 0 || ops["stale"] == 0 || ops["delete"] == 0 {
		t.Errorf("history operations %v: want every kind, so that the check covers every rule", ops)
	}
	if res.Backfill.Replicator <= 0 || res.Backfill.Reference <= 0 || res.Drain.Replicator <= 0 ||
		(res.Drain.Recvlogical <= 0 && res.Drain.RecvlogicalMissing == "") {
		t.Errorf("a throughput was not measured: backfill %+v, drain %+v", res.Backfill, res.Drain)
	}
	if len(res.Live) != 2 {
		t.Fatalf("live results for %d rates, want 2", len(res.Live))
	}
	for _, l := range res.Live {
		if want := l.Rate / 2; len(l.LatenciesMS) != want || l.percentile(0.5) <= 0 {
			t.Errorf("live at %d ev/s: %d latencies (p50 %v ms), want %d positive ones", l.Rate, len(l.LatenciesMS), l.percentile(0.5), want)
		}
	}
	if len(res.RSS) != 2 || res.peakRSSKB() < 1024 {
		t.Errorf("peak RSS runs %+v: want two plausible ones", res.RSS)
	}
	for _, want := range []string{"| backfill: 1,000 rows", "| drain: 1,000 one-row", "| live at 1,000 ev/s", "| live at 4,000 ev/s",
		"| peak RSS", "reference check: matched"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the printed table lacks %q:\n%s", want, stdout.String())
		}
	}
	report, err := os.ReadFile(filepath.Join(out, reportName))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| backfill: 1,000 rows", "## Machine", "PostgreSQL " + res.Machine.PostgreSQL, res.Machine.Go, "-scale 0.01", throughputChartName} {
		if !bytes.Contains(report, []byte(want)) {
			t.Errorf("%s lacks %q", reportName, want)
		}
	}
	for _, name := range []string{throughputChartName, latencyChartName} {
		svg, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Contains(svg, []byte("<svg")) {
			t.Errorf("%s is not an SVG chart: %v", name, err)
		}
	}
}
