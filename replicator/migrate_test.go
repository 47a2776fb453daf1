package replicator

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgtest"
)

func TestMigrate_ConcurrentAndIdempotent(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	const n = 4
	var wg sync.WaitGroup
	applied := make([][]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close(ctx)
			applied[i], errs[i] = Migrate(ctx, conn)
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("migrate %d: %v", i, errs[i])
		}
		total += len(applied[i])
	}
	ms, _ := Migrations()
	if total != len(ms) {
		t.Errorf("%d processes applied %d migrations in all, want each of the %d exactly once", n, total, len(ms))
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	again, err := Migrate(ctx, conn)
	if err != nil || len(again) != 0 {
		t.Errorf("second migrate applied %v (%v), want nothing", again, err)
	}
	if v, err := SchemaVersion(ctx, conn); err != nil || v != LatestSchemaVersion() {
		t.Errorf("schema version = %d (%v), want %d", v, err, LatestSchemaVersion())
	}
	var cols string
	if err := conn.QueryRow(ctx, `SELECT string_agg(column_name, ',' ORDER BY ordinal_position)
		FROM information_schema.columns WHERE table_schema = 'neon_auth' AND table_name = 'users_sync'`).Scan(&cols); err != nil {
		t.Fatal(err)
	}
	if want := "id,name,email,created_at,updated_at,deleted_at,raw_json"; cols != want {
		t.Errorf("users_sync columns = %s, want exactly %s", cols, want)
	}
}
