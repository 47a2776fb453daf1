package main

import (
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/replicator"
)

func slotFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "publication", Value: "users_sync_outbox", Usage: "publication on neon_auth.outbox (created when missing)"},
		&cli.StringFlag{Name: "slot", Value: "users_sync", Usage: "logical replication slot (created when missing)"},
	}
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "backfill, then stream the outbox from the WAL and fold it into users_sync until SIGINT/SIGTERM",
		Flags: append(slotFlags(),
			&cli.IntFlag{Name: "batch-size", Value: 2000, Usage: "most events folded in one transaction"},
		),
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return newUsageError("run takes no arguments, got %q", c.Args().First())
			}
			cfg, err := replicatorConfig(c)
			if err != nil {
				return err
			}
			cfg.BatchSize = c.Int("batch-size")
			if err := cfg.Validate(); err != nil {
				return newUsageError("%v", err)
			}
			setMemoryLimit()
			return replicator.Run(c.Context, cfg)
		},
	}
}

// replicatorConfig maps the global and slot flags onto a replicator.Config.
func replicatorConfig(c *cli.Context) (replicator.Config, error) {
	logger, err := newLogger(c)
	if err != nil {
		return replicator.Config{}, err
	}
	url, err := databaseURL(c)
	if err != nil {
		return replicator.Config{}, err
	}
	return replicator.Config{
		DatabaseURL: url,
		Publication: c.String("publication"),
		Slot:        c.String("slot"),
		Logger:      logger,
	}, nil
}

// setMemoryLimit sets a soft memory limit for the long-running commands: it
// keeps the garbage collector ahead of large payloads, so the resident size
// stays near the batch caps. GOMEMLIMIT, when set, wins.
func setMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(48 << 20)
	}
}
