package replicator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
)

func TestNamedUsers(t *testing.T) {
	t.Parallel()
	cases := []struct{ payload, want string }{
		{`{"id": "u1", "name": "x"}`, "[u1]"},
		{`{"type": "user.updated", "data": {"id": "u2"}}`, "[u2]"},
		{`{"id": "evt_1", "data": {"id": "u3"}}`, "[evt_1 u3]"},
		{`{"id": 7}`, "[]"},
		{`{"data": "x"}`, "[]"},
		{`[1, 2]`, "[]"},
		{`not json`, "[]"},
	}
	for _, tc := range cases {
		if got := fmt.Sprint(namedUsers([]byte(tc.payload))); got != tc.want {
			t.Errorf("namedUsers(%s) = %s, want %s", tc.payload, got, tc.want)
		}
	}
}

// TestRun_RefusesTheSchemaBeforeOperations: a database migrated by an older
// binary (without migration 0002) gets the usual sentence.
func TestRun_RefusesTheSchemaBeforeOperations(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ms, err := Migrations()
	if err != nil || len(ms) < 2 {
		t.Fatalf("migrations: %v (%d)", err, len(ms))
	}
	if _, err := applyMigration(ctx, conn, ms[0]); err != nil {
		t.Fatal(err)
	}
	err = Run(ctx, Config{DatabaseURL: url, Slot: "s_old_schema"})
	var ce *ConfigError
	want := fmt.Sprintf("version 1 but this replicator needs %d: run 'replicator migrate' first", LatestSchemaVersion())
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), want) {
		t.Errorf("Run on a version-1 schema: %v; want a ConfigError telling to run 'replicator migrate'", err)
	}
}
