package engineio

import (
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// keepAliveOf reads the TCP keepalive of the server's side of the one
// WebSocket connection srv holds (parked: 1 if it is parked on the poller, 0
// if not): whether probes are on, and after how many seconds of idle time
// the first is sent and then the next ones.
func keepAliveOf(t *testing.T, srv *Server, parked int) (on bool, idle, interval int) {
	t.Helper()
	waitConns(t, srv, 1, parked)
	srv.mu.Lock()
	var nc net.Conn
	for _, c := range srv.conns {
		nc = c.w.conn
	}
	srv.mu.Unlock()
	for {
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var keep int
	var sockErr error
	if err := rc.Control(func(fd uintptr) {
		if keep, sockErr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); sockErr != nil {
			return
		}
		if idle, sockErr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE); sockErr != nil {
			return
		}
		interval, sockErr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
	}); err != nil || sockErr != nil {
		t.Fatal(err, sockErr)
	}
	return keep != 0, idle, interval
}

// TestWebSocketTCPKeepAlive: a WebSocket connection the server takes over
// sends no TCP keepalive probes by default, though the listener (Go's
// default, 15 s) turned them on when it accepted it; TCPKeepAlive sets
// them, or with -1 leaves them as accepted. Through TLS too.
func TestWebSocketTCPKeepAlive(t *testing.T) {
	cases := []struct {
		name     string
		opt      time.Duration
		wantOn   bool
		wantIdle int // seconds, of idle and interval; 0: not checked
	}{
		{"default", 0, false, 0},
		{"30s", 30 * time.Second, true, 30},
		{"as accepted", -1, true, 15},
	}
	for _, tls := range []bool{false, true} {
		for _, tc := range cases {
			name := tc.name
			if tls {
				name += "/tls"
			}
			t.Run(name, func(t *testing.T) {
				srv := NewServer(newRecorder(true), &Options{TCPKeepAlive: tc.opt})
				hs := startHTTP(t, srv, tls)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/engine.io/?EIO=4&transport=websocket"
				c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hs.Client()})
				if err != nil {
					t.Fatalf("dial %s: %v", url, err)
				}
				defer func() { _ = c.CloseNow() }()
				if _, _, err := c.Read(ctx); err != nil { // the open packet: the session exists
					t.Fatal(err)
				}
				parked := 1
				if tls {
					parked = 0 // TLS connections are not parked
				}
				on, idle, interval := keepAliveOf(t, srv, parked)
				if on != tc.wantOn || (tc.wantIdle != 0 && (idle != tc.wantIdle || interval != tc.wantIdle)) {
					t.Errorf("keepalive on=%v idle=%ds interval=%ds; want on=%v, %ds", on, idle, interval, tc.wantOn, tc.wantIdle)
				}
			})
		}
	}
}
