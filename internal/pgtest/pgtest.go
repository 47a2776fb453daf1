package pgtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/internal/pgcluster"
)

// shared is set by Run before the tests run and only read by them.
var shared struct {
	initialised bool
	adminURL    string // a database on the shared server with rights to CREATE DATABASE
	unavailable error  // why there is no server; tests skip with it (never under CI)
}

// Main runs the package's tests against a shared server and exits with their
// status. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit: it starts the shared cluster (or uses
// TEST_DATABASE_URL), runs the tests, destroys the cluster and returns the
// exit code. Use it to add checks such as goleak.Find after the tests.
func Run(m *testing.M) int {
	shared.initialised = true
	if fuzzWorker() {
		// A fuzzing worker runs only the fuzz target, which needs no
		// server; starting one per worker would stall every fuzz run.
		shared.unavailable = errors.New("not started in a fuzzing worker")
		return m.Run()
	}
	if url := os.Getenv("TEST_DATABASE_URL"); url != "" {
		if err := ping(url); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: TEST_DATABASE_URL: %v\n", err)
			return 1
		}
		shared.adminURL = url
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{})
	cancel()
	switch {
	case errors.Is(err, pgcluster.ErrNoBinaries):
		reason := fmt.Errorf("%w, or set TEST_DATABASE_URL", err)
		if inCI() {
			fmt.Fprintf(os.Stderr, "pgtest: %v\npgtest: CI=true, so tests that need PostgreSQL fail instead of skipping\n", reason)
			return 1
		}
		shared.unavailable = reason
		return m.Run()
	case err != nil:
		fmt.Fprintf(os.Stderr, "pgtest: start PostgreSQL: %v\n", err)
		return 1
	}
	shared.adminURL = cluster.URL("postgres")
	code := m.Run()
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	err = cluster.Destroy(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: destroy PostgreSQL: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Available skips the test, or fails it under CI=true, when there is no
// shared PostgreSQL server.
func Available(t testing.TB) {
	t.Helper()
	if !shared.initialised {
		t.Fatal("pgtest: the package's TestMain must call pgtest.Main(m)")
	}
	if shared.unavailable != nil {
		skipOrFail(t, shared.unavailable)
	}
}

func skipOrFail(t testing.TB, reason error) {
	t.Helper()
	if inCI() {
		t.Fatalf("PostgreSQL is unavailable, and CI=true forbids skipping: %v", reason)
	} else {
		t.Skipf("PostgreSQL is unavailable: %v", reason)
	}
}

// fuzzWorker reports whether this test binary is a worker that 'go test
// -fuzz' started (flag -test.fuzzworker).
func fuzzWorker() bool {
	if !flag.Parsed() {
		flag.Parse()
	}
	f := flag.Lookup("test.fuzzworker")
	return f != nil && f.Value.String() == "true"
}

func inCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

func ping(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
