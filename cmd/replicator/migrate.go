package main

import (
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/replicator"
)

func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "create or upgrade the neon_auth schema (idempotent; safe to run from two processes at once)",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return newUsageError("migrate takes no arguments, got %q", c.Args().First())
			}
			logger, err := newLogger(c)
			if err != nil {
				return err
			}
			url, err := databaseURL(c)
			if err != nil {
				return err
			}
			conn, err := connect(c, url)
			if err != nil {
				return err
			}
			defer conn.Close(c.Context)
			applied, err := replicator.Migrate(c.Context, conn)
			if err != nil {
				return err
			}
			logger.Info("schema up to date", "applied", applied, "version", replicator.LatestSchemaVersion())
			return nil
		},
	}
}

// connect opens an ordinary connection, explaining common failures.
func connect(c *cli.Context, url string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(c.Context, url)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", replicator.Explain(err))
	}
	return conn, nil
}
