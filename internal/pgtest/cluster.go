package pgtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/usersync/usersync/internal/pgcluster"
)

// NewCluster starts a dedicated cluster for one test, for tests that stop,
// restart or crash the server or change its settings; it is destroyed when
// the test ends. It needs local server binaries even when
// TEST_DATABASE_URL is set.
func NewCluster(t testing.TB, settings map[string]string) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Settings: settings, Logf: t.Logf})
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		skipOrFail(t, fmt.Errorf("a dedicated cluster needs local server binaries: %w", err))
	}
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cluster.Destroy(ctx); err != nil {
			t.Errorf("destroy cluster: %v", err)
		}
	})
	return cluster
}
