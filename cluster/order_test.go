package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// orderRounds is how many broadcast-then-request rounds the order tests run.
const orderRounds = 500

// checkOrderAcrossPlanes issues, from node 0, a broadcast followed by a
// broadcast with acks, and a server-side emit followed by one with replies,
// orderRounds times each, and counts how often node 1 saw a pair in the other
// order. Every message of one origin and namespace must arrive in the order
// issued, whether it carries acks or not.
func checkOrderAcrossPlanes(t *testing.T, cs []*Cluster) {
	ns := bind(t, cs, "/")
	there := connect(ns[1], "there", "r")
	waitSettled(t, cs, "/")
	ns[1].ns.OnServerSideEmit(func(adaptertest.ServerEmit) ([]json.RawMessage, bool) {
		return []json.RawMessage{json.RawMessage(`"ok"`)}, true
	})
	ctx := testCtx(t)
	to := adapter.Options{Rooms: []string{"r"}}
	for i := range orderRounds {
		if err := ns[0].a.Broadcast(ctx, event(t, "plain", i), to); err != nil {
			t.Fatalf("Broadcast %d: %v", i, err)
		}
		replies, err := ns[0].a.BroadcastWithAck(ctx, event(t, "acked", i), to)
		if err != nil || len(replies) != 1 {
			t.Fatalf("BroadcastWithAck %d: %d replies, %v", i, len(replies), err)
		}
		arg := []json.RawMessage{json.RawMessage(fmt.Sprint(i))}
		if _, err := ns[0].a.ServerSideEmit(ctx, "note", arg, false); err != nil {
			t.Fatalf("ServerSideEmit %d: %v", i, err)
		}
		replies, err = ns[0].a.ServerSideEmit(ctx, "ask", arg, true)
		if err != nil || len(replies) != 1 {
			t.Fatalf("ServerSideEmit with replies %d: %d replies, %v", i, len(replies), err)
		}
	}

	// A round is out of order when its second message arrived before its first.
	ms := waitEvents(t, ctx, there, 2*orderRounds)
	pos := make(map[string]int)
	for i, m := range ms {
		if len(m.Args) == 1 {
			pos[m.Event+string(m.Args[0])] = i
		}
	}
	emits, err := ns[1].ns.WaitServerEmits(ctx, 2*orderRounds)
	if err != nil {
		t.Fatalf("server-side emits: %d of %d: %v", len(emits), 2*orderRounds, err)
	}
	for i, e := range emits {
		if len(e.Args) == 1 {
			pos[e.Event+string(e.Args[0])] = i
		}
	}
	reordered, reorderedEmits, lost := 0, 0, 0
	for i := range orderRounds {
		n := fmt.Sprint(i)
		first, ok1 := pos["plain"+n]
		second, ok2 := pos["acked"+n]
		if !ok1 || !ok2 {
			lost++
		} else if second < first {
			reordered++
		}
		first, ok1 = pos["note"+n]
		second, ok2 = pos["ask"+n]
		if !ok1 || !ok2 {
			lost++
		} else if second < first {
			reorderedEmits++
		}
	}
	if reordered != 0 || reorderedEmits != 0 || lost != 0 || len(ms) != 2*orderRounds || len(emits) != 2*orderRounds {
		t.Errorf("of %d rounds, out of order: broadcast then emitWithAck %d, serverSideEmit then serverSideEmitWithAck %d; incomplete %d; %d messages, %d emits (want %d each)",
			orderRounds, reordered, reorderedEmits, lost, len(ms), len(emits), 2*orderRounds)
	}
}

func TestOrderAcrossPlanesMemoryHub(t *testing.T) {
	_, cs := memoryNodes(t, 2, nil)
	checkOrderAcrossPlanes(t, cs)
}

func TestOrderAcrossPlanesRedis(t *testing.T) {
	srv := redistest.Standalone(t)
	for _, kind := range []redisbus.Kind{redisbus.Streams, redisbus.PubSub} {
		t.Run(kind.String(), func(t *testing.T) {
			cs := startNodes(t, 2, nil, redisBuses(t, srv.URL(), kind))
			checkOrderAcrossPlanes(t, cs)
		})
	}
}

// A request published while the requester is connected but the receiver is cut
// off from Redis: the requester returns at its deadline naming the receiver
// missing; when the receiver reads the stream again the request is past its
// deadline and is not served (no packet to its socket), and is counted.
func TestRequestReplayedAfterOutageNotServed(t *testing.T) {
	srv := redistest.Standalone(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	prefix := fmt.Sprintf("durasock-test-%d", prefixes.Add(1))
	urls := map[string]string{"node-0": srv.URL(), "node-1": "redis://" + proxy.Addr()}
	// Node 1 stays known to node 0 throughout: the request waits for it.
	opts := &Options{NodeTimeout: time.Minute}
	cs := startNodes(t, 2, opts, func(id string) bus.Bus {
		b, err := redisbus.Open(context.Background(), urls[id], &redisbus.Options{
			Kind: redisbus.Streams, Prefix: prefix,
			Bus: bus.Config{NodeID: id, Logger: quietLogger},
		})
		if err != nil {
			t.Fatalf("redisbus.Open: %v", err)
		}
		return b
	})
	ns := bind(t, cs, "/")
	there := connect(ns[1], "there", "r")
	ctx := testCtx(t)

	proxy.Cut()
	testwait.For(t, waitTimeout, "node 1's bus to see the cut", func() bool { return cs[1].bus.Status().State != bus.Connected })
	if s := cs[0].bus.Status().State; s != bus.Connected {
		t.Fatalf("node 0's bus is %s, want connected", s)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := ns[0].a.BroadcastWithAck(short, event(t, "too-late"), adapter.Options{Rooms: []string{"r"}})
	cancel()
	var me *adapter.MissingRepliesError
	if !errors.As(err, &me) || !slices.Equal(me.Missing, []string{"node:" + cs[1].NodeID()}) {
		t.Fatalf("BroadcastWithAck to a cut-off node: %v, want a MissingRepliesError naming node:%s", err, cs[1].NodeID())
	}

	proxy.Restore()
	testwait.For(t, waitTimeout, "node 1's bus to reconnect", func() bool { return cs[1].bus.Status().State == bus.Connected })
	if err := ns[0].a.Broadcast(ctx, event(t, "after"), adapter.Options{Rooms: []string{"r"}}); err != nil {
		t.Fatal(err)
	}
	ms := waitEvents(t, ctx, there, 1)
	if len(ms) != 1 || ms[0].Event != "after" {
		var got []string
		for _, m := range ms {
			got = append(got, m.Event)
		}
		t.Errorf("socket of the cut-off node got %q, want only the broadcast after the outage", got)
	}
	if n := cs[1].Stats().ExpiredRequests; n != 1 {
		t.Errorf("Stats.ExpiredRequests = %d, want 1", n)
	}
	if n := there.PendingAcks(); n != 0 {
		t.Errorf("%d acks registered on the socket", n)
	}
}
