package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox/importer/importertest"
)

const cliClerkKey = "sk_test_cliSECRETkey"

// TestImport_CLI imports from a fake Clerk through the command line, with
// the flags after the provider as people type them.
func TestImport_CLI(t *testing.T) {
	url := pgtest.NewDatabase(t)
	t.Setenv("DATABASE_URL", url)
	t.Setenv("CLERK_SECRET_KEY", cliClerkKey)
	if code, _, stderr := runCLI(t, "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, stderr)
	}
	srv := importertest.NewClerk(t, cliClerkKey)
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	srv.SetUsers(
		importertest.ClerkUser("user_a", "Ada", "Lovelace", "ada@example.com", at, at),
		importertest.ClerkUser("user_b", "Grace", "Hopper", "grace@example.com", at, at),
		importertest.ClerkUser("user_c", "Alan", "Turing", "alan@example.com", at, at),
	)

	code, stdout, stderr := runCLI(t, "--log-format", "json", "import", "clerk", "--dry-run", "--api-url", srv.URL, "--page-size", "2")
	if code != 0 {
		t.Fatalf("import --dry-run: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"clerk: listed 3 users in 2 pages (dry run: nothing written)", "to insert 3, already present 0, skipped 0"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run printed %q, want %q", stdout, want)
		}
	}
	if n := countOutbox(t, url); n != 0 {
		t.Errorf("the dry run wrote %d outbox rows", n)
	}

	code, stdout, stderr = runCLI(t, "--log-format", "json", "import", "clerk", "--api-url", srv.URL)
	if code != 0 || !strings.Contains(stdout, "inserted 3, already present 0") {
		t.Fatalf("import: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "--log-format", "json", "import", "clerk", "--api-url", srv.URL, "--prune-missing")
	if code != 0 || !strings.Contains(stdout, "inserted 0, already present 3") {
		t.Errorf("second import: exit %d, stdout %q", code, stdout)
	}
	if n := countOutbox(t, url); n != 3 {
		t.Errorf("outbox holds %d rows, want 3", n)
	}
	if strings.Contains(stdout+stderr, cliClerkKey) {
		t.Errorf("the key was printed:\n%s%s", stdout, stderr)
	}
}

func TestImport_CLIErrors(t *testing.T) {
	srv := importertest.NewClerk(t, cliClerkKey)
	t.Setenv("DATABASE_URL", pgtest.NewDatabase(t))
	if code, _, stderr := runCLI(t, "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, stderr)
	}
	for _, env := range []string{"CLERK_SECRET_KEY", "STACK_PROJECT_ID", "STACK_SECRET_SERVER_KEY", "WORKOS_API_KEY"} {
		t.Setenv(env, "")
	}
	cases := []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		want     string
	}{
		{"no provider", nil, []string{"import"}, exitUsage, "import takes one provider"},
		{"unknown provider", nil, []string{"import", "auth0"}, exitUsage, `unknown provider "auth0"`},
		{"no Clerk key", nil, []string{"import", "clerk"}, exitUsage, "set CLERK_SECRET_KEY"},
		{"no Stack project", map[string]string{"STACK_SECRET_SERVER_KEY": "ssk_x"}, []string{"import", "stack"}, exitUsage, "set STACK_PROJECT_ID"},
		{"bad page size", map[string]string{"WORKOS_API_KEY": "sk_x"}, []string{"import", "workos", "--page-size", "500"}, exitUsage, "want 1 to 100"},
		{"bad API URL", map[string]string{"CLERK_SECRET_KEY": "sk_x"}, []string{"import", "clerk", "--api-url", "ftp://x"}, exitUsage, "API URL"},
		{"wrong key", map[string]string{"CLERK_SECRET_KEY": "sk_test_WRONGkey"}, []string{"--log-format", "json", "import", "clerk", "--api-url", srv.URL},
			1, "clerk refused the credentials (401 Unauthorized): check CLERK_SECRET_KEY"},
		{"key as a flag", nil, []string{"--log-format", "json", "import", "clerk", "--api-url", srv.URL, "--clerk-secret-key", "sk_test_WRONGkey"},
			1, "check CLERK_SECRET_KEY"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr, tc.wantCode, tc.want)
			}
			if strings.Contains(stdout+stderr, "WRONGkey") {
				t.Errorf("the key was printed:\n%s%s", stdout, stderr)
			}
		})
	}
}

func TestImport_HelpHidesTheKey(t *testing.T) {
	t.Setenv("CLERK_SECRET_KEY", cliClerkKey)
	code, stdout, stderr := runCLI(t, "import", "clerk", "--help")
	if code != 0 || !strings.Contains(stdout, "--prune-missing") || !strings.Contains(stdout, "CLERK_SECRET_KEY") {
		t.Errorf("import --help: exit %d, %q", code, stdout)
	}
	if strings.Contains(stdout+stderr, cliClerkKey) {
		t.Errorf("--help printed the key from the environment:\n%s", stdout)
	}
}

func countOutbox(t *testing.T, url string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM neon_auth.outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
