package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/replicator/audit"
)

func resyncCommand() *cli.Command {
	return &cli.Command{
		Name:      "resync",
		Usage:     "rewrite users' rows and registers from the fold where they differ (what verify finds)",
		ArgsUsage: "USER_ID... | --all",
		Description: "Each repair is recorded in users_sync_history with operation 'resync' and its before/after.\n" +
			"Safe while 'replicator run' streams (it takes the apply's lock); running it twice repairs nothing the second time.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "repair every user that verify finds differing"},
			&cli.StringFlag{Name: "slot", Value: "users_sync", Usage: "logical replication slot (for the verify scan of --all)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON Lines: one object per repair, then a summary"},
		},
		Action: func(c *cli.Context) error {
			users := c.Args().Slice()
			if c.Bool("all") == (len(users) > 0) {
				return newUsageError("resync takes USER_ID arguments or --all, one of the two (see 'replicator resync --help')")
			}
			conn, err := openDatabase(c)
			if err != nil {
				return err
			}
			defer conn.Close(c.Context)
			asJSON := c.Bool("json")
			report, err := audit.Resync(c.Context, conn, audit.ResyncConfig{
				UserIDs:  users,
				All:      c.Bool("all"),
				Verify:   audit.VerifyConfig{Slot: c.String("slot")},
				Progress: newProgress(c.App.ErrWriter),
				OnRepair: func(r audit.Repair) error {
					if asJSON {
						return jsonLines(c.App.Writer).Encode(r)
					}
					_, err := fmt.Fprintf(c.App.Writer, "resynced %s: %s\n", r.UserID, strings.Join(r.Columns, ", "))
					return err
				},
			})
			if err != nil {
				return err
			}
			if asJSON {
				return jsonLines(c.App.Writer).Encode(map[string]audit.ResyncReport{"summary": report})
			}
			_, err = fmt.Fprintf(c.App.Writer, "resync: repaired %d of %d user%s checked\n", report.Repaired, report.Checked, plural(report.Checked))
			return err
		},
	}
}
