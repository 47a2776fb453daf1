package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/replicator/audit"
)

func pruneCommand() *cli.Command {
	return &cli.Command{
		Name:  "prune",
		Usage: "delete old outbox rows that the fold no longer needs (and, if asked, old history)",
		Description: "Deletes outbox rows received before the cutoff that are accounted for and are not a user's\n" +
			"winning event, in small batches; safe while 'replicator run' streams, and verify still passes.\n" +
			"History is kept unless --history-older-than is given. DURATION: 90m, 36h, 30d.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "outbox-older-than", Usage: "delete outbox rows received more than `DURATION` ago (required)"},
			&cli.StringFlag{Name: "history-older-than", Usage: "also delete history rows applied more than `DURATION` ago whose outbox row is gone"},
			&cli.BoolFlag{Name: "dry-run", Usage: "count what would be deleted; delete nothing"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON Lines: one object per table"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return newUsageError("prune takes no arguments, got %q", c.Args().First())
			}
			cfg, err := pruneConfig(c)
			if err != nil {
				return err
			}
			conn, err := openDatabase(c)
			if err != nil {
				return err
			}
			defer conn.Close(c.Context)
			report, err := audit.Prune(c.Context, conn, cfg)
			if err != nil {
				return err
			}
			return printPrune(c.App.Writer, report, c.Bool("json"))
		},
	}
}

func pruneConfig(c *cli.Context) (audit.PruneConfig, error) {
	cfg := audit.PruneConfig{DryRun: c.Bool("dry-run")}
	if !c.IsSet("outbox-older-than") {
		return cfg, newUsageError("prune needs --outbox-older-than DURATION, e.g. 30d")
	}
	var err error
	if cfg.OutboxOlderThan, err = parseAge("outbox-older-than", c.String("outbox-older-than")); err != nil {
		return cfg, err
	}
	if c.IsSet("history-older-than") {
		if cfg.HistoryOlderThan, err = parseAge("history-older-than", c.String("history-older-than")); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// maxAgeDays is the largest day count a time.Duration holds: a larger one
// would wrap around into a short age, and prune far more than asked.
const maxAgeDays = int(math.MaxInt64 / int64(24*time.Hour))

// parseAge reads a positive duration: Go's (90m, 36h) or whole days (30d).
func parseAge(flag, s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		if n > maxAgeDays {
			return 0, newUsageError("--%s %q: at most %dd (about 290 years)", flag, s, maxAgeDays)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 {
		return 0, newUsageError("--%s %q: want a positive duration such as 90m, 36h or 30d", flag, s)
	}
	return d, nil
}

func printPrune(w io.Writer, r audit.PruneReport, asJSON bool) error {
	type line struct {
		Table  string `json:"table"`
		DryRun bool   `json:"dry_run"`
		audit.PruneResult
	}
	lines := []line{{"outbox", r.DryRun, r.Outbox}}
	if r.History != nil {
		lines = append(lines, line{"users_sync_history", r.DryRun, *r.History})
	}
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	for _, l := range lines {
		var err error
		if asJSON {
			err = jsonLines(w).Encode(l)
		} else {
			why := "winning events or not yet folded"
			if l.Table != "outbox" {
				why = "their outbox row is still there, or the slot could replay them"
			}
			_, err = fmt.Fprintf(w, "%s: %s %d rows older than %s; kept %d (%s)\n",
				l.Table, verb, l.Deleted, l.Cutoff.Format(time.RFC3339), l.Kept, why)
		}
		if err != nil {
			return err
		}
	}
	if r.History == nil && !asJSON {
		_, err := fmt.Fprintln(w, "users_sync_history: kept (no --history-older-than)")
		return err
	}
	return nil
}
