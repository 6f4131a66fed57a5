package socketio

import (
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/testwait"
)

// childCount returns the namespaces the server holds that a parent created.
func childCount(srv *Server) int {
	srv.mu.RLock()
	defer srv.mu.RUnlock()
	n := 0
	for _, ns := range srv.nsps {
		if ns.parent != nil {
			n++
		}
	}
	if n != srv.dynamic {
		return -1 // the count that bounds them is wrong
	}
	return n
}

func TestCleanupEmptyChildNamespaces(t *testing.T) {
	srv, url := newTestServer(t, &Options{CleanupEmptyChildNamespaces: true})
	parent := srv.OfRegexp(regexp.MustCompile(`^/doc-\d+$`))
	parent.OnConnection(func(s *Socket) {
		s.OnDisconnecting(func(string) {}) // rooms are left on the runner
	})
	a := dial(t, url, "websocket")
	a.connect("/doc-1", "")
	b := dial(t, url, "websocket")
	b.connect("/doc-1", "")
	b.connect("/doc-2", "")
	if got := childCount(srv); got != 2 {
		t.Fatalf("%d child namespaces, want 2", got)
	}
	first := srv.Of("/doc-1")

	// One of two sockets leaves: the namespace stays.
	a.send("1/doc-1,")
	b.send("1/doc-2,")
	testwait.For(t, waitTimeout, "/doc-2 removed", func() bool { return childCount(srv) == 1 })
	if srv.Of("/doc-1") != first {
		t.Fatal("/doc-1 replaced while a socket is in it")
	}
	// The last socket leaves by closing its connection.
	b.close()
	testwait.For(t, waitTimeout, "/doc-1 removed", func() bool { return childCount(srv) == 0 })
	parent.mu.RLock()
	children := len(parent.children)
	parent.mu.RUnlock()
	if children != 0 {
		t.Fatalf("parent still lists %d children", children)
	}

	// The name works again, as a new namespace the parent's broadcasts reach.
	c := dial(t, url, "websocket")
	c.connect("/doc-1", "")
	if err := parent.Emit(context.Background(), "hello"); err != nil {
		t.Fatal(err)
	}
	c.expect(`2/doc-1,["hello"]`)
	srv.mu.RLock()
	second := srv.nsps["/doc-1"]
	srv.mu.RUnlock()
	if second == first || second == nil || second.parent != parent {
		t.Fatal("/doc-1 was not created afresh from its parent")
	}
}

func TestChildNamespacesKeptByDefault(t *testing.T) {
	srv, url := newTestServer(t, nil)
	srv.OfRegexp(regexp.MustCompile(`^/doc-\d+$`))
	a := dial(t, url, "websocket")
	a.connect("/doc-1", "")
	a.send("1/doc-1,")
	a.connect("/", "")
	if got := childCount(srv); got != 1 {
		t.Fatalf("%d child namespaces after the last socket left, want 1", got)
	}
}

func TestMaxChildNamespaces(t *testing.T) {
	for _, cleanup := range []bool{false, true} {
		t.Run("cleanup="+strconv.FormatBool(cleanup), func(t *testing.T) {
			srv, url := newTestServer(t, &Options{MaxChildNamespaces: 2, CleanupEmptyChildNamespaces: cleanup})
			srv.OfFunc(func(string, json.RawMessage) bool { return true })
			c := dial(t, url, "websocket")
			c.connect("/a", "")
			c.connect("/b", "")
			c.send("0/c,")
			c.expect(`4/c,{"message":"Too many namespaces"}`)
			// Existing names keep working, for other clients too.
			d := dial(t, url, "websocket")
			d.connect("/a", "")
			if got := childCount(srv); got != 2 {
				t.Fatalf("%d child namespaces, want 2", got)
			}
			c.send("1/b,")
			if cleanup {
				testwait.For(t, waitTimeout, "/b removed", func() bool { return childCount(srv) == 1 })
				c.connect("/c", "")
				return
			}
			c.connect("/", "") // the DISCONNECT of /b was handled
			c.send("0/c,")
			c.expect(`4/c,{"message":"Too many namespaces"}`)
		})
	}
	t.Run("unbounded", func(t *testing.T) {
		srv, url := newTestServer(t, &Options{MaxChildNamespaces: -1})
		srv.OfFunc(func(string, json.RawMessage) bool { return true })
		c := dial(t, url, "websocket")
		for i := range DefaultMaxChildNamespaces / 1000 {
			c.connect("/n"+strconv.Itoa(i), "")
		}
	})
}

// TestCleanupRacingConnect connects and disconnects clients of one dynamic
// namespace concurrently: every connection that succeeds lands in the namespace
// that exists, never in one removed meanwhile.
func TestCleanupRacingConnect(t *testing.T) {
	srv, url := newTestServer(t, &Options{CleanupEmptyChildNamespaces: true})
	parent := srv.OfRegexp(regexp.MustCompile(`^/race$`))
	joined := make(chan *Socket, 64)
	parent.OnConnection(func(s *Socket) { joined <- s })
	clients := make([]*testClient, 4)
	for i := range clients {
		clients[i] = dial(t, url, "websocket")
	}
	deadline := time.Now().Add(10 * time.Second)
	for round := 0; round < 20 && time.Now().Before(deadline); round++ {
		for _, c := range clients {
			c.connect("/race", "")
		}
		for range clients {
			s := recv(t, joined)
			srv.mu.RLock()
			current := srv.nsps["/race"]
			srv.mu.RUnlock()
			if s.Connected() && s.Namespace() != current {
				t.Fatalf("round %d: socket in a removed namespace", round)
			}
		}
		for _, c := range clients {
			c.send("1/race,")
		}
		for _, c := range clients {
			c.connect("/", "")
			c.send("1/")
		}
	}
	testwait.For(t, waitTimeout, "/race removed", func() bool { return childCount(srv) == 0 })
}
