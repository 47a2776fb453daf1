package pgtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/usersync/usersync/internal/pgtest"
)

func TestMain(m *testing.M) {
	pgtest.Main(m)
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

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

func TestNewDatabase_Isolated(t *testing.T) {
	t.Parallel()
	names := make(chan string, 2)
	for _, sub := range []string{"first", "second"} {
		t.Run(sub, func(t *testing.T) {
			t.Parallel()
			conn := connect(t, pgtest.NewDatabase(t))
			var name string
			var tables int
			err := conn.QueryRow(context.Background(), `SELECT current_database(),
				(SELECT count(*) FROM pg_tables WHERE schemaname = 'public')`).Scan(&name, &tables)
			if err != nil {
				t.Fatal(err)
			}
			if tables != 0 {
				t.Errorf("new database %s has %d tables, want none", name, tables)
			}
			// Both create the same table: each must see only its own row.
			exec(t, conn, "CREATE TABLE t (v text)")
			exec(t, conn, "INSERT INTO t VALUES ($1)", sub)
			var rows []string
			if err := conn.QueryRow(context.Background(), "SELECT array_agg(v) FROM t").Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 || rows[0] != sub {
				t.Errorf("table t in %s holds %q, want only %q", name, rows, sub)
			}
			names <- name
		})
	}
	t.Cleanup(func() {
		close(names)
		a, b := <-names, <-names
		if a != "" && a == b {
			t.Errorf("both subtests got database %s", a)
		}
	})
}

func TestNewDatabase_Name(t *testing.T) {
	t.Parallel()
	long := "Ünïcode/and spaces-" + strings.Repeat("very long name ", 10)
	t.Run(long, func(t *testing.T) {
		t.Parallel()
		var name string
		if err := connect(t, pgtest.NewDatabase(t)).QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if len(name) > 63 || !validName.MatchString(name) {
			t.Errorf("database name %q: want at most 63 bytes of [a-z0-9_]", name)
		}
		if !strings.Contains(name, "_and_spaces_very_long") {
			t.Errorf("database name %q does not show the test's name", name)
		}
	})
}

// TestNewDatabase_DroppedAtCleanup leaves an inactive slot and a streaming
// walsender in a database, which would make a plain DROP DATABASE fail, and
// checks that the database and its slots are gone after the subtest.
func TestNewDatabase_DroppedAtCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	observer := connect(t, pgtest.NewDatabase(t))
	var name string
	var repl *pgconn.PgConn
	t.Cleanup(func() {
		if repl != nil {
			repl.Close(ctx) // already terminated by the drop; the error is expected
		}
	})

	t.Run("inner", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		conn := connect(t, url)
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		exec(t, conn, "CREATE PUBLICATION pub FOR ALL TABLES")
		exec(t, conn, "SELECT pg_create_logical_replication_slot('idle_slot', 'pgoutput')")
		exec(t, conn, "SELECT pg_create_logical_replication_slot('busy_slot', 'pgoutput')")

		config, err := pgconn.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		config.RuntimeParams["replication"] = "database"
		if repl, err = pgconn.ConnectConfig(ctx, config); err != nil {
			t.Fatalf("replication connect: %v", err)
		}
		err = pglogrepl.StartReplication(ctx, repl, "busy_slot", 0, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names 'pub'"},
		})
		if err != nil {
			t.Fatalf("start replication: %v", err)
		}
		pgtest.WaitFor(t, 10*time.Second, "busy_slot to be active", func() (bool, error) {
			var active bool
			err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = 'busy_slot'").Scan(&active)
			return active, err
		})
		// The replication connection stays open: cleanup must cope.
	})

	if name == "" {
		t.Fatal("inner subtest recorded no database")
	}
	var databases, slots int
	err := observer.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1),
		(SELECT count(*) FROM pg_replication_slots WHERE database = $1)`, name).Scan(&databases, &slots)
	if err != nil {
		t.Fatal(err)
	}
	if databases != 0 || slots != 0 {
		t.Errorf("after the subtest: %d databases named %s and %d slots in it, want none", databases, name, slots)
	}
}

func TestNewCluster(t *testing.T) {
	t.Parallel()
	var dir, url string
	t.Run("inner", func(t *testing.T) {
		c := pgtest.NewCluster(t, map[string]string{"wal_sender_timeout": "5s"})
		dir, url = c.Dir(), c.URL("postgres")
		var timeout string
		if err := connect(t, url).QueryRow(context.Background(), "SHOW wal_sender_timeout").Scan(&timeout); err != nil {
			t.Fatal(err)
		}
		if timeout != "5s" {
			t.Errorf("wal_sender_timeout = %s, want the 5s passed to NewCluster", timeout)
		}
	})
	if dir == "" {
		return // the subtest skipped or failed, saying why
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory %s after the subtest: %v, want it gone", dir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if conn, err := pgconn.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Error("cluster still accepts connections after the subtest")
	}
}

// recorder is a testing.TB whose Fatalf records instead of stopping.
type recorder struct {
	testing.TB
	fatal string
}

func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }

func TestWaitFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		timeout   time.Duration
		trueAfter int   // calls before cond reports true; -1 never
		err       error // returned by cond while false
		wantFatal []string
	}{
		{name: "at once", timeout: time.Second, trueAfter: 0},
		{name: "after errors", timeout: 5 * time.Second, trueAfter: 3, err: errors.New("not yet")},
		{name: "timeout with error", timeout: 50 * time.Millisecond, trueAfter: -1, err: errors.New("boom"),
			wantFatal: []string{"timed out after 50ms", "the thing", "boom"}},
		{name: "timeout", timeout: 50 * time.Millisecond, trueAfter: -1,
			wantFatal: []string{"timed out after 50ms", "the thing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &recorder{TB: t}
			calls := 0
			start := time.Now()
			pgtest.WaitFor(r, tc.timeout, "the thing", func() (bool, error) {
				calls++
				if tc.trueAfter >= 0 && calls > tc.trueAfter {
					return true, nil
				}
				return false, tc.err
			})
			for _, want := range tc.wantFatal {
				if !strings.Contains(r.fatal, want) {
					t.Errorf("Fatalf message %q lacks %q", r.fatal, want)
				}
			}
			if tc.wantFatal == nil {
				if r.fatal != "" {
					t.Errorf("unexpected Fatalf: %s", r.fatal)
				}
				if calls != tc.trueAfter+1 {
					t.Errorf("cond called %d times, want %d", calls, tc.trueAfter+1)
				}
			} else if elapsed := time.Since(start); elapsed < tc.timeout {
				t.Errorf("gave up after %s, before the %s timeout", elapsed, tc.timeout)
			}
		})
	}
}
