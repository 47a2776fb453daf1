package pgcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configures Start.
type Options struct {
	// Settings are extra postgresql.conf settings, e.g. "wal_sender_timeout": "5s"; they override the defaults.
	Settings map[string]string
	// Logf, when set, receives a line for each step of the cluster's life (start, stop, destroy).
	Logf func(format string, args ...any)
	// Dir is the parent of the cluster's temporary directory (as root, one the postgres user can enter); empty means os.TempDir().
	Dir string
	// BinDir is the directory of initdb, pg_ctl and postgres; empty means $PG_BINDIR, else the installed server found on the machine.
	BinDir string
}

// Cluster is a running (or stopped) throwaway PostgreSQL server. Its methods
// are safe for concurrent use.
type Cluster struct {
	binDir   string
	dir      string // everything of the cluster lives here
	dataDir  string
	logPath  string
	password string
	owner    owner
	logf     func(format string, args ...any)
	watchdog *watchdog

	port      int        // fixed once Start returns
	mu        sync.Mutex // serialises lifecycle operations
	destroyed bool
}

// Start creates a cluster with initdb in a new temporary directory and
// starts it. On error nothing is left behind.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	begin := time.Now()
	if err := validateSettings(opts.Settings); err != nil {
		return nil, err
	}
	binDir, err := chooseBinDir(ctx, opts.BinDir)
	if err != nil {
		return nil, err
	}
	own, err := currentOwner()
	if err != nil {
		return nil, err
	}
	if err := own.checkReachable(filepath.Join(binDir, "postgres")); err != nil {
		return nil, fmt.Errorf("server binaries in %s: %w; install them where it can, as scripts/install-postgres.sh does", binDir, err)
	}
	dir, err := makeDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		binDir:   binDir,
		dir:      dir,
		dataDir:  filepath.Join(dir, "data"),
		logPath:  filepath.Join(dir, "server.log"),
		owner:    own,
		logf:     opts.Logf,
		password: randomPassword(),
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Destroy(ctx))
		}
	}()
	if err := c.prepareDir(); err != nil {
		return nil, err
	}
	if c.watchdog, err = startWatchdog(own, c.bin("pg_ctl"), c.dataDir, dir); err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	if err := c.initdb(ctx); err != nil {
		return nil, err
	}
	if c.port, err = freePort(); err != nil {
		return nil, err
	}
	if err := c.configure(opts.Settings); err != nil {
		return nil, err
	}
	if err := c.start(ctx, opts.Settings); err != nil {
		return nil, err
	}
	c.logf("pgcluster: started PostgreSQL from %s on 127.0.0.1:%d in %s (dir %s)", binDir, c.port, time.Since(begin).Round(time.Millisecond), dir)
	return c, nil
}

// makeDir creates the cluster's directory under parent, or os.TempDir().
func makeDir(parent string) (string, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	parent, err := filepath.Abs(parent)
	if err != nil {
		return "", fmt.Errorf("cluster directory: %w", err)
	}
	dir, err := os.MkdirTemp(parent, "pgcluster-")
	if err != nil {
		return "", fmt.Errorf("cluster directory: %w", err)
	}
	return dir, nil
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.binDir, name) }

// prepareDir hands the directory to the owner and checks what would
// otherwise fail later with a less helpful message.
func (c *Cluster) prepareDir() error {
	if err := c.owner.chown(c.dir); err != nil {
		return fmt.Errorf("cluster directory: %w", err)
	}
	if err := c.owner.checkReachable(c.dir); err != nil {
		return fmt.Errorf("%w: choose a directory it can reach, such as one under /tmp", err)
	}
	// The kernel limits a socket path to 107 bytes.
	if socket := filepath.Join(c.dir, ".s.PGSQL.65535"); len(socket) > 107 {
		return fmt.Errorf("cluster directory %s is too long for a unix socket path: choose a shorter Dir", c.dir)
	}
	return nil
}

func (c *Cluster) initdb(ctx context.Context) error {
	pwfile := filepath.Join(c.dir, "pwfile")
	if err := c.owner.writeFile(pwfile, []byte(c.password+"\n"), 0o600); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	defer os.Remove(pwfile)
	err := c.owner.run(ctx, c.dir, c.bin("initdb"),
		"-D", c.dataDir, "-U", "postgres",
		"--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile="+pwfile,
		"-E", "UTF8", "--locale=C", "--no-sync")
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}

// configure writes pg_hba.conf and the settings file, and includes the
// latter from postgresql.conf.
func (c *Cluster) configure(settings map[string]string) error {
	if err := c.owner.writeFile(filepath.Join(c.dataDir, "pg_hba.conf"), []byte(hbaFile), 0o600); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if err := c.owner.writeFile(filepath.Join(c.dataDir, confName), configFile(c.port, c.dir, settings), 0o600); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	_, err = fmt.Fprintf(f, "\ninclude '%s'\n", confName)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	return nil
}

// start starts the server for the first time. The port was free when
// chosen, but another process may have taken it since, so start picks a new
// one a few times.
func (c *Cluster) start(ctx context.Context, settings map[string]string) error {
	for attempt := 1; ; attempt++ {
		logSize := fileSize(c.logPath)
		err := c.pgctlStart(ctx)
		if err == nil || attempt == 5 || !bytes.Contains(readFrom(c.logPath, logSize), []byte("Address already in use")) {
			return err
		}
		c.logf("pgcluster: port %d was taken, trying another", c.port)
		if c.port, err = freePort(); err != nil {
			return err
		}
		if err := c.configure(settings); err != nil {
			return err
		}
	}
}

func (c *Cluster) pgctlStart(ctx context.Context) error {
	if err := c.pgctl(ctx, "-l", c.logPath, "-w", "-t", "60", "start"); err != nil {
		return fmt.Errorf("start server: %w%s", err, c.logTail())
	}
	return nil
}

func (c *Cluster) pgctl(ctx context.Context, args ...string) error {
	return c.owner.run(ctx, c.dir, c.bin("pg_ctl"), append([]string{"-D", c.dataDir}, args...)...)
}

// URL returns the URL of database dbname as the superuser postgres, over TCP.
func (c *Cluster) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", c.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port())),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Password returns the password of the superuser postgres.
func (c *Cluster) Password() string { return c.password }

// Port returns the TCP port the server listens on at 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// BinDir returns the directory of the server binaries the cluster runs.
func (c *Cluster) BinDir() string { return c.binDir }

// Dir returns the cluster's temporary directory, removed by Destroy.
func (c *Cluster) Dir() string { return c.dir }

// LogPath returns the path of the server's log file.
func (c *Cluster) LogPath() string { return c.logPath }

// Stop shuts the server down cleanly (fast mode: open sessions are ended),
// keeping its data for Start.
func (c *Cluster) Stop(ctx context.Context) error { return c.stop(ctx, "fast") }

// StopImmediate kills the server without a shutdown checkpoint, as a crash
// would; Start then runs crash recovery. Committed transactions survive.
func (c *Cluster) StopImmediate(ctx context.Context) error { return c.stop(ctx, "immediate") }

func (c *Cluster) stop(ctx context.Context, mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return ErrDestroyed
	}
	if err := c.pgctl(ctx, "-m", mode, "-w", "-t", "60", "stop"); err != nil {
		return fmt.Errorf("stop server: %w", err)
	}
	c.logf("pgcluster: stopped server on port %d (%s)", c.port, mode)
	return nil
}

// Start starts the server again after Stop or StopImmediate, on the same
// port and data.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return ErrDestroyed
	}
	if err := c.pgctlStart(ctx); err != nil {
		return err
	}
	c.logf("pgcluster: started server on port %d", c.port)
	return nil
}

// Restart stops the server cleanly and starts it again, applying settings
// that need a restart (e.g. from ALTER SYSTEM).
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Stop(ctx); err != nil {
		return err
	}
	return c.Start(ctx)
}

// Reload makes the server re-read its configuration files, applying
// settings that need no restart (e.g. wal_sender_timeout from ALTER SYSTEM).
func (c *Cluster) Reload(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return ErrDestroyed
	}
	if err := c.pgctl(ctx, "reload"); err != nil {
		return fmt.Errorf("reload server: %w", err)
	}
	return nil
}

// Destroy stops the server if it runs and removes the cluster's directory.
// It finishes even if ctx is cancelled: a half-destroyed cluster would keep
// a server running. Calling it again does nothing.
func (c *Cluster) Destroy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return nil
	}
	c.destroyed = true
	// postmaster.pid exists while a server runs (or after it was killed).
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); err == nil {
		if err := c.pgctl(ctx, "-m", "immediate", "-w", "-t", "30", "stop"); err != nil && c.running(ctx) {
			// Keep the directory: the watchdog needs it to try again.
			if c.watchdog != nil {
				c.watchdog.release()
			}
			return fmt.Errorf("stop server: %w", err)
		}
	}
	var errs []error
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove cluster directory: %w", err))
	}
	if c.watchdog != nil {
		if err := c.watchdog.stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop watchdog: %w", err))
		}
	}
	c.logf("pgcluster: destroyed cluster %s", c.dir)
	return errors.Join(errs...)
}

// running asks pg_ctl whether a server runs on the data directory.
func (c *Cluster) running(ctx context.Context) bool {
	return c.pgctl(ctx, "status") == nil
}

// logTail returns the end of the server log, formatted to follow an error.
func (c *Cluster) logTail() string {
	data := readFrom(c.logPath, fileSize(c.logPath)-4096)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	tail := strings.TrimSpace(strings.Join(lines, "\n"))
	if tail == "" {
		return ""
	}
	return fmt.Sprintf("\nserver log %s ends with:\n%s", c.logPath, tail)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the content of path from offset on, or nothing.
func readFrom(path string, offset int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(max(offset, 0), 0); err != nil {
		return nil
	}
	data, _ := io.ReadAll(f)
	return data
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("choose port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomPassword() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
