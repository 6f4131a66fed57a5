package cluster

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
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
	cs := startNodes(t, 2, nil, redisBuses(t, srv.URL(), redisbus.Streams))
	checkOrderAcrossPlanes(t, cs)
}
