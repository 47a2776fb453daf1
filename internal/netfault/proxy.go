// Package netfault is a TCP proxy for tests that puts network faults
// between a client and a server: latency, a blackhole (a silent partition:
// nothing flows and nothing is reset) and connection resets. Tests point
// the replicator at the proxy instead of PostgreSQL.
package netfault

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from a local port to a target address.
// Its methods are safe for concurrent use.
type Proxy struct {
	target   string
	listener net.Listener
	latency  atomic.Int64 // nanoseconds added to each direction
	accepted atomic.Int64

	mu     sync.Mutex
	open   chan struct{} // closed while traffic flows; a fresh one during a blackhole
	conns  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Start listens on a free port of 127.0.0.1 and forwards every connection
// to target (host:port).
func Start(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netfault: listen: %w", err)
	}
	p := &Proxy{target: target, listener: l, open: make(chan struct{}), conns: map[*link]struct{}{}}
	close(p.open)
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.listener.Addr().String() }

// Accepted returns how many connections the proxy has accepted so far:
// reconnects show up here.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// SetLatency delays everything forwarded, in each direction, by d (0 ends
// the delay). Order is kept and throughput is not limited: bytes read at t
// are written at t+d.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Blackhole stops all traffic, on open and new connections, without closing
// or resetting anything, as a silent network partition does: data is held,
// not lost, and flows again after Restore, as TCP retransmission would
// deliver it (if the peers still listen).
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default: // already blackholed
	}
}

// Restore ends a blackhole.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// ResetAll resets every open connection, both sides (an RST, not a FIN),
// and returns how many there were.
func (p *Proxy) ResetAll() int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.reset()
	}
	return len(links)
}

// Close stops accepting, resets the open connections and waits for the
// proxy's goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.listener.Close()
	p.Restore() // let held traffic go, so that nothing waits on the gate
	p.ResetAll()
	p.wg.Wait()
	return err
}

// gate returns a channel that is closed while traffic may flow.
func (p *Proxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.listener.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

// link is one proxied connection.
type link struct {
	client *net.TCPConn
	mu     sync.Mutex    // guards server, set once dialled while reset may run
	server *net.TCPConn  // nil until dialled
	done   chan struct{} // closed when the link is torn down
	once   sync.Once
}

func (l *link) reset() {
	l.once.Do(func() {
		close(l.done)
		l.mu.Lock()
		conns := []*net.TCPConn{l.client, l.server}
		l.mu.Unlock()
		for _, c := range conns {
			if c != nil {
				_ = c.SetLinger(0) // close with an RST
				_ = c.Close()
			}
		}
	})
}

func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	l := &link{client: client, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.reset()
		return
	}
	p.conns[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, l)
		p.mu.Unlock()
		l.reset()
	}()
	// During a blackhole a new connection gets no further than the
	// handshake the kernel completes, as a partitioned server's would.
	if !waitOpen(p.gate(), l.done) {
		return
	}
	server, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		return
	}
	l.mu.Lock()
	l.server = server.(*net.TCPConn)
	l.mu.Unlock()
	select {
	case <-l.done: // reset while dialling
		_ = server.Close()
		return
	default:
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(l, client, l.server) }()
	go func() { defer wg.Done(); p.pump(l, l.server, client) }()
	wg.Wait()
}

// chunk is data read from one side, due on the other at due.
type chunk struct {
	data []byte
	due  time.Time
	eof  bool
}

// pump copies src to dst through a queue, so that latency delays each
// chunk without limiting throughput, and the gate holds traffic during a
// blackhole. A read error other than EOF tears the link down.
func (p *Proxy) pump(l *link, src, dst *net.TCPConn) {
	queue := make(chan chunk, 256)
	go func() {
		defer close(queue)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				if !waitOpen(p.gate(), l.done) {
					return
				}
				select {
				case queue <- chunk{data: buf[:n], due: time.Now().Add(time.Duration(p.latency.Load()))}:
				case <-l.done:
					return
				}
			}
			if errors.Is(err, io.EOF) {
				if waitOpen(p.gate(), l.done) {
					select {
					case queue <- chunk{eof: true, due: time.Now().Add(time.Duration(p.latency.Load()))}:
					case <-l.done:
					}
				}
				return
			}
			if err != nil {
				l.reset()
				return
			}
		}
	}()
	for c := range queue {
		if d := time.Until(c.due); d > 0 {
			select {
			case <-time.After(d):
			case <-l.done:
				return
			}
		}
		if !waitOpen(p.gate(), l.done) {
			return
		}
		if c.eof {
			_ = dst.CloseWrite() // pass the FIN on
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			l.reset()
			return
		}
	}
}

// waitOpen waits until gate is open; false when the link was torn down first.
func waitOpen(gate <-chan struct{}, done <-chan struct{}) bool {
	select {
	case <-gate:
		return true
	case <-done:
		return false
	}
}
