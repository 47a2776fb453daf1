package webhook

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// connGuard bounds the open connections and keeps a delivery answerable when
// someone else holds them all open: netutil.LimitListener stops accepting at
// the bound, and the ConnState hook, on each new connection that reaches the
// bound, closes the connection that has waited longest without a request in
// flight (idle between keep-alive requests, or accepted and silent). Idle
// connections cost a client nothing to hold, so without eviction a few
// thousand of them would lock deliveries out for the whole idle timeout.
type connGuard struct {
	max int
	mu  sync.Mutex
	// open holds every open connection; waiting is when it last became
	// new or idle, zero while a request is in flight.
	open map[net.Conn]time.Time
	now  func() time.Time
}

func newConnGuard(maxConns int) *connGuard {
	return &connGuard{max: maxConns, open: make(map[net.Conn]time.Time), now: time.Now}
}

// listener wraps ln so that at most max connections are open at once.
func (g *connGuard) listener(ln net.Listener) net.Listener {
	return netutil.LimitListener(ln, g.max)
}

// track is the http.Server's ConnState hook.
func (g *connGuard) track(c net.Conn, state http.ConnState) {
	var victim net.Conn
	g.mu.Lock()
	switch state {
	case http.StateNew:
		g.open[c] = g.now()
		if len(g.open) >= g.max {
			if victim = g.longestWaitingLocked(c); victim != nil {
				// Forget it now: it holds no slot once closed, though its
				// goroutine reports StateClosed only later.
				delete(g.open, victim)
			}
		}
	case http.StateIdle:
		g.open[c] = g.now()
	case http.StateActive:
		g.open[c] = time.Time{}
	case http.StateHijacked, http.StateClosed:
		delete(g.open, c)
	}
	g.mu.Unlock()
	if victim != nil {
		// Closing it frees its LimitListener slot at once; its serving
		// goroutine then fails its read and reports StateClosed.
		_ = victim.Close()
	}
}

// longestWaitingLocked returns the connection other than except that has
// waited longest without a request in flight, or nil when every one has a
// request in flight (then LimitListener holds back new connections until
// one finishes, each bounded by the server's read and write timeouts).
func (g *connGuard) longestWaitingLocked(except net.Conn) net.Conn {
	var victim net.Conn
	var since time.Time
	for c, t := range g.open {
		if c == except || t.IsZero() {
			continue
		}
		if victim == nil || t.Before(since) {
			victim, since = c, t
		}
	}
	return victim
}
