package compat

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/parser"
)

func countEvent(ms []adaptertest.Message, event string) int {
	n := 0
	for _, m := range ms {
		if m.Event == event {
			n++
		}
	}
	return n
}

// While Redis is down a broadcast still reaches the local sockets and returns
// adapter.ErrUnavailable at once (there is no outbox in Node's protocol); once
// Redis is back the subscription is rebuilt, the reconnect counted, and the
// nodes are one cluster again.
func TestRedisRestart(t *testing.T) {
	srv := redistest.Standalone(t)
	cs := nodeClusters(t, srv.URL(), 2, Classic)
	var sockets []*adaptertest.Socket
	var adapters []adapter.Adapter
	for i, c := range cs {
		ns := adaptertest.NewNamespace("/")
		a, err := c.Adapter(ns)
		if err != nil {
			t.Fatal(err)
		}
		ns.Bind(a)
		t.Cleanup(func() { _ = a.Close() })
		adapters = append(adapters, a)
		sockets = append(sockets, ns.Connect("s"+string(rune('0'+i)), adaptertest.SocketOptions{}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emit := func(event string) error {
		p, err := parser.EventPacket("/", event)
		if err != nil {
			t.Fatal(err)
		}
		return adapters[0].Broadcast(ctx, p, adapter.Options{})
	}
	if err := emit("before"); err != nil {
		t.Fatal(err)
	}
	if _, err := sockets[1].WaitFor(ctx, func(ms []adaptertest.Message) bool { return countEvent(ms, "before") == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
	err := adapters[0].Broadcast(bctx, mustPacket(t, "during"), adapter.Options{})
	bcancel()
	if !errors.Is(err, adapter.ErrUnavailable) {
		t.Errorf("Broadcast while Redis is down: %v, want adapter.ErrUnavailable", err)
	}
	if countEvent(sockets[0].Messages(), "during") != 1 {
		t.Errorf("the local socket did not get the broadcast made while Redis was down")
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for !cs[1].Stats().Connected || cs[1].Stats().Reconnects == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("no reconnect: %+v", cs[1].Stats())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The subscriptions are back once a broadcast gets through; retry until then.
	for i := 0; ; i++ {
		_ = emit("after")
		wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := sockets[1].WaitFor(wctx, func(ms []adaptertest.Message) bool { return countEvent(ms, "after") >= 1 })
		wcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no broadcast across nodes after Redis came back: %+v", cs[1].Stats())
		}
	}
	if n := countEvent(sockets[1].Messages(), "during"); n != 0 {
		t.Errorf("the other node got %d broadcasts made while Redis was down", n)
	}
}

func mustPacket(t *testing.T, event string) *parser.Packet {
	t.Helper()
	p, err := parser.EventPacket("/", event)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A message that is not of the protocol is counted and not applied; a pickled
// python-socketio message reaching a Listener is counted under its own reason.
func TestNotAppliedCounted(t *testing.T) {
	srv := redistest.Standalone(t)
	cs := nodeClusters(t, srv.URL(), 1, Classic)
	ns := adaptertest.NewNamespace("/")
	a, err := cs[0].Adapter(ns)
	if err != nil {
		t.Fatal(err)
	}
	ns.Bind(a)
	t.Cleanup(func() { _ = a.Close() })
	l, err := NewListener(redisClient(t, srv.URL()), &ListenerOptions{Python: true, PythonChannel: "py", Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := cs[0].opts.Key
	for _, m := range []struct{ ch, msg string }{
		{key + "#/#", "\xc1 not msgpack"},
		{key + "-request#/#", `{"type":"x"}`},
		{"py", "\x80\x04\x95 pickled"},
		{"py", `{"method":"emit","event":"e","namespace":"/nowhere"}`},
	} {
		if _, err := srv.Do(ctx, "PUBLISH", m.ch, m.msg); err != nil {
			t.Fatal(err)
		}
	}
	for cs[0].Stats().NotApplied[reasonDecode] != 2 || l.Stats().NotApplied[reasonPickle] != 1 || l.Stats().NotApplied[reasonNamespace] != 1 {
		select {
		case <-ctx.Done():
			t.Fatalf("not counted: node %+v, listener %+v", cs[0].Stats(), l.Stats())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
