package webhook

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
)

// startPgBouncer runs a PgBouncer in transaction mode, with its default
// settings otherwise, in front of the database at dbURL and returns a URL
// through it. It skips when the pgbouncer binary is not installed, except
// under CI, which installs it (.ci/run).
func startPgBouncer(t *testing.T, dbURL string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
		if _, err := os.Stat(bin); err != nil {
			if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
				t.Fatal("pgbouncer is not installed (apt-get install pgbouncer); under CI=true this test may not skip")
			}
			t.Skip("pgbouncer is not installed (apt-get install pgbouncer)")
		}
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "usersync-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	db := u.Path[1:]
	ini := fmt.Sprintf(`[databases]
%s = host=%s port=%s dbname=%s user=%s password=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
logfile = %s/pgbouncer.log
`, db, u.Hostname(), u.Port(), db, u.User.Username(), pw, port, dir)
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 { // PgBouncer refuses to run as root
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root without a postgres user for pgbouncer")
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pooled := *u
	pooled.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	q := pooled.Query()
	q.Set("default_query_exec_mode", "simple_protocol") // as docs/webhooks.md advises for a pooler
	pooled.RawQuery = q.Encode()
	pgtest.WaitFor(t, 10*time.Second, "pgbouncer to accept connections", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pooled.String())
		if err != nil {
			return false, err
		}
		defer conn.Close(ctx)
		return true, conn.Ping(ctx)
	})
	return pooled.String()
}

// TestServe_ThroughPgBouncer: docs/webhooks.md says the receiver "only
// inserts, so on Neon it may use the pooled host (-pooler)", i.e. PgBouncer
// in transaction mode. A signed delivery through it must be stored; it was
// answered 503, as PgBouncer refused synchronous_commit as a startup
// parameter. (Found in review.)
func TestServe_ThroughPgBouncer(t *testing.T) {
	t.Parallel()
	pooled := startPgBouncer(t, migratedDatabase(t))
	s := startServer(t, Config{DatabaseURL: pooled, InsertTimeout: 3 * time.Second})
	id := newMessageID()
	got, err := s.send(id, genericBody("u_pooled", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != 200 || got.Outcome != "stored" {
		t.Fatalf("delivery through PgBouncer = %+v, want 200 stored; logs:\n%s", got, s.logs.String())
	}
}

// TestServe_CommitsDurablyWhateverTheDefault: a 2xx promises the event is
// durable, so a database default of synchronous_commit=off must not apply
// to the insert's commit. A trigger records the setting the insert ran
// under.
func TestServe_CommitsDurablyWhateverTheDefault(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := migratedDatabase(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `
		CREATE TABLE public.commit_setting (setting text);
		CREATE FUNCTION public.record_commit_setting() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.commit_setting VALUES (current_setting('synchronous_commit'));
			RETURN NULL;
		END $$;
		CREATE TRIGGER record_commit_setting AFTER INSERT ON neon_auth.outbox
			FOR EACH ROW EXECUTE FUNCTION public.record_commit_setting()`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = off', current_database()); END $$"); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{DatabaseURL: dbURL})
	got, err := s.send(newMessageID(), genericBody("u_durable", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != 200 || got.Outcome != "stored" {
		t.Fatalf("delivery = %+v, want 200 stored", got)
	}
	var setting string
	if err := conn.QueryRow(ctx, "SELECT setting FROM public.commit_setting").Scan(&setting); err != nil {
		t.Fatal(err)
	}
	if setting != "on" {
		t.Errorf("the insert committed with synchronous_commit=%s, want on", setting)
	}
}
