package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/testwait"
)

// A socket of node 0 joins a new room, AwaitRouting returns, and at once the
// two other nodes each emit to the room: every emit reaches the socket, in
// order per node, round after round.
func TestAwaitRoutingThenEmit(t *testing.T) { runRouted(t, testAwaitRoutingThenEmit) }

func testAwaitRoutingThenEmit(t *testing.T, env routedEnv) {
	cs, _ := routedNodes(t, env, 3, routingOptions())
	ns := bind(t, cs, "/")
	s := connect(ns[0], sid("s"))
	ctx := testCtx(t)
	const rounds = 40
	for i := range rounds {
		room := fmt.Sprintf("room-%d", i)
		ns[0].a.Join(s.ID(), room)
		if err := cs[0].AwaitRouting(ctx, "/"); err != nil {
			t.Fatalf("round %d: AwaitRouting: %v", i, err)
		}
		var wg sync.WaitGroup
		for _, from := range []int{1, 2} {
			wg.Go(func() { emit(t, ns[from].a, fmt.Sprintf("from-%d", from), i, room) })
		}
		wg.Wait()
	}
	msgs, err := s.WaitMessages(ctx, 2*rounds)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "from-1", rounds)
	checkSeq(t, "socket", msgs, "from-2", rounds)
}

// A node that starts emits to a room right after AwaitRoutingReady: the
// socket in the room, on a node it had never heard of, gets every emit.
func TestAwaitRoutingReadyStartingNode(t *testing.T) {
	runRouted(t, testAwaitRoutingReadyStartingNode)
}

func testAwaitRoutingReadyStartingNode(t *testing.T, env routedEnv) {
	opts := routingOptions()
	opts.HeartbeatInterval = 100 * time.Millisecond
	var newBus func(id string) *bus.Reliable
	env0 := env
	env.newCluster = func(t *testing.T) func(id string) *bus.Reliable {
		newBus = env0.newCluster(t)
		return newBus
	}
	cs, _ := routedNodes(t, env, 2, opts)
	ns := bind(t, cs, "/")
	s := connect(ns[1], sid("s"), "r")
	waitSettled(t, cs, "/")

	ctx := testCtx(t)
	o := *opts
	o.Logger = quietLogger
	b := newBus("node-2")
	late, err := New(b, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_ = late.Close(ctx)
		_ = b.Close(ctx)
	})
	nl := bind(t, []*Cluster{late}, "/")[0]
	if err := late.AwaitRoutingReady(ctx); err != nil {
		t.Fatalf("AwaitRoutingReady: %v", err)
	}
	const n = 30
	for i := range n {
		emit(t, nl.a, "early", i, "r")
	}
	msgs, err := s.WaitMessages(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "early", n)
	if got := late.Stats().InboxWrites; got < n {
		t.Fatalf("%d inbox writes for %d routed emits", got, n)
	}
}

// A node goes away without goodbye (its bus closes) while another awaits
// routing: it stops counting, and AwaitRouting returns nil.
func TestAwaitRoutingNodeGone(t *testing.T) { runRouted(t, testAwaitRoutingNodeGone) }

func testAwaitRoutingNodeGone(t *testing.T, env routedEnv) {
	opts := routingOptions()
	opts.HeartbeatInterval, opts.NodeTimeout = 20*time.Millisecond, 300*time.Millisecond
	cs, buses := routedNodes(t, env, 3, opts)
	ns := bind(t, cs, "/")
	s := connect(ns[0], sid("s"))
	waitSettled(t, cs, "/")
	ctx := testCtx(t)
	if err := buses[2].Close(ctx); err != nil {
		t.Fatal(err)
	}
	ns[0].a.Join(s.ID(), "after")
	if err := cs[0].AwaitRouting(ctx, "/"); err != nil {
		t.Fatalf("AwaitRouting with a node gone: %v", err)
	}
	if slices.Contains(cs[0].Nodes(), cs[2].NodeID()) {
		t.Fatalf("AwaitRouting returned while %s was still counted alive", cs[2].NodeID())
	}
	// The node that stayed applied the join.
	emit(t, ns[1].a, "after", 0, "after")
	msgs, err := s.WaitMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "after", 1)
}

// A live node that never answers (it hears nothing): AwaitRouting returns
// when ctx is done, with ctx's error, naming that node only.
func TestAwaitRoutingContextDone(t *testing.T) { runRouted(t, testAwaitRoutingContextDone) }

func testAwaitRoutingContextDone(t *testing.T, env routedEnv) {
	cs, buses := routedNodes(t, env, 3, routingOptions())
	bind(t, cs, "/")
	waitSettled(t, cs, "/")
	buses[2].deaf.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := cs[0].AwaitRouting(ctx, "/")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AwaitRouting: %v, want context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), cs[2].NodeID()) || strings.Contains(err.Error(), cs[1].NodeID()) {
		t.Fatalf("error %q does not name %s (only)", err, cs[2].NodeID())
	}
	// Not routed, or no routing: nil at once, even with a done ctx.
	if err := cs[0].AwaitRouting(ctx, "/rec"); err != nil {
		t.Fatalf("AwaitRouting of a namespace not routed: %v", err)
	}
	plain := &Cluster{}
	if err := plain.AwaitRouting(ctx, "/"); err != nil {
		t.Fatalf("AwaitRouting without routing: %v", err)
	}
	if err := plain.AwaitRoutingReady(ctx); err != nil {
		t.Fatalf("AwaitRoutingReady without routing: %v", err)
	}
}

// A node the bus hears but the cluster does not (yet) gets every routed
// message, for NodeTimeout: then it is taken for a bus client that is no
// cluster node (an emitter).
func TestRouteTargetsBusHeard(t *testing.T) {
	opts := routingOptions()
	opts.HeartbeatInterval, opts.NodeTimeout = 20*time.Millisecond, 500*time.Millisecond
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	cs := startNodes(t, 1, opts, func(id string) bus.Bus {
		return reliableBus(t, hub.Transport(), id)
	})
	other, err := bus.New(hub.Transport(), &bus.Config{NodeID: "bus-only", Logger: quietLogger, ProbeInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	other.Receive(func(bus.Message) {})
	keepPublishing(t, other)
	testwait.For(t, waitTimeout, "the bus of node 0 to hear bus-only", func() bool {
		return slices.Contains(cs[0].bus.Status().Nodes, "bus-only")
	})
	if got := cs[0].routeTargets("/", []string{"r"}, false); !slices.Equal(got, []string{"bus-only"}) {
		t.Fatalf("targets %v, want [bus-only]", got)
	}
	testwait.For(t, waitTimeout, "bus-only to stop counting", func() bool {
		return len(cs[0].routeTargets("/", []string{"r"}, false)) == 0
	})
	if !slices.Contains(cs[0].bus.Status().Nodes, "bus-only") {
		t.Fatalf("bus-only no longer heard by the bus: the test proves nothing")
	}
	if err := cs[0].AwaitRoutingReady(testCtx(t)); err != nil {
		t.Fatalf("AwaitRoutingReady with a bus-only node: %v", err)
	}
}
