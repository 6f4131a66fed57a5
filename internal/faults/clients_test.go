package faults

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// admin runs an admin command on srv, bounded by settle.
func admin(t *testing.T, srv *redistest.Server, args ...string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	v, err := srv.Do(ctx, args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return v
}

// clientAddr returns the address of the connection of node id running cmd, from
// CLIENT LIST; "" when there is none now.
func clientAddr(t *testing.T, srv *redistest.Server, id, cmd string) string {
	t.Helper()
	list, _ := admin(t, srv, "CLIENT", "LIST").(string)
	for _, line := range strings.Split(list, "\n") {
		f := map[string]string{}
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		if f["name"] == id && f["cmd"] == cmd {
			return f["addr"]
		}
	}
	return ""
}

// Scenario 6: Redis stays up but misbehaves towards its clients, one fault after
// the other in one run: CLIENT PAUSE ALL for the outage length; every pub/sub
// and every normal connection killed with CLIENT KILL TYPE; one node's stream
// reader killed by address; and the readers killed over and over by a tiny
// client-output-buffer-limit while an event too large for it waits in the stream,
// until the limit is restored. Nothing is lost, duplicated or reordered.
func TestRedisKillsAndPausesClients(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithAOF())
	r := newRun(t, "client-pause-kill-output-limit", options{kind: redisbus.Streams})
	r.addNodes(srv.URL(), srv.URL(), srv.URL())
	r.warmUp()
	r.startPublishers()
	pause(steadyPhase)

	// CLIENT PAUSE: every command of every client waits.
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	err := srv.Pause(ctx, r.outage)
	cancel()
	if err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	pause(r.outage)
	r.checkLocal("CLIENT PAUSE")
	r.waitConnected("after CLIENT PAUSE")
	pause(steadyPhase)

	// CLIENT KILL by type: the direct-channel subscriptions (pubsub), then
	// publishers and stream readers (normal).
	for _, typ := range []string{"pubsub", "normal"} {
		n, _ := admin(t, srv, "CLIENT", "KILL", "TYPE", typ, "SKIPME", "yes").(int64)
		if n == 0 {
			t.Errorf("CLIENT KILL TYPE %s killed no connection", typ)
		}
		t.Logf("CLIENT KILL TYPE %s killed %d connections", typ, n)
		r.waitConnected("after CLIENT KILL TYPE " + typ)
		pause(steadyPhase)
	}

	// CLIENT KILL ADDR: the stream reader of one node.
	var addr string
	testwait.Every(t, 50*time.Millisecond, settle, "an XREAD connection of "+r.nodes[1].id+" in CLIENT LIST", func() bool {
		addr = clientAddr(t, srv, r.nodes[1].id, "xread")
		return addr != ""
	})
	admin(t, srv, "CLIENT", "KILL", "ADDR", addr)
	t.Logf("killed the stream reader of %s at %s", r.nodes[1].id, addr)
	r.waitConnected("after CLIENT KILL ADDR")
	pause(steadyPhase)

	// client-output-buffer-limit: a reply above 16 KiB closes the connection.
	// A 64 KiB event then kills every stream reader each time it reads it.
	admin(t, srv, "CONFIG", "SET", "client-output-buffer-limit", "normal 16384 8192 1 pubsub 16384 8192 1")
	r.nodes[0].pub.padNext(strings.Repeat("x", 64<<10))
	testwait.Every(t, 50*time.Millisecond, settle, "Redis to close a client for its output buffer limit", func() bool {
		return strings.Contains(srv.Logs(), "output buffer limits")
	})
	pause(r.outage)
	r.checkLocal("output buffer limit")
	admin(t, srv, "CONFIG", "SET", "client-output-buffer-limit", "normal 0 0 0 pubsub 33554432 8388608 60")
	t.Logf("readers closed for their output buffer: %d times", strings.Count(srv.Logs(), "output buffer limits"))
	r.waitConnected("after the output buffer limit was restored")
	pause(steadyPhase)

	r.finish(exact)
}
