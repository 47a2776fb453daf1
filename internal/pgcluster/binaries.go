package pgcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// debianBinGlob is where Debian and Ubuntu install each major version's
// server binaries; they are not on PATH there.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// serverBinaries are the programs a cluster needs from one directory.
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

// BinDirEnv names the environment variable that chooses the directory of
// the server binaries, overriding the search of findBinDir: `make
// test-matrix` runs the suite once per PostgreSQL version this way.
const BinDirEnv = "PG_BINDIR"

// chooseBinDir returns explicit, else $PG_BINDIR, else what findBinDir
// finds. A directory that was asked for but lacks the binaries is an error,
// never a silent fall-back to another version.
func chooseBinDir(ctx context.Context, explicit string) (string, error) {
	source := "Options.BinDir"
	if explicit == "" {
		explicit, source = os.Getenv(BinDirEnv), BinDirEnv
	}
	if explicit == "" {
		return findBinDir(ctx, debianBinGlob)
	}
	dir, err := filepath.Abs(explicit)
	if err != nil || !hasServerBinaries(dir) {
		return "", fmt.Errorf("%s=%s does not hold the PostgreSQL server binaries (initdb, pg_ctl, postgres): point it at a server's bin directory, such as the one scripts/install-postgres.sh prints, or unset it", source, explicit)
	}
	return dir, nil
}

// findBinDir returns the directory holding the server binaries: the one
// pg_config reports, else the one of initdb on PATH, else the newest version
// matching glob.
func findBinDir(ctx context.Context, glob string) (string, error) {
	// pg_config also ships with libpq-dev, which has no server binaries, so
	// every candidate is checked rather than trusted.
	if path, err := exec.LookPath("pg_config"); err == nil {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(ctx, path, "--bindir").Output()
		cancel()
		if dir := strings.TrimSpace(string(out)); err == nil && hasServerBinaries(dir) {
			return dir, nil
		}
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		// initdb finds postgres next to its real path, so resolve symlinks
		// such as /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb.
		if real, err := filepath.EvalSymlinks(path); err == nil && hasServerBinaries(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob(glob)
	dirs = slices.DeleteFunc(dirs, func(d string) bool { return !hasServerBinaries(d) })
	if len(dirs) == 0 {
		return "", ErrNoBinaries
	}
	// Compare versions numerically: "9.6" is older than "15".
	return slices.MaxFunc(dirs, func(a, b string) int {
		return slices.Compare(versionOf(a), versionOf(b))
	}), nil
}

func hasServerBinaries(dir string) bool {
	if dir == "" {
		return false
	}
	for _, name := range serverBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionOf parses the version directory of .../<version>/bin, such as
// "15" or "9.6", into its numbers; an unparsable part counts as -1.
func versionOf(binDir string) []int {
	var v []int
	for _, part := range strings.Split(filepath.Base(filepath.Dir(binDir)), ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			n = -1
		}
		v = append(v, n)
	}
	return v
}
