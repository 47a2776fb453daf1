package main

import (
	"context"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/usersync/usersync/internal/ops"
	"github.com/usersync/usersync/replicator"
	"github.com/usersync/usersync/replicator/audit"
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
			&cli.StringFlag{Name: "http", EnvVars: []string{"USERSYNC_HTTP"}, Usage: "serve /metrics, /healthz and /readyz on `ADDR` (e.g. :9090); off when empty"},
			&cli.DurationFlag{Name: "ready-max-lag", Value: 30 * time.Second, Usage: "/readyz answers 503 while the oldest event not yet folded is older than this"},
			&cli.StringFlag{Name: "outbox-retention", Usage: "prune, hourly, outbox rows received more than `DURATION` ago (30d, 36h) that the fold no longer needs"},
			&cli.DurationFlag{Name: "lag-sample-interval", Value: 5 * time.Second, Usage: "with --http: how often the lag is read from the server"},
		),
		Action: runAction,
	}
}

func runAction(c *cli.Context) error {
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
	if c.Duration("ready-max-lag") <= 0 {
		return newUsageError("--ready-max-lag %s: want a positive duration", c.Duration("ready-max-lag"))
	}
	var retention time.Duration
	if c.IsSet("outbox-retention") {
		if retention, err = parseAge("outbox-retention", c.String("outbox-retention")); err != nil {
			return err
		}
	}
	var ln net.Listener
	if addr := c.String("http"); addr != "" {
		if ln, err = net.Listen("tcp", addr); err != nil {
			return newUsageError("--http %s: %v", addr, err)
		}
	}
	setMemoryLimit()
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	if ln != nil {
		metrics := ops.NewReplicator(ops.ReplicatorConfig{ReadyMaxLag: c.Duration("ready-max-lag"), SampleInterval: c.Duration("lag-sample-interval")})
		cfg.Observer = metrics
		g.Go(func() error { return metrics.RunSampler(gctx, cfg.DatabaseURL, cfg.Slot, cfg.Logger) })
		g.Go(func() error { return ops.Serve(gctx, ln, metrics.Handler(), cfg.Logger) })
		cfg.Logger.Info("serving /metrics, /healthz and /readyz", "address", ln.Addr().String())
	}
	if retention > 0 {
		g.Go(func() error {
			return audit.RunRetention(gctx, audit.RetentionConfig{
				DatabaseURL: cfg.DatabaseURL, Prune: audit.PruneConfig{OutboxOlderThan: retention}, Logger: cfg.Logger,
			})
		})
	}
	g.Go(func() error {
		defer cancel() // the others serve the replicator: they stop with it
		return replicator.Run(gctx, cfg)
	})
	return g.Wait()
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
