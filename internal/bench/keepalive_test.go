package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/internal/testwait"
)

// serverTimers returns the timer field ("tr" of /proc/net/tcp: 0 none, 1
// retransmit, 2 keepalive or another socket timer) of every established
// socket listening side of port: the node's end of its clients'
// connections.
func serverTimers(t *testing.T, port int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf(":%04X", port)
	var out []string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when …
		if len(f) < 6 || !strings.HasSuffix(f[1], local) || f[3] != "01" {
			continue
		}
		tr, _, _ := strings.Cut(f[5], ":")
		out = append(out, tr)
	}
	return out
}

// TestNodeTCPKeepAlive checks that a relay node passes -tcp-keepalive on:
// its end of an idle WebSocket connection has no keepalive timer by
// default, and has one with -1 (as Go's listener sets it, 15 s), as the
// kernel shows.
func TestNodeTCPKeepAlive(t *testing.T) {
	for _, c := range []struct {
		keep  time.Duration
		timer string
	}{{0, "00"}, {-1, "02"}} {
		t.Run(strconv.Itoa(int(c.keep)), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			n, err := StartNode(ctx, NodeSpec{Name: "node0", TCPKeepAlive: c.keep})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = n.Stop() }()
			cl, err := sioclient.Dial(ctx, n.SocketURL(), &sioclient.Options{OnEvent: func(*sioclient.Event) {}})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cl.Close() }()
			port, err := strconv.Atoi(n.Addr[strings.LastIndexByte(n.Addr, ':')+1:])
			if err != nil {
				t.Fatal(err)
			}
			// Until the server has taken the connection over, it has the
			// listener's keepalive: wait for the idle connection's state.
			testwait.For(t, 10*time.Second, fmt.Sprintf("one socket of the node on port %d with timer %s", port, c.timer), func() bool {
				got := serverTimers(t, port)
				return len(got) == 1 && got[0] == c.timer
			})
		})
	}
}
