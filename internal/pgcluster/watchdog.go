package pgcluster

import (
	"errors"
	"io"
	"os/exec"
	"syscall"
)

// watchdogScript waits for EOF on its stdin, which happens when the process
// that started it exits for any reason, then stops the server and removes
// the cluster's directory. It ignores the signals of a terminal's Ctrl-C,
// and runs in its own process group, so it outlives its owner.
//
// Arguments: $1 pg_ctl, $2 data directory, $3 cluster directory.
const watchdogScript = `trap '' HUP INT QUIT TERM PIPE
while read -r _; do :; done
if [ -f "$2/postmaster.pid" ]; then "$1" -D "$2" -m immediate -w -t 30 stop >/dev/null 2>&1; fi
rm -rf "$3"
`

// watchdog cleans up a cluster whose owner died without calling Destroy;
// the postmaster is not a child of the owner (pg_ctl detaches it), so
// nothing else would stop it.
type watchdog struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

func startWatchdog(o owner, pgCtl, dataDir, dir string) (*watchdog, error) {
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "pgcluster-watchdog", pgCtl, dataDir, dir)
	cmd.Dir = "/"
	cmd.Env = commandEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: o.cred}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &watchdog{cmd: cmd, stdin: stdin}, nil
}

// release lets the watchdog clean up now, as if the owner had exited, and
// waits for it.
func (w *watchdog) release() {
	_ = w.stdin.Close()
	_ = w.cmd.Wait()
}

// stop ends the watchdog without letting it clean up: the owner has done so.
func (w *watchdog) stop() error {
	if err := w.cmd.Process.Kill(); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	_ = w.cmd.Wait() // "signal: killed" is the expected outcome
	return nil
}
