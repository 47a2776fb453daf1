package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/outbox/importer"
)

// credentialFlags maps each credential flag to the Credentials field it fills.
var credentialFlags = []struct {
	name, env, usage string
	set              func(*importer.Credentials, string)
}{
	{"clerk-secret-key", "CLERK_SECRET_KEY", "Clerk secret key (sk_live_... or sk_test_...)",
		func(c *importer.Credentials, v string) { c.ClerkSecretKey = v }},
	{"stack-project-id", "STACK_PROJECT_ID", "Stack Auth project id",
		func(c *importer.Credentials, v string) { c.StackProjectID = v }},
	{"stack-secret-server-key", "STACK_SECRET_SERVER_KEY", "Stack Auth secret server key",
		func(c *importer.Credentials, v string) { c.StackSecretServerKey = v }},
	{"workos-api-key", "WORKOS_API_KEY", "WorkOS API key (sk_...)",
		func(c *importer.Credentials, v string) { c.WorkOSAPIKey = v }},
}

func importCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "api-url", Usage: "the provider's API base URL, without the API path (default: its public API; set it for a self-hosted Stack Auth)"},
		&cli.BoolFlag{Name: "prune-missing", Usage: "also mark deleted the live users of this provider that the listing lacks and a look-up confirms gone"},
		&cli.BoolFlag{Name: "dry-run", Usage: "list and count, write nothing"},
		&cli.IntFlag{Name: "page-size", Usage: "users per request (default: clerk 500, stack 200, workos 100)"},
		&cli.DurationFlag{Name: "request-timeout", Value: 30 * time.Second, Usage: "limit on each request to the provider"},
	}
	for _, f := range credentialFlags {
		flags = append(flags, &cli.StringFlag{Name: f.name, EnvVars: []string{f.env}, Usage: f.usage + "; better set in the environment than on the command line"})
	}
	return &cli.Command{
		Name:      "import",
		Usage:     "bring a provider's existing users into neon_auth.outbox (clerk, stack or workos)",
		ArgsUsage: "PROVIDER",
		Description: "Pages the provider's list-users API and inserts one user.updated row per user;\n" +
			"re-running it inserts only what changed. See 'Bringing existing users in' in README.md.",
		Flags:  flags,
		Action: importUsers,
	}
}

func importUsers(c *cli.Context) error {
	if c.NArg() != 1 {
		return newUsageError("import takes one provider, clerk, stack or workos, got %d arguments", c.NArg())
	}
	provider := c.Args().First()
	if !slices.Contains(importer.Providers, provider) {
		return newUsageError("import: unknown provider %q: want clerk, stack or workos", provider)
	}
	logger, err := newLogger(c)
	if err != nil {
		return err
	}
	logger = logger.With("component", "import", "provider", provider)
	cfg := importer.Config{
		Provider:       provider,
		APIURL:         c.String("api-url"),
		PruneMissing:   c.Bool("prune-missing"),
		DryRun:         c.Bool("dry-run"),
		PageSize:       c.Int("page-size"),
		RequestTimeout: c.Duration("request-timeout"),
		Logger:         logger,
	}
	for _, f := range credentialFlags {
		f.set(&cfg.Credentials, c.String(f.name))
	}
	if cfg.RequestTimeout <= 0 {
		return newUsageError("--request-timeout %s: want a positive duration", cfg.RequestTimeout)
	}
	if err := cfg.Validate(); err != nil {
		return newUsageError("import %s: %v", provider, err)
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

	progress := newImportProgress(c.App.ErrWriter, logger)
	cfg.Progress = progress.update
	sum, err := importer.Run(c.Context, conn, cfg)
	progress.finish()
	printImportSummary(c.App.Writer, sum)
	if err != nil && c.Context.Err() != nil {
		return fmt.Errorf("import interrupted: what was committed stays; run it again to finish")
	}
	if err != nil {
		return err
	}
	logger.Info("import finished", "listed", sum.Listed, "inserted", sum.Inserted, "already_present", sum.AlreadyPresent,
		"skipped", sum.Skipped, "deletions", sum.Deletions, "dry_run", sum.DryRun)
	return nil
}

// importProgress shows how far an import got: a spinner with the count on a
// terminal, else a log line at most every logEvery.
type importProgress struct {
	bar     *progressbar.ProgressBar
	logger  *slog.Logger
	lastLog time.Time
}

const logEvery = 5 * time.Second

func newImportProgress(w io.Writer, logger *slog.Logger) *importProgress {
	p := &importProgress{logger: logger, lastLog: time.Now()}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("listing users"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("users"),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

func (p *importProgress) update(pr importer.Progress) {
	s := pr.Summary
	if p.bar != nil {
		p.bar.Describe(pr.Phase + " users")
		_ = p.bar.Set64(s.Listed + s.Checked)
		return
	}
	if time.Since(p.lastLog) >= logEvery {
		p.lastLog = time.Now()
		p.logger.Info("import progress", "phase", pr.Phase, "pages", s.Pages, "listed", s.Listed,
			"inserted", s.Inserted, "checked", s.Checked, "deletions", s.Deletions)
	}
}

func (p *importProgress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// printImportSummary writes what the import did, one line per step.
func printImportSummary(w io.Writer, s importer.Summary) {
	verb, note := "inserted", ""
	if s.DryRun {
		verb, note = "to insert", " (dry run: nothing written)"
	}
	fmt.Fprintf(w, "%s: listed %d users in %d pages%s\n", s.Provider, s.Listed, s.Pages, note)
	fmt.Fprintf(w, "  %s %d, already present %d, skipped %d\n", verb, s.Inserted, s.AlreadyPresent, s.Skipped)
	if s.Checked > 0 || s.Deletions > 0 {
		fmt.Fprintf(w, "  deletions %s %d (checked %d users the listing lacked; %d still at the provider)\n",
			verb, s.Deletions, s.Checked, s.StillPresent)
	}
}
