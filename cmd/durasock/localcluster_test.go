package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/redistest"
)

func TestRunClusterRefusesBadSetups(t *testing.T) {
	env := func(string) string { return "" }
	ctx := context.Background()
	if err := runCluster(ctx, []string{"-nodes", "0"}, env, io.Discard); err == nil || !strings.Contains(err.Error(), "-nodes") {
		t.Errorf("-nodes 0: %v", err)
	}
	err := runCluster(ctx, []string{"-demo-client-dir", testClientDir, "-redis-server", "/nonexistent/redis-server"}, env, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "apt-get install redis-server") {
		t.Errorf("no redis-server: %v, want the install advice", err)
	}
	err = runCluster(ctx, []string{"-demo-client-dir", t.TempDir()}, env, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "npm install socket.io-client") {
		t.Errorf("no browser client: %v, want the install advice", err)
	}
}

// panelState reads the panel's JSON.
func readPanel(t *testing.T, base string) panelState {
	t.Helper()
	code, body := get(t, base+"/cluster/api/state")
	var s panelState
	if code != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil {
		t.Fatalf("GET /cluster/api/state = %d %s", code, body)
	}
	return s
}

func panelAct(t *testing.T, base, action string, header bool) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/cluster/api/"+action, nil)
	if err != nil {
		t.Fatal(err)
	}
	if header {
		req.Header.Set("X-Durasock-Cluster", "1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLocalClusterPanel drives the local cluster through its panel's API:
// Redis killed and started, a node killed and started, every state visible,
// and the load balancer keeping polling sessions on their node.
func TestLocalClusterPanel(t *testing.T) {
	redis := redistest.Standalone(t)
	lc, base := startLocalCluster(t, redis, 20, "node-1", "node-2")

	resp, err := http.Get(base + "/cluster/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "durasock local cluster") || resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("panel page: %s\n%v", page, resp.Header)
	}
	busOf := func(name string) string {
		for _, n := range readPanel(t, base).Nodes {
			if n.Name == name {
				return n.Bus
			}
		}
		return ""
	}
	waitFor(t, 20*time.Second, "both buses connected on the panel", func() bool {
		return busOf("node-1") == "connected" && busOf("node-2") == "connected"
	})
	checked := func(name string) checkNodeView { return readPanel(t, base).Checker.Nodes[name] }
	waitFor(t, 20*time.Second, "the checker's ticks arriving on both nodes", func() bool {
		return checked("node-1").Received > 10 && checked("node-2").Received > 10
	})

	// A page of another origin cannot act: it cannot send the header.
	if code := panelAct(t, base, "redis/kill", false); code != http.StatusForbidden || !redis.Running() {
		t.Fatalf("action without the header: %d, Redis running %v", code, redis.Running())
	}
	if code := panelAct(t, base, "redis/kill", true); code != http.StatusOK || redis.Running() {
		t.Fatalf("kill Redis: %d, running %v", code, redis.Running())
	}
	waitFor(t, 20*time.Second, "the outage on the panel", func() bool {
		s := readPanel(t, base)
		return !s.Redis.Running && busOf("node-1") != "connected"
	})
	// Ticks accepted by one node wait for Redis to reach the other one.
	waitFor(t, 20*time.Second, "ticks waiting during the outage", func() bool {
		return checked("node-1").Waiting > 0 && checked("node-2").Waiting > 0
	})
	accepted := readPanel(t, base).Checker.Accepted
	if code := panelAct(t, base, "redis/start", true); code != http.StatusOK {
		t.Fatalf("start Redis: %d", code)
	}
	waitFor(t, 20*time.Second, "buses connected again", func() bool { return busOf("node-1") == "connected" })
	// Nothing lost: every accepted tick arrives, once.
	waitFor(t, 30*time.Second, "every waiting tick delivered", func() bool {
		s := readPanel(t, base).Checker
		return s.Accepted > accepted+20 && s.Nodes["node-1"].Waiting == 0 && s.Nodes["node-2"].Waiting == 0
	})
	for _, name := range []string{"node-1", "node-2"} {
		if c := checked(name); c.Duplicates != 0 || c.Joins != 1 {
			t.Errorf("%s checker after the outage: %+v, want no duplicate and no rejoin", name, c)
		}
	}

	// Polling sessions stay on their node: with two nodes taking new sessions
	// in turn, a balancer without stickiness loses every other request.
	for range 4 {
		sid := pollingHandshake(t, base)
		post, err := http.Post(base+"/socket.io/?EIO=4&transport=polling&sid="+sid, "text/plain", strings.NewReader("40"))
		if err != nil {
			t.Fatal(err)
		}
		post.Body.Close()
		code, body := get(t, base+"/socket.io/?EIO=4&transport=polling&sid="+sid)
		if post.StatusCode != http.StatusOK || code != http.StatusOK || !strings.HasPrefix(body, "40") {
			t.Fatalf("session %s through the balancer: POST %d, GET %d %q", sid, post.StatusCode, code, body)
		}
	}

	if code := panelAct(t, base, "node/node-1/kill", true); code != http.StatusOK {
		t.Fatalf("kill node-1: %d", code)
	}
	if st, _ := lc.node("node-1").procState(); st != procKilled {
		t.Fatalf("node-1 is %s after kill", st)
	}
	for range 3 {
		if n := lc.pick(""); n == nil || n.name != "node-2" {
			t.Fatalf("new session while node-1 is down went to %v", n)
		}
	}
	if n := lc.pick("node-1"); n == nil || n.name != "node-2" {
		t.Fatalf("?node=node-1 while it is down went to %v", n)
	}
	if code := panelAct(t, base, "node/node-1/start", true); code != http.StatusOK {
		t.Fatalf("start node-1: %d", code)
	}
	waitFor(t, 20*time.Second, "node-1 ready again", func() bool { return lc.node("node-1").health.ready.Load() })
	// What node-1 had accepted when it was killed comes from its disk outbox.
	waitFor(t, 30*time.Second, "node-2's checker with nothing waiting", func() bool {
		c := checked("node-2")
		return c.Waiting == 0 && c.Duplicates == 0
	})
	// The health check can miss one /readyz of a node on a loaded machine, and
	// the node counts as not ready until the next: wait for a pick, not one.
	waitFor(t, 20*time.Second, "?node=node-1 to reach node-1 again", func() bool {
		n := lc.pick("node-1")
		return n != nil && n.name == "node-1"
	})
	if code := panelAct(t, base, "node/node-9/kill", true); code != http.StatusBadRequest {
		t.Errorf("unknown node: %d, want 400", code)
	}
	s := readPanel(t, base)
	if len(s.Nodes) != 2 || len(s.Nodes[0].Samples) == 0 || len(s.Events) < 4 {
		t.Errorf("panel state: %+v", s)
	}
}

func pollingHandshake(t *testing.T, base string) string {
	t.Helper()
	code, body := get(t, base+"/socket.io/?EIO=4&transport=polling")
	m := sidPattern.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		t.Fatalf("handshake through the balancer: %d %q", code, body)
	}
	return m[1]
}
