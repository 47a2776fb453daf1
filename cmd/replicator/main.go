// Command replicator folds auth-provider user events from neon_auth.outbox into
// neon_auth.users_sync through PostgreSQL logical replication.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/internal/logging"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitUsage is the exit code for a command line the program cannot act on.
const exitUsage = 2

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run executes the command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signalContext(stderr)
	defer stop()
	app := newApp(stdout, stderr)
	if err := app.RunContext(ctx, reorderArgs(app, args)); err != nil {
		var usage usageError
		if errors.As(err, &usage) {
			fmt.Fprintf(stderr, "replicator: %s\n", logging.Redact(err.Error()))
			return exitUsage
		}
		fmt.Fprintf(stderr, "replicator: %s\n", logging.Redact(err.Error()))
		return 1
	}
	return 0
}

// usageError marks a command line mistake; it exits with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func newUsageError(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:      "replicator",
		Usage:     "fold auth-provider user events from neon_auth.outbox into neon_auth.users_sync",
		Version:   version,
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "database-url", EnvVars: []string{"DATABASE_URL"}, Usage: "PostgreSQL connection URL (for Neon: the direct host, not -pooler, with sslmode=require)"},
			&cli.StringFlag{Name: "log-format", Value: "auto", Usage: "auto (colours on a terminal, JSON otherwise), text or json"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		},
		Commands: []*cli.Command{
			migrateCommand(),
			runCommand(),
			statusCommand(),
			devCommand(),
			ingestCommand(),
			importCommand(),
			historyCommand(),
			asOfCommand(),
			verifyCommand(),
			resyncCommand(),
			forgetCommand(),
			pruneCommand(),
		},
		// The logging flags are global; checked here, a bad value is refused
		// by every command, also by those that log nothing.
		Before: func(c *cli.Context) error {
			if helpRequested(c.Args().Slice()) {
				return nil // help prints whatever the other flags say
			}
			_, err := newLogger(c)
			return err
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return newUsageError("%v (see 'replicator --help')", err)
		},
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(c.App.ErrWriter, "replicator: no command %q (see 'replicator --help')\n", name)
			cli.OsExiter(exitUsage)
		},
		ExitErrHandler: func(*cli.Context, error) {},
	}
	// A mistake in a command's own flags is a usage error too: without
	// this, urfave/cli prints the command's help to stdout (into --json
	// output) and exits 1.
	for _, cmd := range app.Commands {
		name := cmd.Name
		cmd.OnUsageError = func(_ *cli.Context, err error, _ bool) error {
			return newUsageError("%s: %v (see 'replicator %s --help')", name, err, name)
		}
	}
	return app
}

// helpRequested reports whether the command line (after the global flags)
// asks for help: the help command, or -h/--help anywhere.
func helpRequested(args []string) bool {
	if len(args) > 0 && (args[0] == "help" || args[0] == "h") {
		return true
	}
	return slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "--help" || a == "-help" })
}

// newLogger builds the logger the global flags ask for.
func newLogger(c *cli.Context) (*slog.Logger, error) {
	logger, err := logging.New(c.App.ErrWriter, c.String("log-format"), c.String("log-level"))
	if err != nil {
		return nil, newUsageError("%v", err)
	}
	return logger, nil
}

// databaseURL returns --database-url or DATABASE_URL, or a usage error saying how to set it.
func databaseURL(c *cli.Context) (string, error) {
	url := c.String("database-url")
	if url == "" {
		return "", newUsageError("no database: set DATABASE_URL or pass --database-url, e.g. postgres://USER@HOST/DB?sslmode=require (the password in the URL, or in PGPASSWORD)")
	}
	return url, nil
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one
// exits at once.
func signalContext(stderr io.Writer) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-done:
			return
		}
		select {
		case <-sigs:
			fmt.Fprintln(stderr, "replicator: second signal, exiting now")
			os.Exit(130)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}
