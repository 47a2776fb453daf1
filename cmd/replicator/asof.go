package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/replicator/audit"
)

func asOfCommand() *cli.Command {
	return &cli.Command{
		Name:      "as-of",
		Usage:     "show users_sync rows as they stood at a time, from the history",
		ArgsUsage: "TIME [USER_ID...]",
		Description: "TIME is RFC 3339 (2026-01-02T15:04:05Z). Without USER_ID, every user that existed then.\n" +
			"The table leaves out raw_json; --json has all seven columns.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON Lines, one users_sync row per line"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return newUsageError("as-of needs a TIME such as 2026-01-02T15:04:05Z (see 'replicator as-of --help')")
			}
			at, err := time.Parse(time.RFC3339Nano, c.Args().First())
			if err != nil {
				return newUsageError("as-of: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", c.Args().First())
			}
			conn, err := openDatabase(c)
			if err != nil {
				return err
			}
			defer conn.Close(c.Context)
			users := c.Args().Slice()[1:]
			if c.Bool("json") {
				enc := jsonLines(c.App.Writer)
				return audit.AsOf(c.Context, conn, at, users, func(r outbox.Row) error { return enc.Encode(r) })
			}
			tw := newTable(c.App.Writer)
			header := false
			err = audit.AsOf(c.Context, conn, at, users, func(r outbox.Row) error {
				if !header {
					row(tw, "ID", "NAME", "EMAIL", "CREATED_AT", "UPDATED_AT", "DELETED_AT")
					header = true
				}
				row(tw, r.ID, orDash(r.Name), orDash(r.Email), shortTimePtr(r.CreatedAt), shortTimePtr(r.UpdatedAt), shortTimePtr(r.DeletedAt))
				return nil
			})
			if ferr := tw.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
}
