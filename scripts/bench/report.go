package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// results are every figure of one run.
type results struct {
	Started  time.Time
	Took     time.Duration
	Options  options
	Machine  machine
	Backfill backfillResult
	Drain    drainResult
	Live     []liveResult
	RSS      []rssRun
}

// rssRun is the peak resident size of one replicator process.
type rssRun struct {
	Run string
	KB  int64
}

func (r *results) peakRSSKB() int64 {
	var peak int64
	for _, run := range r.RSS {
		peak = max(peak, run.KB)
	}
	return peak
}

// Targets of issue 10.
const (
	backfillTarget = 1.0
	drainTarget    = 0.5
	rssTargetMiB   = 64
)

// latencyTargetsMS are the p99 targets of the live figure, by rate.
var latencyTargetsMS = map[int]float64{1000: 10, 4000: 20}

// row is one line of the results table.
type row struct {
	Figure, Replicator, Reference, Ratio, Target, Met string
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func (r *results) rows() []row {
	bf := r.Backfill
	bfRatio := rate(bf.Events, bf.Replicator) / rate(bf.Events, bf.Reference)
	rows := []row{{
		Figure:     fmt.Sprintf("backfill: %s rows committed before the slot", thousands(bf.Events)),
		Replicator: throughput(bf.Events, bf.Replicator),
		Reference:  throughput(bf.Events, bf.Reference) + ", set-based SQL",
		Ratio:      fmt.Sprintf("%.2f×", bfRatio),
		Target:     fmt.Sprintf("≥ %.1f×", backfillTarget),
		Met:        met(bfRatio >= backfillTarget),
	}}
	dr := r.Drain
	drain := row{
		Figure:     fmt.Sprintf("drain: %s one-row transactions queued in the slot", thousands(dr.Events)),
		Replicator: throughput(dr.Events, dr.Replicator),
		Reference:  "n/a: " + dr.RecvlogicalMissing,
		Ratio:      "n/a",
		Target:     fmt.Sprintf("≥ %.1f×", drainTarget),
		Met:        "n/a",
	}
	if dr.RecvlogicalMissing == "" {
		ratio := rate(dr.Events, dr.Replicator) / rate(dr.Events, dr.Recvlogical)
		drain.Reference = throughput(dr.Events, dr.Recvlogical) + ", pg_recvlogical"
		drain.Ratio, drain.Met = fmt.Sprintf("%.2f×", ratio), met(ratio >= drainTarget)
	}
	rows = append(rows, drain)
	for _, l := range r.Live {
		lr := row{
			Figure: fmt.Sprintf("live at %s ev/s (achieved %s): p50 / p99 / max", thousands(l.Rate), thousands(int(math.Round(l.Achieved)))),
			Replicator: fmt.Sprintf("%s / %s / %s ms",
				latency(l.percentile(0.5)), latency(l.percentile(0.99)), latency(l.percentile(1))),
			Reference: "—", Ratio: "—", Target: "—", Met: "—",
		}
		if target, ok := latencyTargetsMS[l.Rate]; ok {
			lr.Target = fmt.Sprintf("p99 ≤ %g ms", target)
			lr.Met = met(l.percentile(0.99) <= target)
		}
		rows = append(rows, lr)
	}
	peak := float64(r.peakRSSKB()) / 1024
	return append(rows, row{
		Figure:     fmt.Sprintf("peak RSS (VmHWM, largest of %d replicator runs)", len(r.RSS)),
		Replicator: fmt.Sprintf("%.1f MiB", peak),
		Reference:  "—", Ratio: "—",
		Target: fmt.Sprintf("≤ %d MiB", rssTargetMiB),
		Met:    met(peak <= rssTargetMiB),
	})
}

func throughput(n int, d time.Duration) string {
	return fmt.Sprintf("%s ev/s (%s)", thousands(int(math.Round(rate(n, d)))), d.Round(10*time.Millisecond))
}

func latency(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// thousands renders n with commas: 100,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// table renders rows as a Markdown table padded to line up in a terminal.
func table(rows []row) string {
	cells := [][]string{{"figure", "replicator", "reference", "ratio", "target", "met"}}
	for _, r := range rows {
		cells = append(cells, []string{r.Figure, r.Replicator, r.Reference, r.Ratio, r.Target, r.Met})
	}
	widths := make([]int, len(cells[0]))
	for _, line := range cells {
		for i, c := range line {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	writeLine := func(line []string) {
		for i, c := range line {
			b.WriteString("| " + c + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)) + " ")
		}
		b.WriteString("|\n")
	}
	writeLine(cells[0])
	for i, w := range widths {
		b.WriteString("|" + strings.Repeat("-", w+2))
		if i == len(widths)-1 {
			b.WriteString("|\n")
		}
	}
	for _, line := range cells[1:] {
		writeLine(line)
	}
	return b.String()
}

// checkLine says whether the reference produced what the replicator did.
func (r *results) checkLine() string {
	c := r.Backfill.Check
	var parts []string
	for _, t := range c.Tables {
		s := fmt.Sprintf("%s %s rows", t.What, thousands(t.Rows))
		if !t.equal() {
			s += fmt.Sprintf(" (%d differ, %d on one side only)", t.Differ, t.OnlyOneSide)
		}
		parts = append(parts, s)
	}
	verdict := "matched"
	if !c.Matched() {
		verdict = "DIFFERED — the backfill ratio is not a fair comparison"
	}
	return fmt.Sprintf("reference check: %s (%s)", verdict, strings.Join(parts, "; "))
}

func printTable(w io.Writer, r *results) {
	fmt.Fprintf(w, "\n%s\n%s\n", table(r.rows()), r.checkLine())
	for _, t := range r.Backfill.Check.Tables {
		if t.FirstDifference != "" {
			fmt.Fprintf(w, "first difference: %s\n", t.FirstDifference)
		}
	}
}

const (
	reportName          = "benchmarks.md"
	throughputChartName = "benchmarks-throughput.svg"
	latencyChartName    = "benchmarks-latency.svg"
)

// writeReport writes benchmarks.md and its charts into dir.
func writeReport(dir string, r *results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := throughputChart(r, filepath.Join(dir, throughputChartName)); err != nil {
		return fmt.Errorf("throughput chart: %w", err)
	}
	if err := latencyChart(r, filepath.Join(dir, latencyChartName)); err != nil {
		return fmt.Errorf("latency chart: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, reportName), []byte(markdown(r)), 0o644)
}

// command is the command line that produced r, as a user would type it.
func (r *results) command() string {
	args := []string{"go", "run", "./scripts/bench"}
	for _, a := range r.Options.Args {
		if a == "" || strings.ContainsAny(a, " \t'\"$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}
