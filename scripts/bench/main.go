// Command bench measures the replicator side by side with references, in
// one run on one throwaway PostgreSQL cluster, and writes the results to
// docs/benchmarks.md with SVG charts. `make bench` runs it.
//
// The figures, on Clerk user.updated envelopes of about 1.1 KB:
//
//   - backfill: outbox rows committed before the slot exists, folded by
//     `replicator run` (the built binary), against one set-based SQL
//     transaction producing the same rows on an identical copy of the
//     outbox in a second database; both results are compared row by row;
//   - drain: one-row transactions queued in the slot while the replicator
//     was stopped, against pg_recvlogical decoding the same WAL from a twin
//     slot created at the same point;
//   - live: commit-to-visible latency (from track_commit_timestamp) with
//     load offered at fixed rates on an open-loop schedule;
//   - peak RSS of the replicator processes over all of the above.
//
// Benchmarks are not tests: nothing asserts these numbers. The machine is
// shared, so the figures are noisy; compare ratios within one run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command line, after validation.
type options struct {
	// Scale multiplies the default workload (100,000 events over 20,000 users).
	Scale float64
	// Replicator is a built replicator binary; empty builds one from this module.
	Replicator string
	// Out is the directory for benchmarks.md and the charts; empty writes none.
	Out string
	// Rates are the live phase's offered loads, in events per second.
	Rates []int
	// LiveDuration is how long each rate is measured, after Warmup.
	LiveDuration, Warmup time.Duration
	// Clients is the number of connections offering the live load.
	Clients int
	// DeleteRatio is the share of user.deleted events in the workload.
	DeleteRatio float64
	// Seed makes the workload reproducible.
	Seed uint64
	// Args is the command line as given, for the report.
	Args []string
}

const (
	defaultEvents = 100_000
	defaultUsers  = 20_000
)

func (o options) events() int { return max(1, int(float64(defaultEvents)*o.Scale)) }
func (o options) users() int  { return max(1, int(float64(defaultUsers)*o.Scale)) }

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{Args: args}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./scripts/bench [flags]  (make bench)\n\n"+
			"Measures the replicator against references in one run and writes docs/benchmarks.md.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.Float64Var(&o.Scale, "scale", 1, "multiplies the workload: 100,000 events over 20,000 users at 1")
	fs.StringVar(&o.Replicator, "replicator", "", "replicator binary to measure (default: build ./cmd/replicator)")
	fs.StringVar(&o.Out, "out", "docs", "directory for benchmarks.md and the SVG charts (empty: write nothing)")
	rates := fs.String("rates", "1000,4000", "live phase: offered loads in events/s, comma-separated")
	fs.DurationVar(&o.LiveDuration, "live-duration", 15*time.Second, "live phase: measuring time per rate")
	fs.DurationVar(&o.Warmup, "warmup", 3*time.Second, "live phase: warm-up per rate, not measured")
	fs.IntVar(&o.Clients, "clients", 4, "live phase: connections inserting one-row transactions")
	fs.Float64Var(&o.DeleteRatio, "deletes", 0, "share of user.deleted events in the workload (0 to 1)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the generated workload")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q: bench takes only flags", fs.Arg(0))
	}
	var err error
	if o.Rates, err = parseRates(*rates); err != nil {
		return options{}, err
	}
	switch {
	case !(o.Scale > 0):
		return options{}, fmt.Errorf("-scale %v: want a positive number such as 0.1 or 2", o.Scale)
	case o.LiveDuration <= 0:
		return options{}, fmt.Errorf("-live-duration %s: want a positive duration such as 15s", o.LiveDuration)
	case o.Warmup < 0:
		return options{}, fmt.Errorf("-warmup %s: want zero or a positive duration", o.Warmup)
	case o.Clients < 1:
		return options{}, fmt.Errorf("-clients %d: want at least 1", o.Clients)
	case o.DeleteRatio < 0 || o.DeleteRatio > 1:
		return options{}, fmt.Errorf("-deletes %v: want a share between 0 and 1", o.DeleteRatio)
	}
	return o, nil
}

func parseRates(s string) ([]int, error) {
	var rates []int
	for _, part := range strings.Split(s, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || r < 1 {
			return nil, fmt.Errorf("-rates %q: want positive whole events/s separated by commas, such as 1000,4000", s)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\nRun go run ./scripts/bench -h for the flags.\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	_, err = run(ctx, o, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}
