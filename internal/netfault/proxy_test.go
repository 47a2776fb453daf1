package netfault

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// echoServer echoes each line back until the client closes.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func startProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and reads it back, with a deadline.
func roundTrip(c net.Conn, r *bufio.Reader, line string, deadline time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(deadline))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := r.ReadString('\n')
	if len(got) > 0 {
		got = got[:len(got)-1]
	}
	return got, err
}

func TestProxy_Forwards(t *testing.T) {
	t.Parallel()
	p := startProxy(t)
	c, r := dial(t, p)
	for _, line := range []string{"one", "two"} {
		if got, err := roundTrip(c, r, line, 5*time.Second); got != line || err != nil {
			t.Fatalf("round trip %q = %q, %v", line, got, err)
		}
	}
	if n := p.Accepted(); n != 1 {
		t.Errorf("Accepted() = %d, want 1", n)
	}
}

func TestProxy_Latency(t *testing.T) {
	t.Parallel()
	p := startProxy(t)
	c, r := dial(t, p)
	p.SetLatency(100 * time.Millisecond)
	began := time.Now()
	if got, err := roundTrip(c, r, "slow", 5*time.Second); got != "slow" || err != nil {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	// 100 ms each way: a round trip takes at least 200 ms.
	if took := time.Since(began); took < 200*time.Millisecond {
		t.Errorf("round trip took %s with 100ms latency each way, want at least 200ms", took)
	}
}

func TestProxy_BlackholeHoldsThenDelivers(t *testing.T) {
	t.Parallel()
	p := startProxy(t)
	c, r := dial(t, p)
	p.Blackhole()
	if _, err := roundTrip(c, r, "held", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("round trip through a blackhole: %v, want a timeout (no reset, no answer)", err)
	}
	// A new connection gets no further than the handshake either.
	c2, r2 := dial(t, p)
	if _, err := roundTrip(c2, r2, "new", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("new connection through a blackhole: %v, want a timeout", err)
	}
	p.Restore()
	// What was held is delivered: the echo of "held" comes first.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); got != "held\n" || err != nil {
		t.Errorf("after Restore read %q, %v; want the held line", got, err)
	}
	if got, err := roundTrip(c2, r2, "again", 5*time.Second); got != "new" || err != nil {
		t.Errorf("new connection after Restore read %q, %v; want its held line", got, err)
	}
}

func TestProxy_ResetAll(t *testing.T) {
	t.Parallel()
	p := startProxy(t)
	c, r := dial(t, p)
	if _, err := roundTrip(c, r, "hello", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.ResetAll(); n != 1 {
		t.Errorf("ResetAll() = %d, want 1", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.ReadString('\n')
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read after ResetAll: %v, want a connection reset", err)
	}
	c2, r2 := dial(t, p) // the proxy still accepts
	if got, err := roundTrip(c2, r2, "after", 5*time.Second); got != "after" || err != nil {
		t.Errorf("round trip after ResetAll = %q, %v", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
