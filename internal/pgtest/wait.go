package pgtest

import (
	"testing"
	"time"
)

// pollInterval is short because the conditions are cheap queries and tests
// wait on many of them.
const pollInterval = 15 * time.Millisecond

// WaitFor polls cond until it reports true, failing the test with what and
// cond's last error if timeout passes first. An error from cond does not end
// the wait: the condition may still become true. Call it from the test's
// goroutine.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if err == nil && ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				t.Fatalf("timed out after %s waiting for %s; last error: %v", timeout, what, lastErr)
			} else {
				t.Fatalf("timed out after %s waiting for %s", timeout, what)
			}
			return // for a testing.TB whose Fatalf returns
		}
		time.Sleep(pollInterval)
	}
}
