package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/replicator/audit"
)

func forgetCommand() *cli.Command {
	return &cli.Command{
		Name:      "forget",
		Usage:     "erase a user (GDPR art. 17): row removed, history and payloads stripped of their data",
		ArgsUsage: "USER_ID --reason TEXT",
		Description: "In one transaction: the users_sync row is removed; the user's history rows keep their\n" +
			"bookkeeping but lose before/after; the user's outbox and reject payloads become\n" +
			`{"id": USER_ID, "forgotten": true}; neon_auth.forgotten_users records it. A later event for` + "\n" +
			"the user (a retried webhook) is recorded as 'forgotten', redacted, and does not bring the user back.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "reason", Usage: "why (recorded in neon_auth.forgotten_users), e.g. a ticket number"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return newUsageError("forget takes one USER_ID, got %d arguments (see 'replicator forget --help')", c.NArg())
			}
			if c.Args().First() == "" {
				return newUsageError("forget: USER_ID is empty: give the id of the user to erase")
			}
			if strings.TrimSpace(c.String("reason")) == "" {
				return newUsageError("forget needs --reason TEXT: it is recorded with the erasure")
			}
			conn, err := openDatabase(c)
			if err != nil {
				return err
			}
			defer conn.Close(c.Context)
			r, err := audit.Forget(c.Context, conn, c.Args().First(), c.String("reason"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return jsonLines(c.App.Writer).Encode(r)
			}
			removed := "no users_sync row"
			if r.RowRemoved {
				removed = "users_sync row removed"
			}
			again := ""
			if r.AlreadyForgotten {
				again = " (already forgotten; erased again)"
			}
			_, err = fmt.Fprintf(c.App.Writer, "forgot %s%s: %s, %d history rows cleared, %d outbox and %d reject payloads redacted\n",
				r.UserID, again, removed, r.HistoryCleared, r.OutboxRedacted, r.RejectsRedacted)
			return err
		},
	}
}
