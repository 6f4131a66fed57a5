package interop

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// scenarioTimeout bounds one client script; each has its own, shorter deadline.
const scenarioTimeout = 60 * time.Second

func TestClientTransports(t *testing.T) {
	node := requireNode(t)
	url := newContract(nil).start(t)
	t.Run("polling then upgrade", func(t *testing.T) {
		runScenario(t, scenarioTimeout, url, node, "js/transports.mjs", "upgrade")
	})
	t.Run("websocket only", func(t *testing.T) {
		runScenario(t, scenarioTimeout, url, node, "js/transports.mjs", "websocket")
	})
}

func TestClientNamespaces(t *testing.T) {
	node := requireNode(t)
	url := newContract(nil).start(t)
	runScenario(t, scenarioTimeout, url, node, "js/namespaces.mjs")
}

func TestClientAuthMiddleware(t *testing.T) {
	node := requireNode(t)
	url := newContract(nil).start(t)
	runScenario(t, scenarioTimeout, url, node, "js/auth.mjs")
}

func TestClientBinary(t *testing.T) {
	node := requireNode(t)
	url := newContract(nil).start(t)
	for _, transport := range []string{"polling", "websocket"} {
		t.Run(transport, func(t *testing.T) {
			runScenario(t, scenarioTimeout, url, node, "js/binary.mjs", transport)
		})
	}
}

func TestClientAcks(t *testing.T) {
	node := requireNode(t)
	url := newContract(nil).start(t)
	for _, transport := range []string{"polling", "websocket"} {
		t.Run(transport, func(t *testing.T) {
			runScenario(t, scenarioTimeout, url, node, "js/acks.mjs", transport)
		})
	}
}

func TestClientRoomsBroadcast(t *testing.T) {
	node := requireNode(t)
	url := newContract(nil).start(t)
	for _, transport := range []string{"polling", "websocket"} {
		t.Run(transport, func(t *testing.T) {
			runScenario(t, scenarioTimeout, url, node, "js/rooms.mjs", transport)
		})
	}
}

// TestClientReconnect stops the server under a connected client and starts a new
// one on the same port: the client reconnects by itself. The WebSocket client sees
// a graceful Shutdown (a deploy), the polling client an abrupt Close (a crash).
func TestClientReconnect(t *testing.T) {
	node := requireNode(t)
	for _, tc := range []struct {
		transport string
		graceful  bool
	}{
		{"websocket", true},
		{"polling", false},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			first := serveContract(t, ln)

			ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
			defer cancel()
			cmd := command(ctx, "http://"+addr, node, "js/reconnect.mjs", tc.transport)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr syncBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w := watchLines(stdout, "READY ")
			select {
			case line := <-w.found:
				t.Logf("client: %s", line)
			case <-w.done:
			case <-ctx.Done():
			}

			if tc.graceful {
				sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
				err = first.shutdown(sctx)
				scancel()
			} else {
				err = first.close()
			}
			if err != nil {
				t.Errorf("stopping the first server: %v", err)
			}
			ln2, err := listenAgain(ctx, addr)
			if err != nil {
				t.Error(err)
			} else {
				serveContract(t, ln2)
			}

			<-w.done
			werr := cmd.Wait()
			out := w.out.String() + stderr.String()
			if werr != nil || !strings.Contains(out, "PASS reconnect/") {
				t.Fatalf("reconnect.mjs %s failed: %v\n%s", tc.transport, werr, out)
			}
			t.Logf("%s", lastLine(w.out.String()))
		})
	}
}

// running is a contract served by an http.Server on a listener the test chose.
type running struct {
	c  *contract
	hs *http.Server
	// served receives Serve's result.
	served chan error
}

func serveContract(t *testing.T, ln net.Listener) *running {
	t.Helper()
	r := &running{c: newContract(nil), served: make(chan error, 1)}
	r.hs = &http.Server{Handler: r.c.mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { r.served <- r.hs.Serve(ln) }()
	t.Cleanup(func() {
		if err := r.close(); err != nil {
			t.Errorf("closing a server: %v", err)
		}
		r.c.check(t)
	})
	return r
}

// shutdown stops the server gracefully: Socket.IO first (clients get a proper
// close), then HTTP.
func (r *running) shutdown(ctx context.Context) error {
	return errors.Join(r.c.srv.Shutdown(ctx), r.hs.Shutdown(ctx), r.wait())
}

// close stops the server at once. It may be called again.
func (r *running) close() error {
	return errors.Join(r.c.srv.Close(), r.hs.Close(), r.wait())
}

func (r *running) wait() error {
	select {
	case err, ok := <-r.served:
		if !ok {
			return nil // an earlier call collected the result
		}
		close(r.served)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-time.After(10 * time.Second):
		return errors.New("http.Server.Serve did not return within 10s")
	}
}
