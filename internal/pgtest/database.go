package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// maxIdentifier is PostgreSQL's limit on a name (NAMEDATALEN-1 bytes).
const maxIdentifier = 63

var (
	dbSeq atomic.Int64
	// runTag keeps names unique between test binaries sharing a server
	// through TEST_DATABASE_URL.
	runTag = func() string {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}()
)

// NewDatabase creates an empty database on the shared server and returns its
// URL. The database is dropped when the test ends, together with its
// replication slots and any connection to it, replication ones included.
func NewDatabase(t testing.TB) string {
	t.Helper()
	Available(t)
	name := databaseName(t.Name())
	dbURL, err := withDatabase(shared.adminURL, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := adminExec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := dropDatabase(ctx, name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return dbURL
}

// databaseName derives a valid, unquoted-safe and unique name from a test's
// name: "TestFoo/bar baz" becomes "t_testfoo_bar_baz_<run>_<n>".
func databaseName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "_"):
			b.WriteByte('_')
		}
	}
	suffix := fmt.Sprintf("_%s_%d", runTag, dbSeq.Add(1))
	base := b.String()
	if room := maxIdentifier - len("t_") - len(suffix); len(base) > room {
		base = base[:room]
	}
	return "t_" + strings.Trim(base, "_") + suffix
}

// withDatabase returns base, a URL or keyword/value connection string, with
// its database replaced by name.
func withDatabase(base, name string) (string, error) {
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", fmt.Errorf("parse database URL: %w", err)
		}
		u.Path, u.RawPath = "/"+name, ""
		return u.String(), nil
	}
	// In a keyword/value string the last value of a keyword wins.
	return base + " dbname=" + name, nil
}

func adminExec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, shared.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// dropDatabase drops database name. DROP DATABASE fails while the database
// has a replication slot, and WITH (FORCE) does not end walsenders using
// one, so those go first; a slot stays active for a moment after its
// walsender ends, hence the retries.
func dropDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, shared.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		slots, err := dropSlots(ctx, conn, name)
		if err == nil && slots == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop replication slots (%d left): %w", slots, errOr(err, ctx.Err()))
		case <-time.After(pollInterval):
		}
	}
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// dropSlots ends the walsenders of database name, drops its inactive slots
// and returns how many slots are left.
func dropSlots(ctx context.Context, conn *pgx.Conn, name string) (int, error) {
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND backend_type = 'walsender'`, name); err != nil {
		return -1, err
	}
	// A slot may turn active between the query and the drop; the caller retries.
	_, dropErr := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE database = $1 AND NOT active`, name)
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, name).Scan(&left); err != nil {
		return -1, err
	}
	return left, dropErr
}

func errOr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}
