package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// makeBenchCommand is what `make bench` runs (see the Makefile).
const makeBenchCommand = "go run ./scripts/bench -replicator bin/replicator"

// markdown renders docs/benchmarks.md.
func markdown(r *results) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	m := r.Machine
	p("# Benchmarks")
	p("")
	p("<!-- Written by scripts/bench (`make bench`); rerun it rather than edit this file. -->")
	p("")
	by := "`" + r.command() + "`"
	if r.command() == makeBenchCommand {
		by = "`make bench` (`" + makeBenchCommand + "`)"
	}
	p("Measured %s by %s, in %s, on one throwaway PostgreSQL cluster.",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), by, r.Took.Round(time.Second))
	p("The references ran in the same run, on the same machine, right before or after the")
	p("replicator: compare the ratios, not the absolute figures across runs.")
	p("")
	b.WriteString(table(r.rows()))
	p("")
	p("%s.", r.checkLine())
	for _, t := range r.Backfill.Check.Tables {
		if t.FirstDifference != "" {
			p("")
			p("```\nfirst difference: %s\n```", t.FirstDifference)
		}
	}
	p("")
	p("![Throughput of the replicator and the references](%s)", throughputChartName)
	p("")
	p("![Distribution of commit-to-visible latency at each live rate](%s)", latencyChartName)
	p("")
	p("## Machine")
	p("")
	p("- CPU: %s, %d cores, %.1f GiB of memory; load average %s when the run started.", m.CPU, m.Cores, m.MemoryGiB, m.LoadAvg)
	p("  The machine is shared with other work, so the figures are noisy.")
	p("- Linux %s; %s.", m.Kernel, m.Go)
	p("- PostgreSQL %s, started by internal/pgcluster with its defaults (`wal_level=logical`,", m.PostgreSQL)
	p("  `fsync=off`, `full_page_writes=off`, `synchronous_commit=on`, 128 MB `shared_buffers`)")
	p("  plus `track_commit_timestamp=on`.")
	p("")
	writeWorkload(&b, r)
	writeDetails(&b, r)
	writeMethod(&b)
	return b.String()
}

func writeWorkload(b *strings.Builder, r *results) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	bf := r.Backfill
	p("## Workload")
	p("")
	p("Clerk `user.updated` webhook envelopes (the shape of")
	p("`outbox/testdata/providers/clerk_user.updated.json`: `{data: {…user…}, event_attributes,")
	p("instance_id, object: \"event\", timestamp, type}`), %s bytes of payload on average, provider",
		thousands(int(bf.PayloadBytes)))
	p("`clerk`, `event_id` set, `occurred_at` set on half the rows (as the webhook receiver does) and")
	p("left to the envelope's `timestamp` on the others, about %s users (`-scale %g`).",
		thousands(r.Options.users()), r.Options.Scale)
	p("Names, emails (some users have two addresses, the primary not always first; some have no")
	p("name and fall back to the username) and times vary. Event times increase, but 5%% of the")
	p("events arrive up to 48 h late, so some lose to a newer event of their user and are `stale`,")
	p("and 1%% share the millisecond of their user's previous event (the outbox id breaks the tie).")
	if r.Options.DeleteRatio > 0 {
		p("A share of %g of the events are `user.deleted`.", r.Options.DeleteRatio)
	}
	ops := make([]string, 0, len(bf.Operations))
	for _, op := range slices.Sorted(maps.Keys(bf.Operations)) {
		ops = append(ops, fmt.Sprintf("%s %s", thousands(bf.Operations[op]), op))
	}
	p("The backfill's history: %s.", strings.Join(ops, ", "))
	p("")
}

func writeDetails(b *strings.Builder, r *results) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	bf, dr := r.Backfill, r.Drain
	p("## Details")
	p("")
	p("- Backfill: the replicator took %s from its process start until every row was accounted",
		bf.Replicator.Round(time.Millisecond))
	p("  for (its log says the catch-up itself took %s); the reference transaction took %s.",
		bf.LoggedTook, bf.Reference.Round(time.Millisecond))
	p("- Drain: committing the %s transactions took %s. The replicator's slot stood %s bytes",
		thousands(dr.Events), dr.Inserting.Round(time.Millisecond), thousands(int(dr.SlotGapBytes)))
	p("  behind the twin slot when the twin was created. Every row was accounted for %s after the",
		dr.Replicator.Round(time.Millisecond))
	p("  replicator started (its start-up catch-up sweep folds them from the table); its checkpoint")
	p("  passed the last queued transaction, the slot drained, %s after the start.", dr.Streamed.Round(time.Millisecond))
	if dr.RecvlogicalMissing == "" {
		p("  pg_recvlogical decoded the same WAL in %s.", dr.Recvlogical.Round(time.Millisecond))
	} else {
		p("  The drain reference is n/a: %s.", dr.RecvlogicalMissing)
	}
	for _, l := range r.Live {
		p("- Live at %s ev/s: %s events measured, %s ev/s achieved (the load generator was at worst",
			thousands(l.Rate), thousands(len(l.LatenciesMS)), thousands(int(math.Round(l.Achieved))))
		p("  %.1f ms behind its schedule); latency p50 %s, p90 %s, p99 %s, p99.9 %s, max %s ms.",
			l.MaxLateMS, latency(l.percentile(0.5)), latency(l.percentile(0.9)), latency(l.percentile(0.99)),
			latency(l.percentile(0.999)), latency(l.percentile(1)))
	}
	for _, run := range r.RSS {
		p("- Peak RSS of the replicator process of the %s: %.1f MiB.", run.Run, float64(run.KB)/1024)
	}
	p("")
}

func writeMethod(b *strings.Builder) {
	b.WriteString(`## How each figure is measured

The program is ` + "`scripts/bench`" + `; it builds ` + "`cmd/replicator`" + ` and drives the binary
(` + "`replicator run --log-format json`" + `, the database URL in ` + "`DATABASE_URL`" + `), as a user runs it.

- **Backfill.** The events are copied into the outbox of two fresh, migrated databases,
  identically (same ids, times, payloads), and both outboxes are vacuumed and analyzed. In
  one, the reference runs: one transaction of set-based SQL (` + "`scripts/bench/reference.sql`" + `)
  doing the fold's work — the Clerk mapping, one history row per event with its operation
  (insert, update, delete, stale by the fold's rules) and before/after images (window
  functions give each event's registers and before image), users_sync, and the registers in
  users_sync_state. In the other, ` + "`replicator run`" + ` starts with no slot, creates it and
  catches up; its time runs from the process start until every outbox row has a history or
  reject row. Then the two databases are compared row by row: users_sync and
  users_sync_state must be equal, and history by outbox_id — operation, event fields, and
  the images compared by value (times as instants, raw_json as jsonb). Ratio = replicator
  events/s ÷ reference events/s.
- **Drain.** With the replicator stopped (SIGTERM) and its slot confirmed up to the WAL end,
  a twin slot (` + "`pg_create_logical_replication_slot(…, 'pgoutput')`" + `) is created, and the
  events are committed as one-row transactions (a server-side loop, from an unlogged staging
  table that writes no WAL). ` + "`pg_recvlogical --start --endpos <WAL end> --no-loop -f /dev/null\n  --option proto_version=1 --option publication_names=users_sync_outbox`" + ` decodes the twin
  slot and is timed from start to exit. Then the replicator starts again (with its usual
  start-up catch-up sweep) and is timed from the process start until every row is
  accounted for. Ratio = replicator events/s ÷ pg_recvlogical events/s.
- **Live.** With that replicator running and idle, each rate is offered by a Go load
  generator: several connections insert one-row transactions on an open-loop schedule (event
  k is due at start + k/rate, however long the earlier inserts took), after a warm-up that is
  not measured. Each event's latency is ` + "`pg_xact_commit_timestamp(history.xmin) -\n  pg_xact_commit_timestamp(outbox.xmin)`" + `, joined by outbox_id: from the commit of the
  outbox row to the commit that made it visible in users_sync.
- **Peak RSS.** VmHWM of each replicator process, sampled from /proc every 100 ms and right
  before SIGTERM until it exits; the table shows the largest.

Nothing asserts these numbers: ` + "`make test`" + ` only runs the program at a tiny scale
(scripts/bench/main_test.go) to check that it works and that the reference matches.
`)
}
