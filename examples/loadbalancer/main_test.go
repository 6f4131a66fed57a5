package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/socketio"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// node is a Socket.IO server with a /readyz that the test can turn off.
type node struct {
	srv   *socketio.Server
	http  *httptest.Server
	ready atomic.Bool
	name  string
}

func startNode(t *testing.T, name string) *node {
	t.Helper()
	n := &node{srv: socketio.NewServer(nil), name: name}
	n.ready.Store(true)
	n.srv.OnConnection(func(s *socketio.Socket) {
		s.On("whoami", func(e *socketio.Event) { e.Ack(n.name) })
	})
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", n.srv)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !n.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	n.http = httptest.NewServer(mux)
	t.Cleanup(func() {
		// Polling sessions whose client is gone cannot be told goodbye: a short
		// Shutdown is enough.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = n.srv.Shutdown(ctx)
		n.http.Close()
	})
	return n
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// handshake opens a long-polling session through the balancer and returns its sid.
func handshake(t *testing.T, base string) string {
	t.Helper()
	code, body := get(t, base+"/socket.io/?EIO=4&transport=polling")
	var open struct{ SID string }
	if code != http.StatusOK || len(body) < 2 || json.Unmarshal([]byte(body[1:]), &open) != nil {
		t.Fatalf("handshake: %d %q", code, body)
	}
	return open.SID
}

// Long-polling sessions stay on the node that opened them; a node that stops
// takes its sessions with it, and new sessions go to the node that is left.
func TestStickySessionsAndFailover(t *testing.T) {
	a, b := startNode(t, "a"), startNode(t, "b")
	lb, err := New([]string{a.http.URL, b.http.URL}, 20*time.Millisecond, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	front := httptest.NewServer(lb)
	defer front.Close()

	// Each session's requests reach its node: a non-sticky balancer would send
	// about half of these polls to the node that does not know the sid.
	var sids []string
	for range 10 {
		sid := handshake(t, front.URL)
		sids = append(sids, sid)
		// CONNECT to the main namespace, then poll its answer.
		resp, err := http.Post(front.URL+"/socket.io/?EIO=4&transport=polling&sid="+sid, "text/plain", strings.NewReader("40"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST on session %s: %d", sid, resp.StatusCode)
		}
		if code, body := get(t, front.URL+"/socket.io/?EIO=4&transport=polling&sid="+sid); code != http.StatusOK || !strings.HasPrefix(body, "40") {
			t.Fatalf("poll on session %s: %d %q", sid, code, body)
		}
	}
	if n := a.srv.Engine().Count() + b.srv.Engine().Count(); n != 10 {
		t.Fatalf("%d sessions on the nodes, want 10", n)
	}
	if a.srv.Engine().Count() == 0 || b.srv.Engine().Count() == 0 {
		t.Fatalf("sessions not spread: a %d, b %d", a.srv.Engine().Count(), b.srv.Engine().Count())
	}

	// Node a stops: its sessions are unknown from now on, new ones go to b.
	a.ready.Store(false)
	a.http.CloseClientConnections()
	a.http.Close()
	lost := 0
	for _, sid := range sids {
		// A NOOP packet: answered at once, by b for its sessions.
		resp, err := http.Post(front.URL+"/socket.io/?EIO=4&transport=polling&sid="+sid, "text/plain", strings.NewReader("6"))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case resp.StatusCode == http.StatusBadRequest && strings.Contains(string(body), "Session ID unknown"):
			lost++
		case resp.StatusCode != http.StatusOK:
			t.Fatalf("POST on session %s: %d %s", sid, resp.StatusCode, body)
		}
	}
	if want := 10 - b.srv.Engine().Count(); lost != want {
		t.Fatalf("%d sessions reported unknown, want the %d of the stopped node", lost, want)
	}
	// Until the next readiness check notices, a handshake may still pick a;
	// the proxy error takes it out at once.
	for range 4 {
		resp, err := http.Get(front.URL + "/socket.io/?EIO=4&transport=polling")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	before := b.srv.Engine().Count()
	for range 4 {
		handshake(t, front.URL)
	}
	if got := b.srv.Engine().Count() - before; got != 4 {
		t.Fatalf("%d of 4 new sessions on the node left", got)
	}

	// WebSocket clients go through it too, to a ready node.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, front.URL+"/socket.io/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ack, err := c.EmitWithAck(ctx, "whoami")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(ack.Data); got != `["b"]` {
		t.Fatalf("WebSocket client reached %s, want node b", got)
	}
}
