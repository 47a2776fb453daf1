package pgcluster

import "errors"

// ErrNoBinaries is returned by Start when no PostgreSQL server binaries
// (initdb, pg_ctl, postgres) can be found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries found (tried pg_config --bindir, initdb on PATH and /usr/lib/postgresql/*/bin): install the postgresql package (apt-get install -y postgresql)")

// ErrDestroyed is returned by the methods of a Cluster after Destroy.
var ErrDestroyed = errors.New("cluster destroyed")
