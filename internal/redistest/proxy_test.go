package redistest

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestProxyForwardsBothWays(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t)
	p := NewProxy(t, s.Addr())
	if p.Target() != s.Addr() || p.Addr() == s.Addr() {
		t.Fatalf("Addr %s Target %s", p.Addr(), p.Target())
	}
	c, err := dialRESP(ctx, p.Addr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB, many chunks each way
	if v, err := c.do(ctx, "SET", "big", big); err != nil || v != "OK" {
		t.Fatalf("SET = %v, %v", v, err)
	}
	if v, err := c.do(ctx, "GET", "big"); err != nil || v != big {
		t.Fatalf("GET through proxy: err %v, equal %v", err, v == big)
	}
	if n := p.Conns(); n != 1 {
		t.Fatalf("Conns = %d, want 1", n)
	}
}

func TestProxyCutAndRestore(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t)
	p := NewProxy(t, s.Addr())
	c, err := dialRESP(ctx, p.Addr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if _, err := c.do(ctx, "PING"); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	if _, err := c.do(ctx, "PING"); err == nil {
		t.Fatal("PING on a cut connection succeeded")
	}
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns after Cut = %d", n)
	}
	// New connections are reset while cut.
	for range 3 {
		nc, err := dialRESP(ctx, p.Addr(), nil, nil)
		if err == nil {
			_, err = nc.do(ctx, "PING")
			nc.close()
		}
		if err == nil {
			t.Fatal("new connection served while cut")
		}
	}
	p.Restore()
	nc, err := dialRESP(ctx, p.Addr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.close()
	if v, err := nc.do(ctx, "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING after Restore = %v, %v", v, err)
	}
}

func TestProxyBlackholeHoldsBytes(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t)
	p := NewProxy(t, s.Addr())
	raw, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	r := bufio.NewReader(raw)
	ping := func() error {
		_, err := raw.Write([]byte("*1\r\n$4\r\nPING\r\n"))
		return err
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	if err := raw.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING = %q, %v", line, err)
	}

	p.Blackhole()
	if err := ping(); err != nil {
		t.Fatalf("write during blackhole = %v (the link should look open)", err)
	}
	if err := raw.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err = r.ReadString('\n')
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read during blackhole = %v, want a timeout", err)
	}
	// A new connection is accepted but answered by nobody.
	nc, err := dialRESP(ctx, p.Addr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.close()
	shortCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = nc.do(shortCtx, "PING")
	cancel()
	if err == nil {
		t.Fatal("PING on a new connection answered during blackhole")
	}

	p.Restore()
	if err := raw.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("held PING after Restore = %q, %v", line, err)
	}
}

func TestProxySlow(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t)
	p := NewProxy(t, s.Addr())
	c, err := dialRESP(ctx, p.Addr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	const delay = 150 * time.Millisecond
	p.Slow(delay)
	start := time.Now()
	if v, err := c.do(ctx, "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING = %v, %v", v, err)
	}
	// Request and reply are each delayed: the round trip cannot be shorter.
	if el := time.Since(start); el < 2*delay {
		t.Fatalf("round trip %v through Slow(%v)", el, delay)
	}
	p.Restore()
	if v, err := c.do(ctx, "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING after Restore = %v, %v", v, err)
	}
}

func TestProxyCloseStopsEverything(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t)
	p, err := StartProxy(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialRESP(ctx, p.Addr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	p.Blackhole() // a pump is parked in the gate
	if err := ping(c); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close()
	if _, err := c.do(ctx, "PING"); err == nil {
		t.Fatal("PING after proxy Close succeeded")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("proxy still accepts after Close")
	}
	if _, err := StartProxy("no-port"); err == nil {
		t.Fatal("StartProxy accepted a bad target")
	}
}

// ping writes a PING without waiting for the reply.
func ping(c *respConn) error {
	return writeCommand(c.w, []string{"PING"})
}

// readLine reads one reply line within d; "" and a timeout error when none came.
func readLineWithin(t *testing.T, c net.Conn, r *bufio.Reader, d time.Duration) (string, error) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	return r.ReadString('\n')
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyBlackholeConnsHoldsOnlyMatchingConnections(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t)
	p := NewProxy(t, s.Addr())
	reader, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	rr := bufio.NewReader(reader)
	writer, err := dialRESP(ctx, p.Addr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.close()

	p.BlackholeConns("XREAD")
	// The connection that sends XREAD is held from that command on.
	if _, err := reader.Write([]byte("*4\r\n$5\r\nxread\r\n$7\r\nstreams\r\n$1\r\ns\r\n$1\r\n0\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := readLineWithin(t, reader, rr, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("XREAD answered during BlackholeConns: %q, %v", line, err)
	}
	// Another connection keeps working, writes included.
	if v, err := writer.do(ctx, "XADD", "s", "*", "f", "v"); err != nil {
		t.Fatalf("XADD on another connection = %v, %v", v, err)
	}
	p.Restore()
	if line, err := readLineWithin(t, reader, rr, 10*time.Second); err != nil || line != "*1\r\n" {
		t.Fatalf("held XREAD after Restore = %q, %v (want one stream in the reply)", line, err)
	}
}

func TestProxyBlackholeOneWay(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t)
	p := NewProxy(t, s.Addr())
	raw, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	r := bufio.NewReader(raw)

	// Replies lost: the server executes the command, the client hears nothing.
	p.BlackholeOneWay(false)
	if _, err := raw.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\ndown\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := readLineWithin(t, raw, r, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("reply passed a blackholed reply direction: %q, %v", line, err)
	}
	if err := waitUntil(ctx, 20*time.Millisecond, "SET executed", func(ctx context.Context) error {
		v, err := s.Do(ctx, "GET", "k")
		if err == nil && v != "down" {
			err = errors.New("not yet")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	p.Restore()
	if line, err := readLineWithin(t, raw, r, 10*time.Second); err != nil || line != "+OK\r\n" {
		t.Fatalf("held reply after Restore = %q, %v", line, err)
	}

	// Requests lost: the server sees nothing until Restore.
	p.BlackholeOneWay(true)
	if _, err := raw.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nup\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := readLineWithin(t, raw, r, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("request passed a blackholed request direction: %q, %v", line, err)
	}
	if v, err := s.Do(ctx, "GET", "k"); err != nil || v != "down" {
		t.Fatalf("GET k = %v, %v: the held SET reached the server", v, err)
	}
	p.Restore()
	if line, err := readLineWithin(t, raw, r, 10*time.Second); err != nil || line != "+OK\r\n" {
		t.Fatalf("held request after Restore = %q, %v", line, err)
	}
}
