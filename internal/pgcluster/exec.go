package pgcluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// owner is the OS user that runs the server binaries and owns the cluster's
// files: the current user, or "postgres" when the current user is root.
type owner struct {
	cred *syscall.Credential // nil: the current user
}

func currentOwner() (owner, error) {
	if os.Geteuid() != 0 {
		return owner{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return owner{}, fmt.Errorf("running as root, which PostgreSQL refuses, and there is no \"postgres\" OS user to run it as: create one (useradd --system --user-group postgres): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return owner{}, fmt.Errorf("parse uid of postgres user: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return owner{}, fmt.Errorf("parse gid of postgres user: %w", err)
	}
	// An empty Groups drops root's supplementary groups in the child.
	return owner{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}, nil
}

// chown gives path to the owner, so that the server can read what root wrote.
func (o owner) chown(path string) error {
	if o.cred == nil {
		return nil
	}
	return os.Chown(path, int(o.cred.Uid), int(o.cred.Gid))
}

// writeFile writes a file the server must be able to read.
func (o owner) writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, data, perm); err != nil {
		return err
	}
	return o.chown(path)
}

// checkReachable reports whether the owner can enter every parent of path;
// without this initdb fails with a puzzling "permission denied".
func (o owner) checkReachable(path string) error {
	if o.cred == nil {
		return nil
	}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		bit := os.FileMode(0o001)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == o.cred.Uid {
			bit = 0o100
		} else if ok && st.Gid == o.cred.Gid {
			bit = 0o010
		}
		if fi.Mode().Perm()&bit == 0 {
			return fmt.Errorf("the postgres OS user cannot enter %s", d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// command prepares name to run as the owner in dir.
func (o owner) command(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = commandEnv()
	// initdb's children could hold the output pipe after a cancellation.
	cmd.WaitDelay = 5 * time.Second
	if o.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	}
	return cmd
}

// run runs name as the owner and includes its output in any error.
func (o owner) run(ctx context.Context, dir, name string, args ...string) error {
	var out bytes.Buffer
	cmd := o.command(ctx, dir, name, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(out.String()); msg != "" {
			return fmt.Errorf("%s: %w: %s", filepath.Base(name), err, msg)
		}
		return fmt.Errorf("%s: %w", filepath.Base(name), err)
	}
	return nil
}

// commandEnv is the environment of the server binaries: the caller's, less
// the PG* variables that could redirect them, in the C locale so that
// messages are in English.
func commandEnv() []string {
	env := []string{"LC_ALL=C"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
