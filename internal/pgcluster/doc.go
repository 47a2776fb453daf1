// Package pgcluster runs a throwaway PostgreSQL server from the installed
// server binaries: a fresh initdb in a temporary directory, configured for
// logical replication and listening on a free port of 127.0.0.1.
//
// Tests use it (through internal/pgtest) so that they always run against a
// real server, and `replicator dev` uses it to run a demo without any setup.
// The server binaries are those of Options.BinDir, else of the directory in
// PG_BINDIR (how `make test-matrix` runs the suite on each supported
// major), else the ones installed on the machine.
// PostgreSQL refuses to run as root, so when the caller is root the binaries
// run as the "postgres" OS user, which owns the cluster's directory.
//
// A cluster never outlives its owner: Destroy stops it and removes its
// directory, and a small watchdog process does the same if the owning
// process dies without calling Destroy (a crash, a test timeout, Ctrl-C).
package pgcluster
