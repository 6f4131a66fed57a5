package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/sioclient"
)

// testClientDir is socket.io-client's dist as scripts/test installs it.
const testClientDir = "../../interop/node_modules/socket.io-client/dist"

func TestDemoPage(t *testing.T) {
	if findDemoClient(testClientDir) == "" {
		t.Fatal("socket.io-client is not installed in interop/node_modules (./scripts/test runs npm ci there)")
	}
	base := startApp(t, "-path", "/rt/", "-demo-client-dir", testClientDir)
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for k, want := range map[string]string{
		"Content-Security-Policy": "frame-ancestors 'none'",
		"X-Frame-Options":         "DENY",
		"X-Content-Type-Options":  "nosniff",
	} {
		if got := resp.Header.Get(k); !strings.Contains(got, want) {
			t.Errorf("%s = %q, want %q in it", k, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP allows more than the page's own scripts: %q", csp)
	}
	for _, c := range []struct{ path, want string }{
		{"/", `data-path="/rt/"`},
		{"/", `src="/rt/socket.io.min.js"`},
		{"/rt/socket.io.min.js", "Socket.IO v4"},
		{"/demo.js", "receipt"},
		{"/demo.css", "@media"},
	} {
		code, body := get(t, base+c.path)
		if code != http.StatusOK || !strings.Contains(body, c.want) {
			t.Errorf("GET %s = %d, want 200 containing %q", c.path, code, c.want)
		}
	}
	if code, body := get(t, base+"/"); strings.Contains(body, "<script>") || strings.Contains(body, "/socket.io/") {
		t.Errorf("GET / = %d: inline script or the default path in the page:\n%s", code, body)
	}

	missing := startApp(t, "-demo-client-dir", t.TempDir())
	if code, body := get(t, missing+"/"); code != http.StatusOK || !strings.Contains(body, "npm install socket.io-client") {
		t.Errorf("page without the client = %d, want the install advice:\n%s", code, body)
	}
	if code, body := get(t, missing+"/socket.io/socket.io.min.js"); code != http.StatusNotFound || !strings.Contains(body, "-demo-client-dir") {
		t.Errorf("client script when missing = %d %q, want 404 with the advice", code, body)
	}

	off := startApp(t, "-demo=false")
	if code, _ := get(t, off+"/"); code != http.StatusNotFound {
		t.Errorf("-demo=false: GET / = %d, want 404", code)
	}
}

// demoClient is a page of the demo, played by sioclient.
type demoClient struct {
	t  *testing.T
	c  *sioclient.Client
	ev chan sioclient.Event
}

func dialDemo(t *testing.T, base string) *demoClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := &demoClient{t: t, ev: make(chan sioclient.Event, 256)}
	c, err := sioclient.Dial(ctx, base+"/socket.io/", &sioclient.Options{OnEvent: func(e *sioclient.Event) {
		cp := *e
		cp.Data = append(json.RawMessage(nil), e.Data...)
		select {
		case d.ev <- cp:
		default:
			t.Errorf("test client: event buffer full")
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d.c = c
	return d
}

// call emits and binds the ack into a map.
func (d *demoClient) call(event string, arg any) map[string]any {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := d.c.EmitWithAck(ctx, event, arg)
	if err != nil {
		d.t.Fatalf("%s: %v", event, err)
	}
	var m map[string]any
	if err := ack.Bind(&m); err != nil {
		d.t.Fatalf("%s ack: %v", event, err)
	}
	return m
}

func (d *demoClient) emit(event string, arg any) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.c.Emit(ctx, event, arg); err != nil {
		d.t.Fatalf("%s: %v", event, err)
	}
}

// next returns the next event named name, skipping others (hello, bus, typing).
func (d *demoClient) next(name string) map[string]any {
	d.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-d.ev:
			if e.Name != name {
				continue
			}
			var m map[string]any
			if err := e.Bind(&m); err != nil {
				d.t.Fatalf("%s: %v", name, err)
			}
			return m
		case <-timeout:
			d.t.Fatalf("no %q event", name)
			return nil
		}
	}
}

func TestDemoChat(t *testing.T) {
	base := startApp(t)
	a, b := dialDemo(t, base), dialDemo(t, base)
	if h := a.call("hello", nil); h["node"] != "local" || h["cluster"] != false {
		t.Errorf("hello = %v", h)
	}
	if ack := a.call("join", map[string]string{"room": "  lobby ", "name": "  alice   ", "page": "pa"}); ack["room"] != "lobby" || ack["name"] != "alice" {
		t.Fatalf("join ack = %v, want trimmed room and name", ack)
	}
	b.call("join", map[string]string{"room": "lobby", "name": "bob", "page": "pb"})
	if p := a.next("presence"); p["type"] != "join" || p["name"] != "bob" || p["page"] != "pb" || p["node"] != "local" {
		t.Fatalf("presence = %v", p)
	}
	a.emit("here", map[string]string{"to": "pb"})
	if p := b.next("presence"); p["type"] != "here" || p["name"] != "alice" {
		t.Fatalf("here = %v", p)
	}

	ack := a.call("chat", map[string]string{"room": "lobby", "text": "  hi   ", "id": "m1"})
	if ack["id"] != "m1" || ack["queued"] != false || ack["error"] != nil {
		t.Fatalf("chat ack = %v", ack)
	}
	if m := b.next("chat"); m["text"] != "hi" || m["name"] != "alice" || m["page"] != "pa" || m["id"] != "m1" {
		t.Fatalf("chat = %v, want the trimmed text from alice", m)
	}
	b.emit("receipt", map[string]string{"id": "m1", "to": "pa"})
	if r := a.next("receipt"); r["id"] != "m1" || r["page"] != "pb" || r["name"] != "bob" || r["node"] != "local" {
		t.Fatalf("receipt = %v", r)
	}

	// A rename is one notice, not a leave and a join.
	a.call("join", map[string]string{"room": "lobby", "name": "alicia", "page": "pa"})
	if p := b.next("presence"); p["type"] != "rename" || p["old"] != "alice" || p["name"] != "alicia" {
		t.Fatalf("rename = %v", p)
	}

	for _, c := range []struct {
		event string
		arg   map[string]string
	}{
		{"chat", map[string]string{"room": "lobby", "text": strings.Repeat("x", maxTextLen+1), "id": "m2"}},
		{"chat", map[string]string{"room": "lobby", "text": "   ", "id": "m3"}},
		{"chat", map[string]string{"room": "other", "text": "hi", "id": "m4"}},
		{"chat", map[string]string{"room": "lobby", "text": "hi", "id": "bad id"}},
		{"chat", map[string]string{"room": "lobby", "text": "a\x00b", "id": "m5"}},
		{"join", map[string]string{"room": "lobby", "name": strings.Repeat("n", maxNameLen+1), "page": "pa"}},
		{"join", map[string]string{"room": "lobby", "name": "x", "page": "../pb"}},
	} {
		if ack := a.call(c.event, c.arg); ack["error"] == nil {
			t.Errorf("%s %v: ack %v, want an error", c.event, c.arg, ack)
		}
	}
	// The name is bounded after trimming: padding is no reason to refuse.
	if ack := a.call("join", map[string]string{"room": "lobby", "name": "alicia" + strings.Repeat(" ", 10_000), "page": "pa"}); ack["name"] != "alicia" {
		t.Errorf("padded name: ack %v", ack)
	}

	a.c.Close()
	for {
		p := b.next("presence")
		if p["type"] == "join" && p["page"] == "pa" {
			continue // the padded join above: alice announced herself again
		}
		if p["type"] != "leave" || p["page"] != "pa" {
			t.Fatalf("leave = %v", p)
		}
		break
	}
}

// TestDemoPaddedInputMemory is the regression test of finding 1 of #12: names
// and texts padded with spaces up to the payload limit, broadcast to a member
// that never reads, with the per-client byte bound off (the send queue is then
// bounded in messages only), must not grow the heap by more than 16 MiB.
// Before the fix the demo stored and broadcast the untrimmed strings: every
// chat was a megabyte in the slow member's queue.
func TestDemoPaddedInputMemory(t *testing.T) {
	base := startApp(t, "-send-queue-bytes", "-1", "-slow-client-timeout", "-1ns")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow, err := sioclient.Dial(ctx, base+"/socket.io/", &sioclient.Options{EventBuffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.EmitWithAck(ctx, "join", map[string]string{"room": "lobby", "name": "slow", "page": "slow"}); err != nil {
		t.Fatal(err)
	}
	attacker := dialDemo(t, base)
	// The padded name is sent once and was then part of every chat; the
	// padded texts add their own.
	namePad, textPad := strings.Repeat(" ", 900_000), strings.Repeat(" ", 10_000)

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	attacker.call("join", map[string]string{"room": "lobby", "name": "x" + namePad, "page": "attacker"})
	for i := range 40 {
		ack := attacker.call("chat", map[string]string{"room": "lobby", "text": "y" + textPad, "id": fmt.Sprint("m", i)})
		if ack["error"] != nil {
			t.Fatalf("chat %d: %v", i, ack)
		}
	}
	after := heap()
	growth := int64(after) - int64(before)
	t.Logf("heap growth after 40 chats with a 900 kB padded name to a member that does not read: %.1f MiB", float64(growth)/(1<<20))
	if growth > 16<<20 {
		t.Fatalf("heap grew by %.1f MiB, want < 16 MiB", float64(growth)/(1<<20))
	}
}

// TestDemoNoClusterLookupPerChat: in cluster mode a chat costs one broadcast,
// not a cluster-wide lookup of the room (#12, finding 1).
func TestDemoNoClusterLookupPerChat(t *testing.T) {
	r := redistest.Standalone(t)
	base := startApp(t, "-redis", r.URL())
	a, b := dialDemo(t, base), dialDemo(t, base)
	a.call("join", map[string]string{"room": "lobby", "name": "alice", "page": "pa"})
	b.call("join", map[string]string{"room": "lobby", "name": "bob", "page": "pb"})
	requests := func() string {
		_, body := get(t, base+"/metrics")
		var lines []string
		for l := range strings.Lines(body) {
			if strings.HasPrefix(l, "durasock_cluster_requests_total") {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		return strings.Join(lines, "; ")
	}
	before := requests()
	for i := range 20 {
		if ack := a.call("chat", map[string]string{"room": "lobby", "text": "hi", "id": fmt.Sprint("m", i)}); ack["error"] != nil {
			t.Fatalf("chat: %v", ack)
		}
		b.next("chat")
	}
	if after := requests(); after != before {
		t.Errorf("cluster requests during 20 chats: before %q, after %q", before, after)
	}
}
