package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/usersync/usersync/internal/pgtest"
)

// TestDev_Demo runs what `make demo` runs: a throwaway cluster, the
// replicator, the sample events through the WAL, the tables printed.
func TestDev_Demo(t *testing.T) {
	pgtest.Available(t)
	var out bytes.Buffer
	if err := runDev(context.Background(), &out, slog.New(slog.DiscardHandler), true); err != nil {
		t.Fatalf("dev --demo: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"Example Renamed", "example.renamed@example.org", // the newer Clerk update wins over the late create
		"Jordan R.", // the Stack update
		"stale",     // the late create is recorded as stale
		"redelivered (same svix-id: not stored again)",
		"cannot tell which user was deleted", // the malformed event is a reject
	} {
		if !strings.Contains(got, want) {
			t.Errorf("demo output lacks %q:\n%s", want, got)
		}
	}
	history := got[strings.Index(got, "neon_auth.users_sync_history"):strings.Index(got, "neon_auth.outbox_rejects")]
	if strings.Contains(history, "backfill") {
		t.Errorf("demo events were folded by the catch-up, not streamed:\n%s", history)
	}
}
