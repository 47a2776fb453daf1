//go:build unix

package webhook

import "syscall"

// openFileLimit returns the process's open-file limit (RLIMIT_NOFILE; the Go
// runtime has already raised the soft limit to the hard one), or 0 when it
// cannot be read.
func openFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return lim.Cur
}
