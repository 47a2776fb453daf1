package main

import (
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/replicator/audit"
)

func historyCommand() *cli.Command {
	return &cli.Command{
		Name:      "history",
		Usage:     "show a user's audit trail, in the order it was applied",
		ArgsUsage: "USER_ID",
		Description: "Each row is one outbox event folded for the user (or a resync), with the users_sync\n" +
			"columns it changed as 'column: before → after' (∅ is null; raw_json changes are in --json).",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "limit", Usage: "show only the last `N` rows (0: all)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON Lines, one object per row, with every change"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return newUsageError("history takes one USER_ID, got %d arguments (see 'replicator history --help')", c.NArg())
			}
			if c.Int("limit") < 0 {
				return newUsageError("--limit %d: want 0 (all) or a positive number", c.Int("limit"))
			}
			conn, err := openDatabase(c)
			if err != nil {
				return err
			}
			defer conn.Close(c.Context)
			entries, err := audit.History(c.Context, conn, c.Args().First(), c.Int("limit"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := jsonLines(c.App.Writer)
				for _, e := range entries {
					if err := enc.Encode(e); err != nil {
						return err
					}
				}
				return nil
			}
			printHistory(c, entries)
			return nil
		},
	}
}

func printHistory(c *cli.Context, entries []audit.HistoryEntry) {
	if len(entries) == 0 {
		return
	}
	tw := newTable(c.App.Writer)
	row(tw, "APPLIED_AT", "OPERATION", "PROVIDER", "EVENT_TYPE", "EVENT_ID", "OUTBOX_ID", "OCCURRED_AT", "SOURCE_LSN", "CHANGES")
	for _, e := range entries {
		row(tw, shortTime(e.AppliedAt), e.Operation, orDash(e.Provider), orDash(e.EventType), orDash(e.EventID),
			orDash(e.OutboxID), shortTime(e.OccurredAt), orDash(e.SourceLSN), describeChanges(e))
	}
	_ = tw.Flush()
}

// describeChanges shows changes as "name: Ada → Grace; email: …". raw_json
// (the whole provider object) only says that it changed, and only when
// nothing else did: the columns it feeds already show what changed.
func describeChanges(e audit.HistoryEntry) string {
	if e.HadRow && !e.HasRow {
		return "row removed"
	}
	cs := e.Changes
	var parts []string
	for _, ch := range cs {
		if ch.Column == "raw_json" {
			continue
		}
		parts = append(parts, ch.Column+": "+cellValue(ch.Before)+" → "+cellValue(ch.After))
	}
	if len(parts) == 0 && len(cs) > 0 {
		return "raw_json changed"
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}
