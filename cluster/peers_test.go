package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/testwait"
)

// A node cut off from the broker while another restarts under the same id:
// the new process never hears the cut-off node, but learns of it from the
// node that did (the answer to its hello), is ready only then, and routes to
// its inbox: the cut-off node's socket gets every event, in order, once each,
// when it is back.
func TestRoutingRestartSameIDReachesCutOffNode(t *testing.T) {
	opts := routingOptions()
	opts.HeartbeatInterval, opts.NodeTimeout = 50*time.Millisecond, 20*time.Second
	opts.Logger = quietLogger
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	type proc struct {
		c  *Cluster
		b  bus.Bus
		sw *brokerSwitch
	}
	var procs []proc
	start := func(id string) proc {
		t.Helper()
		sw := new(brokerSwitch)
		b := reliableBus(t, sw.wrap(hub.Transport()), id)
		o := *opts
		c, err := New(b, &o)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		p := proc{c, b, sw}
		procs = append(procs, p)
		return p
	}
	t.Cleanup(func() {
		for _, p := range procs {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			p.sw.setDown(false)
			_ = p.c.Close(ctx)
			_ = p.b.Close(ctx)
			cancel()
		}
	})
	a, b, c := start("node-0"), start("node-1"), start("node-2")
	cs := []*Cluster{a.c, b.c, c.c}
	waitMesh(t, cs)
	ns := bind(t, cs, "/")
	s := connect(ns[2], sid("s"), "r")
	waitSettled(t, cs, "/")

	c.sw.setDown(true)
	// node-0 dies without a goodbye, and comes back as a new process.
	a.sw.setDown(true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = a.c.Close(ctx)
	_ = a.b.Close(ctx)
	cancel()
	a2 := start("node-0")
	na := bind(t, []*Cluster{a2.c}, "/")[0]
	if err := a2.c.AwaitRoutingReady(testCtx(t)); err != nil {
		t.Fatalf("AwaitRoutingReady: %v", err)
	}
	if slices.Contains(a2.c.Nodes(), "node-2") || slices.Contains(a2.c.bus.Status().Nodes, "node-2") {
		t.Fatalf("the new node-0 heard node-2 itself: the test proves nothing")
	}
	if got := a2.c.routeTargets("/", []string{"r"}, false); !slices.Contains(got, "node-2") {
		t.Errorf("routed to %v, want node-2 among them", got)
	}
	const n = 50
	for i := range n {
		emit(t, na.a, "restart", i, "r")
	}
	c.sw.setDown(false)
	msgs, err := s.WaitMessages(testCtx(t), n)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket on node-2", msgs, "restart", n)
	// A duplicate would come after the n: one more round trip of node-2's
	// own, then the count again.
	waitSettled(t, []*Cluster{c.c}, "/")
	checkSeq(t, "socket on node-2", s.Messages(), "restart", n)
}

// A peers message cannot make its decoder allocate beyond its bounds: more
// entries than maxPeerReports, or more namespaces than maxInterestNamespaces
// over all entries, are refused before they are read.
func TestDecodePeersBounds(t *testing.T) {
	b := []byte{codecVersion, byte(kindPeers), 0, 0}
	b = binary.AppendUvarint(b, maxPeerReports+1)
	if _, err := decodeMessage(b); !errors.Is(err, errMalformed) {
		t.Fatalf("%d entries: %v, want a malformed message", maxPeerReports+1, err)
	}
	// Two entries whose namespaces together pass the bound.
	b = []byte{codecVersion, byte(kindPeers), 0, 0, 2}
	half := maxInterestNamespaces/2 + 1
	for range 2 {
		b = appendString(b, "n")
		b = append(b, 9, 1, 0) // instance, version, ago
		b = binary.AppendUvarint(b, uint64(half))
		for range half {
			b = append(b, 1, '/', 0, 0)
		}
	}
	if _, err := decodeMessage(b); !errors.Is(err, errInterestCount) {
		t.Fatalf("%d namespaces over two entries: %v, want %v", 2*half, err, errInterestCount)
	}
	// A node without an id.
	if _, err := decodeMessage([]byte{codecVersion, byte(kindPeers), 0, 0, 1, 0, 9, 1, 0, 0}); !errors.Is(err, errMalformed) {
		t.Fatalf("entry without a node id: %v, want a malformed message", err)
	}
}

// A node takes a reported interest of a node it does not know or knows at a
// lower version, never of itself or of the reporter, never of a node that said
// goodbye, and routes to it until InterestKeep after the reporter last heard
// it; hearing the node itself makes the entry first-hand.
func TestLearnPeersRules(t *testing.T) {
	opts := routingOptions()
	opts.HeartbeatInterval, opts.NodeTimeout, opts.InterestKeep = 20*time.Millisecond, 500*time.Millisecond, time.Second
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	cs := startNodes(t, 1, opts, func(id string) bus.Bus { return reliableBus(t, hub.Transport(), id) })
	c := cs[0]
	r := c.route
	all := []nspInterest{{nsp: "/", flags: interestSockets}}
	all[0].rooms.set(roomBucket("r"))
	c.mu.Lock()
	c.gone["left"] = time.Now()
	c.mu.Unlock()
	c.learnPeers("rep", &message{kind: kindPeers, peers: []peerReport{
		{node: "far", version: 5, ago: 100, interest: all},
		{node: c.id, version: 1 << 62, interest: all},
		{node: "rep", version: 1 << 62, interest: all},
		{node: "left", version: 5, interest: all},
		{node: "stale", version: 5, ago: 5000, interest: all},
	}})
	r.mu.Lock()
	var got []string
	for id := range r.peers {
		got = append(got, id)
	}
	_, reported := r.reported["rep"]
	r.mu.Unlock()
	if !slices.Equal(got, []string{"far"}) || !reported {
		t.Fatalf("took %v (reported %v), want [far] reported by rep", got, reported)
	}
	if tg := c.routeTargets("/", []string{"r"}, false); !slices.Contains(tg, "far") {
		t.Fatalf("targets %v, want far", tg)
	}
	if tg := c.routeTargets("/", []string{"other"}, false); slices.Contains(tg, "far") {
		t.Fatalf("targets %v: far is not interested in other", tg)
	}
	// A lower version changes nothing; a higher one replaces it.
	c.learnPeers("rep", &message{kind: kindPeers, peers: []peerReport{{node: "far", version: 4}}})
	if !knows(c, "far", "/", "r") {
		t.Fatal("a lower version replaced the interest")
	}
	c.learnPeers("rep", &message{kind: kindPeers, peers: []peerReport{{node: "far", version: 6, interest: []nspInterest{{nsp: "/", flags: interestSockets}}}}})
	if knows(c, "far", "/", "r") {
		t.Fatal("a higher version did not replace the interest")
	}
	// InterestKeep after the reporter last heard it, the entry ends.
	testwait.For(t, waitTimeout, "far to stop counting", func() bool {
		return !slices.Contains(c.routeTargets("/", nil, true), "far")
	})
	// Heard first-hand, an entry is no longer second-hand.
	c.learnPeers("rep", &message{kind: kindPeers, peers: []peerReport{{node: "near", version: 1}}})
	c.learnInterest("near", 0, &message{kind: kindInterest, version: 1})
	r.mu.Lock()
	relayed := r.peers["near"].insts[0].relayed
	r.mu.Unlock()
	if relayed {
		t.Fatal("an entry heard first-hand stays second-hand")
	}
}
