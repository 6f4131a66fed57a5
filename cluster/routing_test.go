package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/parser"
	"github.com/prometheus/client_golang/prometheus"
)

// routedHubConfig is the memory hub of the routing tests: 4 shared
// partitions and 64 inboxes (the node ids of the tests have inboxes of their
// own; routedNodes checks it).
var routedHubConfig = bus.MemoryHubConfig{Partitions: 4, Inboxes: 64}

// routingOptions routes every namespace but "/rec".
func routingOptions() *Options {
	return &Options{InterestRouting: true, Recoverable: func(nsp string) bool { return nsp == "/rec" }}
}

// countingBus counts the reliable messages a node receives, per namespace and
// kind, and the partitions they came on.
type countingBus struct {
	*bus.Reliable
	deaf  atomic.Bool // drop every message that arrives (the node hears nothing)
	mu    sync.Mutex
	count map[countKey]int
	parts map[int]int
}

type countKey struct {
	nsp  string
	kind kind
}

func (b *countingBus) Receive(h bus.Handler) {
	b.Reliable.Receive(func(m bus.Message) {
		if b.deaf.Load() {
			return
		}
		if m.Seq != 0 {
			if dm, err := decodeMessage(m.Payload); err == nil {
				b.mu.Lock()
				b.count[countKey{dm.nsp, dm.kind}]++
				b.parts[m.Partition]++
				b.mu.Unlock()
			}
		}
		h(m)
	})
}

// received is how many reliable messages of kind k of namespace nsp the node got.
func (b *countingBus) received(nsp string, k kind) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count[countKey{nsp, k}]
}

// routedEnv is where the nodes of a routing test run: newCluster returns the
// bus maker of a fresh cluster (one memory hub, or one key prefix on Redis),
// whose buses have shared partitions then inboxes.
type routedEnv struct {
	shared     int
	newCluster func(t *testing.T) func(id string) *bus.Reliable
}

// memoryEnv runs nodes on a memory hub with routedHubConfig.
var memoryEnv = routedEnv{shared: routedHubConfig.Partitions, newCluster: func(t *testing.T) func(id string) *bus.Reliable {
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	return func(id string) *bus.Reliable { return reliableBus(t, hub.Transport(), id).(*bus.Reliable) }
}}

// redisEnv runs nodes on the Redis streams transport at url, with 4 shared
// partitions and 64 inboxes.
func redisEnv(url string) routedEnv {
	return routedEnv{shared: 4, newCluster: func(t *testing.T) func(id string) *bus.Reliable {
		prefix := fmt.Sprintf("durasock-test-%d", prefixes.Add(1))
		return func(id string) *bus.Reliable {
			t.Helper()
			b, err := redisbus.Open(context.Background(), url, &redisbus.Options{
				Kind: redisbus.Streams, Prefix: prefix, Partitions: 4, Inboxes: 64,
				Bus: bus.Config{NodeID: id, Logger: quietLogger},
			})
			if err != nil {
				t.Fatalf("redisbus.Open(%s): %v", url, err)
			}
			return b
		}
	}}
}

// runRouted runs test on a memory hub and on a Redis of its own.
func runRouted(t *testing.T, test func(t *testing.T, env routedEnv)) {
	t.Run("memory", func(t *testing.T) { test(t, memoryEnv) })
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Standalone(t)
		test(t, redisEnv(srv.URL()))
	})
}

// routedNodes starts n nodes with opts in a fresh cluster of env, each on a
// countingBus.
func routedNodes(t *testing.T, env routedEnv, n int, opts *Options) ([]*Cluster, []*countingBus) {
	t.Helper()
	buses := make([]*countingBus, n)
	newBus := env.newCluster(t)
	cs := startNodes(t, n, opts, func(id string) bus.Bus {
		cb := &countingBus{Reliable: newBus(id), count: make(map[countKey]int), parts: make(map[int]int)}
		var i int
		if _, err := fmt.Sscanf(id, "node-%d", &i); err != nil {
			t.Fatalf("node id %q: %v", id, err)
		}
		buses[i] = cb
		return cb
	})
	inboxes := make(map[int]string)
	for _, c := range cs {
		if c.route == nil {
			t.Fatalf("%s does not route", c.NodeID())
		}
		in := buses[0].InboxOf(c.NodeID())
		if other, ok := inboxes[in]; ok {
			t.Fatalf("%s and %s share inbox %d", c.NodeID(), other, in)
		}
		inboxes[in] = c.NodeID()
	}
	return cs, buses
}

// sid returns a socket id of the form of package socketio's (the default
// Options.SocketIDRoom).
func sid(name string) string {
	id := strings.ToUpper(name)
	id = strings.Map(func(r rune) rune {
		if (r >= 'A' && r <= 'Z') || (r >= '2' && r <= '7') {
			return r
		}
		return 'X'
	}, id)
	return id + strings.Repeat("Q", 26-len(id))
}

// knows reports whether c's view of node peer's interest in nsp says it has
// sockets there and, for each room, that it is interested in it.
func knows(c *Cluster, peer, nsp string, rooms ...string) bool {
	c.route.mu.Lock()
	defer c.route.mu.Unlock()
	n := c.route.peers[peer]
	if n == nil {
		return false
	}
	p := n.latest()
	in := p.nsps[nsp]
	if in == nil || in.flags&interestSockets == 0 {
		return false
	}
	for _, r := range rooms {
		if !in.rooms.has(roomBucket(r)) {
			return false
		}
	}
	return true
}

// knowsRoom reports whether c's view of node peer's interest in nsp holds
// room (its bucket), with or without sockets.
func knowsRoom(c *Cluster, peer, nsp, room string) bool {
	c.route.mu.Lock()
	defer c.route.mu.Unlock()
	n := c.route.peers[peer]
	if n == nil {
		return false
	}
	in := n.latest().nsps[nsp]
	return in != nil && in.rooms.has(roomBucket(room))
}

func emit(t *testing.T, a adapter.Adapter, ev string, i int, rooms ...string) {
	t.Helper()
	p := &parser.Packet{Type: parser.Event, Namespace: "/", Data: []byte(fmt.Sprintf(`[%q,%d]`, ev, i))}
	if err := a.Broadcast(testCtx(t), p, adapter.Options{Rooms: rooms}); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
}

// checkSeq checks that msgs are events ev 0..n-1, in order, once each.
func checkSeq(t *testing.T, who string, msgs []adaptertest.Message, ev string, n int) {
	t.Helper()
	var got []int
	for _, m := range msgs {
		if m.Event != ev {
			continue
		}
		var i int
		if err := json.Unmarshal(m.Args[0], &i); err != nil {
			t.Fatalf("%s: arg %s: %v", who, m.Args[0], err)
		}
		got = append(got, i)
	}
	if len(got) != n {
		t.Fatalf("%s got %d of %d %q events: %v", who, len(got), n, ev, got)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("%s: event %d is %d (lost, duplicated or reordered): %v", who, i, v, got)
		}
	}
}

func TestRoutingOnlyInterestedNodesReceive(t *testing.T) {
	runRouted(t, testRoutingOnlyInterestedNodesReceive)
}

func testRoutingOnlyInterestedNodesReceive(t *testing.T, env routedEnv) {
	cs, buses := routedNodes(t, env, 4, routingOptions())
	ns := bind(t, cs, "/")
	in := connect(ns[1], sid("in"), "r")
	out := connect(ns[2], sid("out"), "elsewhere")
	// node 3 has no socket at all.
	testwait.For(t, waitTimeout, "node 0 to know the interest of nodes 1 and 2", func() bool {
		return knows(cs[0], cs[1].NodeID(), "/", "r") && knows(cs[0], cs[2].NodeID(), "/", "elsewhere")
	})
	const n = 200
	for i := range n {
		emit(t, ns[0].a, "room", i, "r")
	}
	for i := range n {
		emit(t, ns[0].a, "all", i)
	}
	ctx := testCtx(t)
	msgs, err := in.WaitMessages(ctx, 2*n)
	if err != nil {
		t.Fatalf("node 1: %v", err)
	}
	checkSeq(t, "socket in r", msgs, "room", n)
	checkSeq(t, "socket in r", msgs, "all", n)
	msgs, err = out.WaitMessages(ctx, n)
	if err != nil {
		t.Fatalf("node 2: %v", err)
	}
	checkSeq(t, "socket outside r", msgs, "all", n)
	checkSeq(t, "socket outside r", msgs, "room", 0)
	// What each node's bus carried: node 1 both series, node 2 only the
	// broadcasts to all, node 3 nothing.
	for i, want := range []int{0, 2 * n, n, 0} {
		if got := buses[i].received("/", kindBroadcast); got != want {
			t.Errorf("node %d received %d broadcasts, want %d", i, got, want)
		}
	}
	st := cs[0].Stats()
	if st.RoutedMessages != 2*n || st.InboxWrites != n+2*n {
		t.Errorf("node 0 stats: routed %d, inbox writes %d; want %d, %d", st.RoutedMessages, st.InboxWrites, 2*n, 3*n)
	}
	// No broadcast went to a shared partition.
	for i, b := range buses {
		b.mu.Lock()
		for p, k := range b.parts {
			if p < env.shared {
				t.Errorf("node %d received %d messages on shared partition %d", i, k, p)
			}
		}
		b.mu.Unlock()
	}
}

func TestRoutingJoinAnnouncedThenLeave(t *testing.T) { runRouted(t, testRoutingJoinAnnouncedThenLeave) }

func testRoutingJoinAnnouncedThenLeave(t *testing.T, env routedEnv) {
	cs, buses := routedNodes(t, env, 2, routingOptions())
	ns := bind(t, cs, "/")
	s := connect(ns[1], sid("s"))
	testwait.For(t, waitTimeout, "node 0 to know node 1's socket", func() bool { return knows(cs[0], cs[1].NodeID(), "/") })
	emit(t, ns[0].a, "before", 0, "late")
	ns[1].a.Join(s.ID(), "late")
	testwait.For(t, waitTimeout, "node 0 to know node 1 joined", func() bool { return knows(cs[0], cs[1].NodeID(), "/", "late") })
	const n = 50
	for i := range n {
		emit(t, ns[0].a, "joined", i, "late")
	}
	msgs, err := s.WaitMessages(testCtx(t), n)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "joined", n)
	checkSeq(t, "socket", msgs, "before", 0)
	if got := buses[1].received("/", kindBroadcast); got != n {
		t.Fatalf("node 1 received %d broadcasts, want %d (the one before the join was not for it)", got, n)
	}
	ns[1].a.Leave(s.ID(), "late")
	testwait.For(t, waitTimeout, "node 0 to know node 1 left", func() bool {
		return knows(cs[0], cs[1].NodeID(), "/") && !knows(cs[0], cs[1].NodeID(), "/", "late")
	})
	for i := range n {
		emit(t, ns[0].a, "left", i, "late")
	}
	// A marker to all, after them: when it arrived, so would they have.
	emit(t, ns[0].a, "marker", 0)
	msgs, err = s.WaitMessages(testCtx(t), n+1)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "left", 0)
	if got := buses[1].received("/", kindBroadcast); got != n+1 {
		t.Fatalf("node 1 received %d broadcasts, want %d: the ones to the room it left reached it", got, n+1)
	}
}

// A socketsJoin from node 0 for a socket of node 1, then at once an emit to
// the new room from node 0: routed to node 1 without waiting for node 1's
// announcement.
func TestRoutingSocketsJoinThenEmit(t *testing.T) { runRouted(t, testRoutingSocketsJoinThenEmit) }

func testRoutingSocketsJoinThenEmit(t *testing.T, env routedEnv) {
	cs, _ := routedNodes(t, env, 3, routingOptions())
	ns := bind(t, cs, "/")
	s := connect(ns[1], sid("s"))
	testwait.For(t, waitTimeout, "node 0 to know node 1's socket", func() bool { return knows(cs[0], cs[1].NodeID(), "/") })
	ctx := testCtx(t)
	const rounds = 20
	for i := range rounds {
		room := fmt.Sprintf("fresh-%d", i)
		if err := ns[0].a.AddSockets(ctx, adapter.Options{Rooms: []string{s.ID()}}, []string{room}); err != nil {
			t.Fatalf("AddSockets: %v", err)
		}
		emit(t, ns[0].a, "fresh", i, room)
	}
	msgs, err := s.WaitMessages(ctx, rounds)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "fresh", rounds)
	if got := cs[0].Stats().RequestTimeouts; got != 0 {
		t.Fatalf("%d socketsJoin timed out", got)
	}
}

// Requests that collect answers from every node complete with routing on,
// whether or not the nodes have sockets.
func TestRoutingRequestsComplete(t *testing.T) { runRouted(t, testRoutingRequestsComplete) }

func testRoutingRequestsComplete(t *testing.T, env routedEnv) {
	cs, _ := routedNodes(t, env, 3, routingOptions())
	ns := bind(t, cs, "/")
	connect(ns[0], sid("a"), "r")
	connect(ns[1], sid("b"), "r")
	// node 2 has no socket, but a handler.
	for i, n := range ns {
		n.ns.OnServerSideEmit(func(adaptertest.ServerEmit) ([]json.RawMessage, bool) {
			return []json.RawMessage{json.RawMessage(fmt.Sprint(i))}, true
		})
	}
	testwait.For(t, waitTimeout, "node 0 to know node 1's socket", func() bool { return knows(cs[0], cs[1].NodeID(), "/", "r") })
	ctx := testCtx(t)
	for round := range 10 {
		infos, err := ns[0].a.FetchSockets(ctx, adapter.Options{})
		if err != nil || len(infos) != 2 {
			t.Fatalf("round %d: FetchSockets: %d sockets, %v", round, len(infos), err)
		}
		replies, err := ns[0].a.ServerSideEmit(ctx, "q", nil, true)
		if err != nil || len(replies) != 2 {
			t.Fatalf("round %d: ServerSideEmit: %d replies, %v", round, len(replies), err)
		}
		p := &parser.Packet{Type: parser.Event, Namespace: "/", Data: []byte(`["ask"]`)}
		acks, err := ns[0].a.BroadcastWithAck(ctx, p, adapter.Options{Rooms: []string{"r"}})
		if err != nil || len(acks) != 2 {
			t.Fatalf("round %d: BroadcastWithAck: %d acks, %v", round, len(acks), err)
		}
		// A socket operation is confirmed by the nodes it went to.
		if err := ns[0].a.DelSockets(ctx, adapter.Options{Rooms: []string{"r"}}, []string{"nothing"}); err != nil {
			t.Fatalf("round %d: DelSockets: %v", round, err)
		}
	}
	if got := cs[0].Stats().RequestTimeouts; got != 0 {
		t.Fatalf("%d requests timed out", got)
	}
}

// A namespace named by Options.Recoverable is not routed: its messages go to
// the shared partitions, which every node reads; both adapters keep sessions
// (a routed one restores them by a handoff: TestRecoveryRoutedHandoff).
func TestRoutingRecoverableNamespaceUnchanged(t *testing.T) {
	runRouted(t, testRoutingRecoverableNamespaceUnchanged)
}

func testRoutingRecoverableNamespaceUnchanged(t *testing.T, env routedEnv) {
	cs, buses := routedNodes(t, env, 3, routingOptions())
	rec := bind(t, cs, "/rec")
	routed := bind(t, cs, "/")
	if _, ok := rec[0].a.(adapter.SessionStore); !ok {
		t.Errorf("the adapter of a recoverable namespace is no SessionStore")
	}
	if _, ok := routed[0].a.(adapter.SessionStore); !ok {
		t.Errorf("the adapter of a routed namespace is no SessionStore")
	}
	s := connect(rec[1], sid("s"), "r")
	const n = 30
	for i := range n {
		p := &parser.Packet{Type: parser.Event, Namespace: "/rec", Data: []byte(fmt.Sprintf(`["rec",%d]`, i))}
		if err := rec[0].a.Broadcast(testCtx(t), p, adapter.Options{Rooms: []string{"r"}}); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := s.WaitMessages(testCtx(t), n)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "rec", n)
	testwait.For(t, waitTimeout, "node 2, without sockets, to read them too", func() bool {
		return buses[2].received("/rec", kindBroadcast) == n
	})
	if got := cs[0].Stats().RoutedMessages; got != 0 {
		t.Errorf("%d messages routed", got)
	}
}

// A node that leaves is forgotten; back under the same id, it announces its
// interest again and is routed to.
func TestRoutingNodeLeavesAndRejoins(t *testing.T) { runRouted(t, testRoutingNodeLeavesAndRejoins) }

func testRoutingNodeLeavesAndRejoins(t *testing.T, env routedEnv) {
	opts := routingOptions()
	// The node that comes back is on a bus of the same cluster.
	var newBus func(id string) *bus.Reliable
	env0 := env
	env.newCluster = func(t *testing.T) func(id string) *bus.Reliable {
		newBus = env0.newCluster(t)
		return newBus
	}
	cs, _ := routedNodes(t, env, 2, opts)
	ns := bind(t, cs, "/")
	connect(ns[1], sid("s"), "r")
	testwait.For(t, waitTimeout, "node 0 to know node 1's room", func() bool { return knows(cs[0], cs[1].NodeID(), "/", "r") })
	ctx := testCtx(t)
	if err := ns[1].a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cs[1].Close(ctx); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, waitTimeout, "node 0 to forget node 1", func() bool {
		cs[0].route.mu.Lock()
		defer cs[0].route.mu.Unlock()
		return cs[0].route.peers[cs[1].NodeID()] == nil && !slices.Contains(cs[0].Nodes(), cs[1].NodeID())
	})
	before := cs[0].Stats()
	emit(t, ns[0].a, "nobody", 0, "r")
	after := cs[0].Stats()
	if after.RoutedMessages != before.RoutedMessages+1 || after.InboxWrites != before.InboxWrites {
		t.Fatalf("to a room of a node that left: %d inbox writes", after.InboxWrites-before.InboxWrites)
	}

	o := *opts
	o.Logger = quietLogger
	b := newBus(cs[1].NodeID())
	back, err := New(b, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_ = back.Close(ctx)
		_ = b.Close(ctx)
	})
	nb := bind(t, []*Cluster{back}, "/")[0]
	s := connect(nb, sid("again"), "r")
	testwait.For(t, waitTimeout, "node 0 to know node 1 is back in r", func() bool { return knows(cs[0], back.NodeID(), "/", "r") })
	const n = 20
	for i := range n {
		emit(t, ns[0].a, "back", i, "r")
	}
	msgs, err := s.WaitMessages(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "back", n)
	checkSeq(t, "socket", msgs, "nobody", 0)
}

// settledAdapter waits, after each change of membership, until every node
// has applied every other's interest: the adapter conformance suite expects a join
// to count cluster-wide at once, which routing gives only once announced.
type settledAdapter struct {
	adapter.Adapter
	t    *testing.T
	cs   []*Cluster
	name string
}

func (s *settledAdapter) wait() { waitSettled(s.t, s.cs, s.name) }

func (s *settledAdapter) Join(id string, rooms ...string) { s.Adapter.Join(id, rooms...); s.wait() }

func (s *settledAdapter) AddSockets(ctx context.Context, opts adapter.Options, rooms []string) error {
	err := s.Adapter.AddSockets(ctx, opts, rooms)
	s.wait()
	return err
}

func TestConformanceMemoryHubRouted(t *testing.T) {
	runRoutedConformance(t, "cluster on a memory hub with interest routing", memoryEnv)
}

func TestConformanceRedisRouted(t *testing.T) {
	srv := redistest.Standalone(t)
	runRoutedConformance(t, "cluster on redis streams with interest routing", redisEnv(srv.URL()))
}

func runRoutedConformance(t *testing.T, name string, env routedEnv) {
	adaptertest.Run(t, adaptertest.Setup{
		Name:  name,
		Nodes: 3,
		New: func(t *testing.T, n int) []adapter.Factory {
			o := routingOptions()
			// The suite's socket ids: "n<node>-s<i>".
			o.SocketIDRoom = func(room string) bool { return strings.Contains(room, "-s") }
			cs, _ := routedNodes(t, env, n, o)
			fs := make([]adapter.Factory, n)
			for i, c := range cs {
				fs[i] = func(nsp adapter.Namespace) (adapter.Adapter, error) {
					a, err := c.Adapter(nsp)
					if err != nil {
						return nil, err
					}
					return &settledAdapter{Adapter: a, t: t, cs: cs, name: nsp.Name()}, nil
				}
			}
			return fs
		},
	})
}

// The main cluster tests, on routed namespaces.

// requireRouted fails unless node 0 of cs published routed messages only.
func requireRouted(t *testing.T, cs []*Cluster) {
	t.Helper()
	if cs[0].route == nil || cs[0].Stats().RoutedMessages == 0 {
		t.Fatalf("node 0 did not route (%d routed messages)", cs[0].Stats().RoutedMessages)
	}
}

func TestOrderOfThousandBroadcastsRouted(t *testing.T) {
	_, cs := memoryNodesConfig(t, 3, routingOptions(), routedHubConfig)
	checkOrderOfThousandBroadcasts(t, cs)
	requireRouted(t, cs)
}

func TestBrokerDownRouted(t *testing.T) {
	broker, cs := memoryNodesConfig(t, 2, routingOptions(), routedHubConfig)
	checkBrokerDown(t, broker, cs)
	requireRouted(t, cs)
}

func TestOrderAcrossPlanesRouted(t *testing.T) {
	runRouted(t, func(t *testing.T, env routedEnv) {
		cs, _ := routedNodes(t, env, 2, routingOptions())
		checkOrderAcrossPlanes(t, cs)
		requireRouted(t, cs)
	})
}

// The broker goes away for every node for longer than NodeTimeout and
// InterestKeep: the nodes stop waiting for each other, but no node's
// connected time passes, so none forgets another: what one broadcasts
// meanwhile still goes to the inboxes of the nodes it knew interested, and
// reaches them, in order, once the broker is back; no outage is reported.
func TestRoutingOutageLongerThanNodeTimeout(t *testing.T) {
	opts := routingOptions()
	opts.HeartbeatInterval, opts.NodeTimeout, opts.InterestKeep = 20*time.Millisecond, 200*time.Millisecond, 500*time.Millisecond
	broker, cs := memoryNodesConfig(t, 2, opts, routedHubConfig)
	ns := bind(t, cs, "/")
	s := connect(ns[1], "there", "r")
	waitSettled(t, cs, "/")
	broker.setDown(true)
	testwait.For(t, waitTimeout, "node 0 to stop waiting for node 1", func() bool { return len(cs[0].Nodes()) == 0 })
	time.Sleep(3 * opts.InterestKeep)
	emitDuringCut(t, cs, ns[0], s, func() { broker.setDown(false) })
}

// emitDuringCut emits 30 events from from to room r, where socket s is,
// then ends the cut with restore: s gets them all, in order, node 0 routed,
// and no node reports a routing outage.
func emitDuringCut(t *testing.T, cs []*Cluster, from *node, s *adaptertest.Socket, restore func()) {
	t.Helper()
	const n = 30
	for i := range n {
		emit(t, from.a, "during", i, "r")
	}
	restore()
	msgs, err := s.WaitMessages(testCtx(t), n)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "during", n)
	requireRouted(t, cs)
	for i, c := range cs {
		if o := c.Stats().RoutingOutages; o != 0 {
			t.Errorf("node %d reported %d routing outages", i, o)
		}
	}
}

// The rules of routeTargets, on a known view of the other nodes' interest.
func TestRouteTargetsRules(t *testing.T) {
	c := &Cluster{opts: Options{NodeTimeout: time.Minute}, nodes: make(map[string]time.Time)}
	c.route = newRouteState(nil, "")
	now := time.Now()
	for _, id := range []string{"unknown", "rooms", "empty", "all", "other-nsp", "held"} {
		if id != "held" {
			c.nodes[id] = now
		}
	}
	in := func(flags byte, rooms ...string) map[string]*nspInterest {
		i := &nspInterest{nsp: "/", flags: flags}
		for _, r := range rooms {
			i.rooms.set(roomBucket(r))
		}
		return map[string]*nspInterest{"/": i}
	}
	one := func(p *peerInterest) *peerNode { return &peerNode{insts: map[uint64]*peerInterest{1: p}} }
	c.route.peers = map[string]*peerNode{
		"rooms":     one(&peerInterest{nsps: in(interestSockets, "r")}),
		"empty":     one(&peerInterest{nsps: in(0)}),
		"all":       one(&peerInterest{nsps: in(interestAll)}),
		"other-nsp": one(&peerInterest{nsps: map[string]*nspInterest{"/x": {nsp: "/x", flags: interestSockets}}}),
		"held":      one(&peerInterest{nsps: in(interestSockets, "r")}), // not live, kept
	}
	c.route.markGrace([]string{"other-nsp"}, "/", []string{"granted"}, now.Add(time.Minute))
	c.route.markGrace([]string{"empty"}, "/", []string{"over"}, now.Add(-time.Second))
	sidRoom := sid("x")
	cases := []struct {
		rooms []string
		every bool
		want  []string
	}{
		{rooms: []string{"r"}, want: []string{"all", "held", "rooms", "unknown"}},
		{rooms: []string{"nobody"}, want: []string{"all", "unknown"}},
		{rooms: nil, want: []string{"all", "held", "rooms", "unknown"}},
		{rooms: []string{sidRoom}, want: []string{"all", "held", "rooms", "unknown"}},
		{rooms: []string{"granted"}, want: []string{"all", "other-nsp", "unknown"}},
		{rooms: []string{"over"}, want: []string{"all", "unknown"}},
		{every: true, want: []string{"all", "empty", "held", "other-nsp", "rooms", "unknown"}},
	}
	for _, tc := range cases {
		got := c.routeTargets("/", tc.rooms, tc.every)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("rooms %q every %v: targets %q, want %q", tc.rooms, tc.every, got, tc.want)
		}
	}
	// A late or repeated announcement changes nothing; a newer one replaces.
	c.learnInterest("rooms", 1, &message{kind: kindInterest, version: 0})
	if got := c.routeTargets("/", []string{"r"}, false); !slices.Contains(got, "rooms") {
		t.Errorf("an older announcement replaced a newer one")
	}
	c.learnInterest("rooms", 1, &message{kind: kindInterest, version: 1})
	if got := c.routeTargets("/", []string{"r"}, false); slices.Contains(got, "rooms") {
		t.Errorf("a newer announcement (no namespace) did not replace the older one")
	}
}

// A node's own interest follows its sockets' rooms, own id rooms left out.
func TestLocalInterestFollowsRooms(t *testing.T) {
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	cs := startNodes(t, 1, routingOptions(), func(id string) bus.Bus { return reliableBus(t, hub.Transport(), id) })
	n := bind(t, cs, "/")[0]
	li := cs[0].nsp("/").interest
	snap := func() nspInterest { return li.snapshot("/") }
	if s := snap(); s.flags != 0 || s.rooms.count() != 0 {
		t.Fatalf("empty namespace: %+v", s)
	}
	a := connect(n, "a", "r1", "r2")
	connect(n, "b", "r1")
	if s := snap(); s.flags != interestSockets || s.rooms.count() != 2 || !s.rooms.has(roomBucket("r1")) || !s.rooms.has(roomBucket("r2")) {
		t.Fatalf("two sockets in r1, r2: flags %x, %d buckets", s.flags, s.rooms.count())
	}
	n.a.Leave("a", "r1")
	if s := snap(); !s.rooms.has(roomBucket("r1")) {
		t.Fatalf("r1 left by one of its two sockets is gone")
	}
	n.a.LeaveAll("b")
	if s := snap(); s.rooms.has(roomBucket("r1")) || !s.rooms.has(roomBucket("r2")) {
		t.Fatalf("after the last socket of r1 left: r1 %v r2 %v", s.rooms.has(roomBucket("r1")), s.rooms.has(roomBucket("r2")))
	}
	// A socket out of its own room is still a socket of the namespace.
	n.a.Leave(a.ID(), a.ID())
	if s := snap(); s.flags != interestSockets {
		t.Fatalf("socket out of its own room: flags %x", s.flags)
	}
	n.a.LeaveAll(a.ID())
	if s := snap(); s.flags != 0 || s.rooms.count() != 0 {
		t.Fatalf("no socket left: flags %x, %d buckets", s.flags, s.rooms.count())
	}
}

// The routing metrics count routed messages and their inbox writes.
func TestRoutingMetrics(t *testing.T) {
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	reg := prometheus.NewRegistry()
	opts := routingOptions()
	cs := startNodes(t, 3, opts, func(id string) bus.Bus { return reliableBus(t, hub.Transport(), id) })
	// Node 0's metrics: a cluster of its own registry, on the same hub.
	o := *opts
	o.Logger, o.Registerer = quietLogger, reg
	b := reliableBus(t, hub.Transport(), "metered")
	m, err := New(b, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_ = m.Close(ctx)
		_ = b.Close(ctx)
	})
	all := append([]*Cluster{m}, cs...)
	waitMesh(t, all)
	ns := bind(t, all, "/")
	connect(ns[1], sid("one"), "r")
	connect(ns[2], sid("two"), "r")
	connect(ns[3], sid("three"), "elsewhere")
	waitSettled(t, all, "/")
	const n = 10
	for i := range n {
		emit(t, ns[0].a, "r", i, "r") // to nodes 1 and 2
	}
	emit(t, ns[0].a, "all", 0) // to nodes 1, 2 and 3
	if got := gathered(t, reg, "durasock_cluster_routed_messages_total"); got != n+1 {
		t.Errorf("routed messages %v, want %d", got, n+1)
	}
	if got := gathered(t, reg, "durasock_cluster_inbox_writes_total"); got != 2*n+3 {
		t.Errorf("inbox writes %v, want %d", got, 2*n+3)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "durasock_cluster_routed_fanout" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != n+1 || h.GetSampleSum() != 2*n+3 {
			t.Errorf("fan-out histogram: %d samples summing to %v, want %d summing to %d", h.GetSampleCount(), h.GetSampleSum(), n+1, 2*n+3)
		}
		return
	}
	t.Errorf("durasock_cluster_routed_fanout not registered")
}

// switchedNodes starts n routed nodes on one memory hub, each behind its own
// brokerSwitch (cut off alone with setDown), and waits until they know each
// other.
func switchedNodes(t *testing.T, n int, opts *Options) ([]*Cluster, []*brokerSwitch) {
	t.Helper()
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	sws := make([]*brokerSwitch, n)
	for i := range sws {
		sws[i] = new(brokerSwitch)
	}
	i := 0
	cs := startNodes(t, n, opts, func(id string) bus.Bus {
		b := reliableBus(t, sws[i].wrap(hub.Transport()), id)
		i++
		return b
	})
	t.Cleanup(func() {
		for _, sw := range sws {
			sw.setDown(false)
		}
	})
	return cs, sws
}

// cutOffNode1 starts two routed nodes (NodeTimeout 200 ms, InterestKeep
// keep), each behind its own brokerSwitch, with a socket on node 1 in room r
// known to node 0, and cuts node 1 off from the broker.
func cutOffNode1(t *testing.T, keep time.Duration) ([]*Cluster, []*brokerSwitch, []*node, *adaptertest.Socket) {
	t.Helper()
	opts := routingOptions()
	opts.HeartbeatInterval, opts.NodeTimeout, opts.InterestKeep = 20*time.Millisecond, 200*time.Millisecond, keep
	opts.Logger = quietLogger
	cs, sws := switchedNodes(t, 2, opts)
	ns := bind(t, cs, "/")
	s := connect(ns[1], "there", "r")
	waitSettled(t, cs, "/")
	sws[1].setDown(true)
	return cs, sws, ns, s
}

// A node cut off from the broker alone for longer than NodeTimeout (and less
// than InterestKeep): the other stops waiting for it but goes on writing to
// its inbox what its interest asks for, so that its socket gets every event
// published meanwhile, in order, once it is back; it reports no outage.
func TestRoutingNodeCutOffLongerThanNodeTimeout(t *testing.T) {
	cs, sws, ns, s := cutOffNode1(t, time.Minute)
	testwait.For(t, waitTimeout, "node 0 to stop waiting for node 1", func() bool { return len(cs[0].Nodes()) == 0 })
	// Past the bus's liveness window too, after which node 0's bus no longer
	// hears node 1 either (busHeard).
	testwait.For(t, waitTimeout, "node 0's bus to stop hearing node 1", func() bool {
		return !slices.Contains(cs[0].bus.Status().Nodes, cs[1].NodeID())
	})
	emitDuringCut(t, cs, ns[0], s, func() { sws[1].setDown(false) })
}

// A node cut off alone for longer than InterestKeep (of the other's
// connected time: the other's own link breaking now and then meanwhile does
// not hold it back) is forgotten by the other, which then routes nothing to
// it; when it speaks again, the node that forgot it reports it
// (Stats.RoutingOutages, the metric, a warning), and routes to it again.
func TestRoutingNodeCutOffLongerThanInterestKeep(t *testing.T) {
	cs, sws, ns, s := cutOffNode1(t, time.Second)
	forgotten := func() bool { return !slices.Contains(cs[0].routeTargets("/", []string{"r"}, false), cs[1].NodeID()) }
	for !forgotten() {
		// Node 0's link breaks briefly every 300 ms.
		sws[0].setDown(true)
		time.Sleep(30 * time.Millisecond)
		sws[0].setDown(false)
		time.Sleep(270 * time.Millisecond)
		if testCtx(t).Err() != nil {
			t.Fatal("node 0 never forgot node 1")
		}
	}
	if o := cs[0].Stats().RoutingOutages; o != 0 {
		t.Fatalf("node 0 reported %d routing outages before node 1 came back", o)
	}
	sws[1].setDown(false)
	testwait.For(t, waitTimeout, "node 0 to report node 1's outage", func() bool { return cs[0].Stats().RoutingOutages == 1 })
	waitSettled(t, cs, "/")
	emit(t, ns[0].a, "after", 0, "r")
	msgs, err := s.WaitMessages(testCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "after", 1)
	if o := cs[1].Stats().RoutingOutages; o != 0 {
		t.Errorf("node 1 reported %d routing outages: it forgot no one", o)
	}
}
