package pgcluster_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/usersync/usersync/internal/pgcluster"
	"github.com/usersync/usersync/internal/pgtest"
)

// skipIfNoBinaries skips when Start found no server binaries, except under
// CI=true, where that is a failure.
func skipIfNoBinaries(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, pgcluster.ErrNoBinaries) {
		return
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("CI=true forbids skipping: %v", err)
	}
	t.Skip(err)
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func show(t *testing.T, conn *pgx.Conn, setting string) string {
	t.Helper()
	var value string
	if err := conn.QueryRow(context.Background(), "SHOW "+setting).Scan(&value); err != nil {
		t.Fatalf("SHOW %s: %v", setting, err)
	}
	return value
}

// refusesConnections reports whether nothing accepts connections at url.
func refusesConnections(url string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		return true, nil
	}
	conn.Close(ctx)
	return false, errors.New("server still accepts connections")
}

func TestStart(t *testing.T) {
	t.Parallel()
	c := pgtest.NewCluster(t, map[string]string{"wal_sender_timeout": "5s", "application_name": "it's quoted"})

	t.Run("settings", func(t *testing.T) {
		t.Parallel()
		conn := connect(t, c.URL("postgres"))
		for setting, want := range map[string]string{
			"wal_level":             "logical",
			"max_wal_senders":       "64",
			"max_replication_slots": "64",
			"max_connections":       "300",
			"fsync":                 "off",
			"full_page_writes":      "off",
			"synchronous_commit":    "on", // committed rows must survive StopImmediate
			"listen_addresses":      "127.0.0.1",
			"port":                  strconv.Itoa(c.Port()),
			"server_encoding":       "UTF8",
			"wal_sender_timeout":    "5s",          // from Options.Settings
			"application_name":      "it's quoted", // from Options.Settings, escaped
		} {
			if got := show(t, conn, setting); got != want {
				t.Errorf("SHOW %s = %q, want %q", setting, got, want)
			}
		}
	})

	t.Run("replication connection", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		config, err := pgconn.ParseConfig(c.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		config.RuntimeParams["replication"] = "database"
		conn, err := pgconn.ConnectConfig(ctx, config)
		if err != nil {
			t.Fatalf("replication connect: %v", err)
		}
		defer conn.Close(ctx)
		results, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
		if err != nil {
			t.Fatalf("IDENTIFY_SYSTEM: %v", err)
		}
		if len(results) != 1 || len(results[0].Rows) != 1 || len(results[0].Rows[0]) != 4 {
			t.Fatalf("IDENTIFY_SYSTEM returned %+v, want one row of 4 columns", results)
		}
		if db := string(results[0].Rows[0][3]); db != "postgres" {
			t.Errorf("IDENTIFY_SYSTEM dbname = %q, want postgres", db)
		}
	})

	t.Run("password required over TCP", func(t *testing.T) {
		t.Parallel()
		if c.Password() == "" || !strings.Contains(c.URL("x"), c.Password()) {
			t.Fatalf("URL %q does not carry the password", c.URL("x"))
		}
		bad := strings.Replace(c.URL("postgres"), c.Password(), "wrong", 1)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgconn.Connect(ctx, bad)
		if err == nil {
			conn.Close(ctx)
			t.Fatal("connected with a wrong password")
		}
		if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Errorf("connect with wrong password: %v, want SQLSTATE 28P01", err)
		}
	})
}

func TestCluster_StopStartKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.NewCluster(t, nil)
	url, port := c.URL("postgres"), c.Port()
	conn := connect(t, url)
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before stop')"); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if ok, err := refusesConnections(url); !ok {
		t.Fatalf("after Stop: %v", err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if c.Port() != port {
		t.Errorf("port changed from %d to %d", port, c.Port())
	}
	var v string
	if err := connect(t, url).QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "before stop" {
		t.Errorf("after Stop and Start: SELECT v = %q, %v; want %q", v, err, "before stop")
	}
}

func TestCluster_StopImmediateKeepsCommittedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.NewCluster(t, nil)
	conn := connect(t, c.URL("postgres"))
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (n int)"); err != nil {
		t.Fatal(err)
	}
	const rows = 50
	for n := range rows { // one commit each, the last just before the crash
		if _, err := conn.Exec(ctx, "INSERT INTO kept VALUES ($1)", n); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.StopImmediate(ctx); err != nil {
		t.Fatalf("StopImmediate: %v", err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	var count int
	if err := connect(t, c.URL("postgres")).QueryRow(ctx, "SELECT count(*) FROM kept").Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != rows {
		t.Errorf("after StopImmediate and Start: %d rows, want %d", count, rows)
	}
	log, err := os.ReadFile(c.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "automatic recovery in progress") {
		t.Errorf("server log shows no crash recovery after StopImmediate:\n%s", log)
	}
}

func TestCluster_ReloadAndRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.NewCluster(t, nil)
	url := c.URL("postgres")
	conn := connect(t, url)

	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET wal_sender_timeout = '7s'"); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	pgtest.WaitFor(t, 10*time.Second, "wal_sender_timeout to be reloaded", func() (bool, error) {
		var v string
		err := conn.QueryRow(ctx, "SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout'").Scan(&v)
		return v == "7000", err
	})

	var before, after time.Time
	if err := conn.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&before); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET max_wal_senders = 20"); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	conn = connect(t, url)
	if err := conn.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if !after.After(before) {
		t.Errorf("postmaster start time %v not after %v: no restart", after, before)
	}
	if got := show(t, conn, "max_wal_senders"); got != "20" {
		t.Errorf("after Restart: max_wal_senders = %s, want 20", got)
	}
}

func TestCluster_Destroy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		before func(*pgcluster.Cluster) error
	}{
		{"running", func(*pgcluster.Cluster) error { return nil }},
		{"stopped", func(c *pgcluster.Cluster) error { return c.Stop(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := pgcluster.Start(ctx, pgcluster.Options{Logf: t.Logf})
			skipIfNoBinaries(t, err)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Destroy(ctx) })
			if err := tc.before(c); err != nil {
				t.Fatal(err)
			}
			if err := c.Destroy(ctx); err != nil {
				t.Fatalf("Destroy: %v", err)
			}
			if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cluster directory after Destroy: %v, want it gone", err)
			}
			if ok, err := refusesConnections(c.URL("postgres")); !ok {
				t.Errorf("after Destroy: %v", err)
			}
			if err := c.Destroy(ctx); err != nil {
				t.Errorf("second Destroy: %v", err)
			}
			if err := c.Start(ctx); !errors.Is(err, pgcluster.ErrDestroyed) {
				t.Errorf("Start after Destroy: %v, want ErrDestroyed", err)
			}
		})
	}
}

// TestStart_FailureLeavesNothing checks that a server that cannot start is
// reported with its log and cleaned up.
func TestStart_FailureLeavesNothing(t *testing.T) {
	t.Parallel()
	parent := worldReadableDir(t)
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{
		Dir:      parent,
		Settings: map[string]string{"shared_buffers": "plenty"},
	})
	skipIfNoBinaries(t, err)
	if err == nil {
		t.Fatal("Start succeeded with shared_buffers = plenty")
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("Start error lacks the server log's reason: %v", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("failed Start left %v in %s", entries, parent)
	}
}

func TestStart_UnreachableDir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to another user")
	}
	parent := t.TempDir() // 0700, owned by root
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{Dir: parent})
	skipIfNoBinaries(t, err)
	if err == nil || !strings.Contains(err.Error(), "cannot enter") {
		t.Fatalf("Start in a directory the postgres user cannot enter: %v, want an error saying so", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("failed Start left %v in %s", entries, parent)
	}
}

func TestStart_RejectsSettings(t *testing.T) {
	t.Parallel()
	for name, settings := range map[string]map[string]string{
		"port":              {"port": "5433"},
		"listen_addresses":  {"LISTEN_ADDRESSES": "*"},
		"socket directory":  {"unix_socket_directories": "/tmp"},
		"name with space":   {"work mem": "1MB"},
		"value with a line": {"work_mem": "1MB\nfsync = on"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := pgcluster.Start(context.Background(), pgcluster.Options{Settings: settings})
			if err == nil {
				c.Destroy(context.Background())
				t.Fatalf("Start accepted settings %q", settings)
			}
			if !strings.HasPrefix(err.Error(), "settings: ") {
				t.Errorf("Start(%q) = %v, want a settings error", settings, err)
			}
		})
	}
}

// TestCluster_OwnerDies checks that the watchdog stops the server and
// removes its directory when the owning process exits without Destroy.
func TestCluster_OwnerDies(t *testing.T) {
	t.Parallel()
	if os.Getenv("PGCLUSTER_HELPER") == "1" {
		t.Skip("running as the helper")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperOwnerDies$", "-test.v")
	cmd.Env = append(os.Environ(), "PGCLUSTER_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var dir, url string
	scanner := bufio.NewScanner(strings.NewReader(string(out)))
	for scanner.Scan() {
		if rest, ok := strings.CutPrefix(scanner.Text(), "CLUSTER "); ok {
			dir, url, _ = strings.Cut(rest, " ")
		}
	}
	if strings.Contains(string(out), "--- SKIP") {
		skipIfNoBinaries(t, fmt.Errorf("helper: %w", pgcluster.ErrNoBinaries))
	}
	if dir == "" {
		t.Fatalf("helper printed no cluster:\n%s", out)
	}
	pgtest.WaitFor(t, 30*time.Second, "the watchdog to stop the server", func() (bool, error) {
		return refusesConnections(url)
	})
	pgtest.WaitFor(t, 30*time.Second, "the watchdog to remove "+dir, func() (bool, error) {
		_, err := os.Stat(dir)
		return errors.Is(err, os.ErrNotExist), nil
	})
}

// TestHelperOwnerDies is the owner process of TestCluster_OwnerDies: it
// starts a cluster and exits without destroying it.
func TestHelperOwnerDies(t *testing.T) {
	if os.Getenv("PGCLUSTER_HELPER") != "1" {
		t.Skip("helper for TestCluster_OwnerDies")
	}
	c, err := pgcluster.Start(context.Background(), pgcluster.Options{})
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("CLUSTER %s %s\n", c.Dir(), c.URL("postgres"))
	os.Exit(0) // no Destroy: the watchdog must clean up
}

// worldReadableDir returns an empty directory the postgres OS user can use
// as Options.Dir, removed at the end of the test.
func worldReadableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(dir)
}

// TestStart_BinDir starts a cluster from the binaries PG_BINDIR names: the
// server that runs is theirs.
func TestStart_BinDir(t *testing.T) {
	t.Parallel()
	c, err := pgcluster.Start(context.Background(), pgcluster.Options{Logf: t.Logf})
	skipIfNoBinaries(t, err)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Destroy(context.Background()) })
	if want := os.Getenv(pgcluster.BinDirEnv); want != "" && c.BinDir() != want {
		t.Errorf("BinDir() = %s, want %s from %s", c.BinDir(), want, pgcluster.BinDirEnv)
	}
	out, err := exec.Command(filepath.Join(c.BinDir(), "postgres"), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	// "postgres (PostgreSQL) 17.10" → server_version_num 1700xx.
	fields := strings.Fields(string(out))
	major := strings.SplitN(fields[len(fields)-1], ".", 2)[0]
	if got := show(t, connect(t, c.URL("postgres")), "server_version_num"); !strings.HasPrefix(got, major) {
		t.Errorf("server_version_num %s, but %s/postgres --version says %s", got, c.BinDir(), strings.TrimSpace(string(out)))
	}
}

// TestStart_UnreachableBinDir gives, as root, server binaries in a
// directory the postgres user cannot enter: Start says so up front.
func TestStart_UnreachableBinDir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to another user")
	}
	hidden := filepath.Join(t.TempDir(), "bin") // under a 0700 directory owned by root
	if err := os.Mkdir(hidden, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		if err := os.WriteFile(filepath.Join(hidden, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{BinDir: hidden, Dir: worldReadableDir(t)})
	if err == nil || !strings.Contains(err.Error(), "cannot enter") || !strings.Contains(err.Error(), hidden) {
		t.Fatalf("Start with binaries the postgres user cannot reach: %v, want an error saying so", err)
	}
}
