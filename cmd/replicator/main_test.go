package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/replicator"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// runCLI runs the command line in-process and returns exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"replicator"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestRun_UsageErrors(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no database", []string{"migrate"}, "set DATABASE_URL"},
		{"unknown flag", []string{"--bogus", "status"}, "--help"},
		{"bad log format", []string{"--database-url", "postgres://x@127.0.0.1:1/x", "--log-format", "xml", "migrate"}, "want auto, text or json"},
		{"bad log level", []string{"--database-url", "postgres://x@127.0.0.1:1/x", "--log-level", "loud", "migrate"}, "want debug, info, warn or error"},
		{"stray argument", []string{"--database-url", "postgres://x@127.0.0.1:1/x", "run", "now"}, "takes no arguments"},
		{"bad slot", []string{"--database-url", "postgres://x@127.0.0.1:1/x", "run", "--slot", "Bad-Slot"}, "slot \"Bad-Slot\""},
		{"bad retention", []string{"--database-url", "postgres://x@127.0.0.1:1/x", "run", "--outbox-retention", "forever"}, "--outbox-retention"},
		{"bad http address", []string{"--database-url", "postgres://x@127.0.0.1:1/x", "run", "--http", "nohost:99999"}, "--http"},
		{"history without user", []string{"--database-url", "postgres://x@127.0.0.1:1/x", "history"}, "one USER_ID"},
		{"resync without users", []string{"--database-url", "postgres://x@127.0.0.1:1/x", "resync"}, "--all"},
		{"prune without age", []string{"--database-url", "postgres://x@127.0.0.1:1/x", "prune"}, "--outbox-older-than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr, exitUsage, tc.want)
			}
		})
	}
}

func TestRun_ConnectErrorHidesPassword(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://app:hunter2secret@127.0.0.1:1/db?sslmode=disable&connect_timeout=2")
	code, stdout, stderr := runCLI(t, "--log-format", "json", "migrate")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if strings.Contains(stdout+stderr, "hunter2secret") {
		t.Errorf("the password leaked:\n%s%s", stdout, stderr)
	}
	if !strings.Contains(stderr, "connect") {
		t.Errorf("stderr %q does not say the connection failed", stderr)
	}
}

func TestRun_MigrateThenStatus(t *testing.T) {
	url := pgtest.NewDatabase(t)
	t.Setenv("DATABASE_URL", url)
	if code, _, stderr := runCLI(t, "--log-format", "json", "migrate"); code != 0 {
		t.Fatalf("migrate exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, "status", "--json", "--slot", "cli_status")
	if code != 0 {
		t.Fatalf("status exit %d: %s", code, stderr)
	}
	var st replicator.Status
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("status --json printed %q: %v", stdout, err)
	}
	if st.Slot != "cli_status" || st.SlotExists || st.PendingEvents != 0 {
		t.Errorf("status = %+v, want slot cli_status, not yet created, nothing pending", st)
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `INSERT INTO neon_auth.outbox (provider, event_type, payload)
		VALUES ('generic', 'user.created', '{"id": "u1"}')`); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runCLI(t, "status", "--slot", "cli_status")
	if code != 0 || !strings.Contains(stdout, "pending events: 1") {
		t.Errorf("status exit %d, output:\n%s\nwant 'pending events: 1'", code, stdout)
	}
	if strings.Contains(stdout, "password") {
		t.Errorf("status output mentions a password:\n%s", stdout)
	}
}

func TestRun_RunRefusesUnmigratedDatabase(t *testing.T) {
	t.Setenv("DATABASE_URL", pgtest.NewDatabase(t))
	code, _, stderr := runCLI(t, "--log-format", "json", "run", "--slot", "cli_refuse")
	if code != 1 || !strings.Contains(stderr, "replicator migrate") {
		t.Errorf("exit %d, stderr %q; want exit 1 telling to run 'replicator migrate'", code, stderr)
	}
}

func TestRun_Version(t *testing.T) {
	code, stdout, _ := runCLI(t, "--version")
	if code != 0 || !strings.Contains(stdout, "replicator version") {
		t.Errorf("--version: exit %d, %q", code, stdout)
	}
}

// TestRun_CommandFlagErrorsAreUsageErrors: a mistake in a command's own
// flags (an unknown flag, a value that does not parse) is a command line the
// program cannot act on, so it exits 2 with a sentence, as a mistake in the
// global flags does.
func TestRun_CommandFlagErrorsAreUsageErrors(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	cases := []struct {
		name string
		args []string
	}{
		{"unknown verify flag", []string{"verify", "--bogus"}},
		{"unknown prune flag", []string{"prune", "--outbox-older-than", "30d", "--bogus"}},
		{"history limit not a number", []string{"history", "user_1", "--limit", "abc"}},
		{"import page size not a number", []string{"import", "clerk", "--page-size", "abc"}},
		{"import timeout not a duration", []string{"import", "clerk", "--request-timeout", "soon"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stdout %d bytes, stderr %q", code, exitUsage, len(stdout), stderr)
			}
			if stdout != "" {
				t.Errorf("stdout holds %d bytes (help text where --json output goes): %.80q", len(stdout), stdout)
			}
			if want := "see 'replicator " + tc.args[0] + " --help'"; !strings.Contains(stderr, want) {
				t.Errorf("stderr %q does not say %q", stderr, want)
			}
		})
	}
}

// TestParseAge_DaysDoNotWrapAround: a number of days too large for a
// time.Duration must be refused, not wrapped into a short age: with
// 213504d ("keep about 585 years") prune would delete what is older than
// about 25 minutes.
func TestParseAge_DaysDoNotWrapAround(t *testing.T) {
	for _, s := range []string{"213504d", "1000000d", "9223372036854775807d"} {
		d, err := parseAge("outbox-older-than", s)
		if err == nil && d < 100*365*24*time.Hour {
			t.Errorf("parseAge(%q) = %s, nil; want an error or an age of at least 100 years", s, d)
		}
		if err != nil && !strings.Contains(err.Error(), s) {
			t.Errorf("parseAge(%q): error %q does not name the value", s, err)
		}
	}
}

// TestRun_ForgetBlankArgumentsAreUsageErrors: an empty USER_ID or a reason
// of blanks is as much a command line mistake as a missing --reason (exit
// 2), but it reaches the database and exits 1.
func TestRun_ForgetBlankArgumentsAreUsageErrors(t *testing.T) {
	t.Setenv("DATABASE_URL", pgtest.NewDatabase(t))
	if code, _, stderr := runCLI(t, "--log-format", "json", "migrate"); code != 0 {
		t.Fatalf("migrate exit %d: %s", code, stderr)
	}
	for _, args := range [][]string{{"forget", "user_1", "--reason", "   "}, {"forget", "", "--reason", "ticket 1"}} {
		if code, _, stderr := runCLI(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, stderr %q; want %d", args, code, stderr, exitUsage)
		}
	}
}

// TestRun_BadLogFlagsAreRefusedByEveryCommand: --log-format and
// --log-level are global; 'migrate' refuses a bad value with exit 2, but
// the audit commands, which build no logger, accept any value silently.
func TestRun_BadLogFlagsAreRefusedByEveryCommand(t *testing.T) {
	t.Setenv("DATABASE_URL", pgtest.NewDatabase(t))
	if code, _, stderr := runCLI(t, "--log-format", "json", "migrate"); code != 0 {
		t.Fatalf("migrate exit %d: %s", code, stderr)
	}
	for _, cmd := range [][]string{{"verify"}, {"status"}, {"history", "u1"}, {"prune", "--outbox-older-than", "30d", "--dry-run"}} {
		args := append([]string{"--log-format", "xml", "--log-level", "loud"}, cmd...)
		if code, _, _ := runCLI(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
	// Help still prints: a bad value in the environment must not hide it.
	for _, cmd := range [][]string{{"help"}, {"verify", "--help"}, {"help", "prune"}} {
		args := append([]string{"--log-format", "xml", "--log-level", "loud"}, cmd...)
		if code, stdout, stderr := runCLI(t, args...); code != 0 || !strings.Contains(stdout, "USAGE") {
			t.Errorf("%q: exit %d, stdout %.60q, stderr %q; want the help", args, code, stdout, stderr)
		}
	}
}
