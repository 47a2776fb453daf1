package main

import (
	"os"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/internal/ops"
	"github.com/usersync/usersync/outbox/webhook"
)

// secretFlags maps each provider to its --<provider>-secret flag.
var secretFlags = map[string]string{
	"clerk":   "clerk-secret",
	"stack":   "stack-secret",
	"workos":  "workos-secret",
	"generic": "generic-secret",
}

func ingestCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: webhook.DefaultListen, Usage: "address to serve the webhook endpoints on"},
		&cli.Int64Flag{Name: "max-body", Value: webhook.DefaultMaxBody, Usage: "largest webhook body accepted, in bytes; larger ones get 413"},
		&cli.Int64Flag{Name: "max-body-memory", Usage: "most bytes of bodies read at once; past it deliveries get 503 (default 16 MiB, at least 4 × --max-body)"},
		&cli.IntFlag{Name: "max-conns", Value: webhook.DefaultMaxConns, Usage: "most open connections; at the bound the longest-idle one is closed (lowered to fit ulimit -n)"},
	}
	for _, p := range webhook.Providers {
		flags = append(flags, &cli.StringFlag{
			Name:    secretFlags[p],
			EnvVars: []string{webhook.SecretEnv(p)},
			Usage:   "signing secrets of the " + p + " endpoint, space-separated to rotate without downtime",
		})
	}
	return &cli.Command{
		Name:  "ingest",
		Usage: "receive Clerk, Stack Auth, WorkOS and generic webhooks into neon_auth.outbox until SIGINT/SIGTERM",
		Description: "Serves POST /webhooks/clerk, /webhooks/stack, /webhooks/workos and /webhooks/generic, GET /healthz and GET /metrics.\n" +
			"A provider's endpoint works once its secret is set; see docs/webhooks.md.",
		Flags:  flags,
		Action: ingest,
	}
}

func ingest(c *cli.Context) error {
	if c.Args().Present() {
		// The arguments are not quoted back: an unquoted list of secrets
		// after --workos-secret OLD NEW leaves NEW here.
		return newUsageError("ingest takes no arguments, got %d (a space-separated list of secrets goes in quotes: --clerk-secret 'OLD NEW')", c.NArg())
	}
	cfg, err := ingestConfig(c)
	if err != nil {
		return err
	}
	setIngestMemoryLimit(cfg)
	return webhook.Run(c.Context, cfg)
}

// setIngestMemoryLimit sets a soft memory limit above what the receiver may
// hold at once (the bodies being read, about twice over while one is
// inserted, and the connections' buffers), so the garbage collector keeps
// the resident size near it under a flood. GOMEMLIMIT, when set, wins.
func setIngestMemoryLimit(cfg webhook.Config) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	bodies := cfg.MaxBodyMemory
	if bodies == 0 {
		bodies = max(webhook.DefaultMaxBodyMemory, 4*cfg.MaxBody)
	}
	debug.SetMemoryLimit(2*bodies + 48<<20)
}

// ingestConfig maps the flags onto a webhook.Config. Its errors name the
// flag and variable of a bad secret, never the secret.
func ingestConfig(c *cli.Context) (webhook.Config, error) {
	logger, err := newLogger(c)
	if err != nil {
		return webhook.Config{}, err
	}
	reg := ops.NewRegistry()
	cfg := webhook.Config{
		Listen:        c.String("listen"),
		MaxBody:       c.Int64("max-body"),
		MaxBodyMemory: c.Int64("max-body-memory"),
		MaxConns:      c.Int("max-conns"),
		Secrets:       map[string]string{},
		Logger:        logger.With("component", "ingest"),
		Observer:      ops.NewWebhook(reg),
		Metrics:       promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}
	for _, p := range webhook.Providers {
		list := c.String(secretFlags[p])
		if strings.TrimSpace(list) == "" {
			continue // an empty variable in a deployment template means "not this provider"
		}
		if _, err := webhook.ParseKeys(p, list); err != nil {
			return cfg, newUsageError("--%s (%s): %v", secretFlags[p], webhook.SecretEnv(p), err)
		}
		cfg.Secrets[p] = list
	}
	if len(cfg.Secrets) == 0 {
		return cfg, newUsageError("no webhook secret: set CLERK_WEBHOOK_SECRET, STACK_WEBHOOK_SECRET, WORKOS_WEBHOOK_SECRET or GENERIC_WEBHOOK_SECRET (or --clerk-secret, --stack-secret, --workos-secret, --generic-secret) to the endpoint's signing secret")
	}
	if cfg.MaxBody <= 0 {
		return cfg, newUsageError("--max-body %d: want a positive number of bytes", cfg.MaxBody)
	}
	if c.IsSet("max-body-memory") && cfg.MaxBodyMemory < cfg.MaxBody {
		return cfg, newUsageError("--max-body-memory %d: want at least --max-body (%d), or no body of the largest size could be read", cfg.MaxBodyMemory, cfg.MaxBody)
	}
	if cfg.MaxConns < webhook.MinConns {
		return cfg, newUsageError("--max-conns %d: want at least %d", cfg.MaxConns, webhook.MinConns)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, newUsageError("%v", err)
	}
	if cfg.DatabaseURL, err = databaseURL(c); err != nil {
		return cfg, err
	}
	return cfg, nil
}
