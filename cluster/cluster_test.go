package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/parser"
	"github.com/prometheus/client_golang/prometheus"
)

func event(t testing.TB, name string, args ...any) *parser.Packet {
	t.Helper()
	p, err := parser.EventPacket("/", name, args...)
	if err != nil {
		t.Fatalf("EventPacket: %v", err)
	}
	return p
}

func waitEvents(t testing.TB, ctx context.Context, s *adaptertest.Socket, n int) []adaptertest.Message {
	t.Helper()
	ms, err := s.WaitMessages(ctx, n)
	if err != nil {
		t.Fatalf("socket %s: %d of %d messages: %v", s.ID(), len(ms), n, err)
	}
	return ms
}

func TestFetchSocketsNamesNodes(t *testing.T) {
	_, cs := memoryNodes(t, 3, nil)
	ns := bind(t, cs, "/")
	for i, n := range ns {
		connect(n, "s"+strconv.Itoa(i), "room")
	}
	ctx := testCtx(t)
	infos, err := ns[0].a.FetchSockets(ctx, adapter.Options{Rooms: []string{"room"}})
	if err != nil {
		t.Fatalf("FetchSockets: %v", err)
	}
	got := make(map[string]string)
	for _, in := range infos {
		got[in.ID] = in.Node
		if !slices.Contains(in.Rooms, "room") {
			t.Errorf("socket %s: rooms %q lack room", in.ID, in.Rooms)
		}
	}
	for i, c := range cs {
		if id := "s" + strconv.Itoa(i); got[id] != c.NodeID() {
			t.Errorf("socket %s: node %q, want %q", id, got[id], c.NodeID())
		}
	}
	if len(infos) != 3 {
		t.Errorf("FetchSockets: %d sockets, want 3", len(infos))
	}
}

// An emit with an ack to a socket on another node: the reply is routed back.
func TestAckFromRemoteSocket(t *testing.T) {
	_, cs := memoryNodes(t, 2, nil)
	ns := bind(t, cs, "/")
	remote := connect(ns[1], "remote")
	replies, err := ns[0].a.BroadcastWithAck(testCtx(t), event(t, "ping", 1), adapter.Options{Rooms: []string{"remote"}})
	if err != nil {
		t.Fatalf("BroadcastWithAck: %v", err)
	}
	if len(replies) != 1 || replies[0].From != "remote" || len(replies[0].Args) != 1 || string(replies[0].Args[0]) != `"remote"` {
		t.Fatalf("replies %+v, want one from remote", replies)
	}
	ms := remote.Messages()
	if len(ms) != 1 || !ms[0].Packet.HasID || ms[0].Event != "ping" {
		t.Fatalf("remote socket got %+v", ms)
	}
	if n := remote.PendingAcks(); n != 0 {
		t.Errorf("%d acks still registered", n)
	}
}

func TestLocalOperationsStayLocal(t *testing.T) {
	_, cs := memoryNodes(t, 2, nil)
	ns := bind(t, cs, "/")
	here := connect(ns[0], "here", "r")
	there := connect(ns[1], "there", "r")
	ctx := testCtx(t)
	local := adapter.Options{Rooms: []string{"r"}, Local: true}
	if err := ns[0].a.Broadcast(ctx, event(t, "local"), local); err != nil {
		t.Fatal(err)
	}
	if err := ns[0].a.AddSockets(ctx, local, []string{"joined"}); err != nil {
		t.Fatal(err)
	}
	infos, err := ns[0].a.FetchSockets(ctx, local)
	if err != nil || len(infos) != 1 || infos[0].ID != "here" {
		t.Fatalf("FetchSockets(Local) = %+v, %v", infos, err)
	}
	replies, err := ns[0].a.BroadcastWithAck(ctx, event(t, "local-ack"), local)
	if err != nil || len(replies) != 1 || replies[0].From != "here" {
		t.Fatalf("BroadcastWithAck(Local) = %+v, %v", replies, err)
	}
	// A non-local broadcast from the same node is ordered after the local ones: once
	// it arrived, the local ones would have too.
	if err := ns[0].a.Broadcast(ctx, event(t, "fence"), adapter.Options{}); err != nil {
		t.Fatal(err)
	}
	ms := waitEvents(t, ctx, there, 1)
	if len(ms) != 1 || ms[0].Event != "fence" {
		t.Errorf("remote socket got %d messages (first %q), want only the fence", len(ms), ms[0].Event)
	}
	if got := ns[1].a.Rooms("there"); slices.Contains(got, "joined") {
		t.Errorf("remote socket joined by a local AddSockets: %q", got)
	}
	if got := ns[0].a.Rooms("here"); !slices.Contains(got, "joined") {
		t.Errorf("local socket not joined: %q", got)
	}
	if got := len(here.Messages()); got != 3 {
		t.Errorf("local socket: %d messages, want 3", got)
	}
}

// Broadcasts of one node arrive at every other node in order, each once, with
// socket operations in between applied in order too.
func TestOrderOfThousandBroadcasts(t *testing.T) {
	_, cs := memoryNodes(t, 3, nil)
	checkOrderOfThousandBroadcasts(t, cs)
}

func checkOrderOfThousandBroadcasts(t *testing.T, cs []*Cluster) {
	const n = 1000
	ns := bind(t, cs, "/")
	var sockets []*adaptertest.Socket
	for i := 1; i < 3; i++ {
		sockets = append(sockets, connect(ns[i], "s"+strconv.Itoa(i), "r"))
	}
	waitSettled(t, cs, "/")
	ctx := testCtx(t)
	for seq := range n {
		if seq == n/2 {
			// Taken out of the room and back in, in order with the broadcasts.
			if err := ns[0].a.DelSockets(ctx, adapter.Options{}, []string{"r"}); err != nil {
				t.Fatal(err)
			}
			if err := ns[0].a.Broadcast(ctx, event(t, "seq", -1), adapter.Options{Rooms: []string{"r"}}); err != nil {
				t.Fatal(err)
			}
			if err := ns[0].a.AddSockets(ctx, adapter.Options{}, []string{"r"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := ns[0].a.Broadcast(ctx, event(t, "seq", seq), adapter.Options{Rooms: []string{"r"}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range sockets {
		ms := waitEvents(t, ctx, s, n)
		for i, m := range ms {
			var seq int
			if len(m.Args) != 1 || json.Unmarshal(m.Args[0], &seq) != nil || seq != i {
				t.Fatalf("socket %s: message %d is %s %s, want seq %d", s.ID(), i, m.Event, m.Args, i)
			}
		}
		if len(ms) != n {
			t.Errorf("socket %s: %d messages, want %d", s.ID(), len(ms), n)
		}
	}
}

// While the broker is down, requests fail at once with adapter.ErrUnavailable,
// broadcasts and socket operations are accepted, reach local sockets at once and
// the other nodes when the broker is back.
func TestBrokerDown(t *testing.T) {
	broker, cs := memoryNodes(t, 2, nil)
	checkBrokerDown(t, broker, cs)
}

func checkBrokerDown(t *testing.T, broker *brokerSwitch, cs []*Cluster) {
	ns := bind(t, cs, "/")
	here := connect(ns[0], "here", "r")
	there := connect(ns[1], "there", "r")
	waitSettled(t, cs, "/")
	ctx := testCtx(t)

	broker.setDown(true)
	testwait.For(t, waitTimeout, "the bus to see the broker down", func() bool {
		return cs[0].bus.Status().State != bus.Connected
	})
	// No deadline on these: they must not wait for RequestTimeout either.
	_, err := ns[0].a.FetchSockets(context.Background(), adapter.Options{})
	if !errors.Is(err, adapter.ErrUnavailable) || !errors.Is(err, bus.ErrNotConnected) {
		t.Errorf("FetchSockets while down: %v, want ErrUnavailable wrapping bus.ErrNotConnected", err)
	}
	_, err = ns[0].a.ServerSideEmit(context.Background(), "q", nil, true)
	if !errors.Is(err, adapter.ErrUnavailable) {
		t.Errorf("ServerSideEmit with replies while down: %v, want ErrUnavailable", err)
	}
	_, err = ns[0].a.BroadcastWithAck(context.Background(), event(t, "q"), adapter.Options{})
	if !errors.Is(err, adapter.ErrUnavailable) {
		t.Errorf("BroadcastWithAck while down: %v, want ErrUnavailable", err)
	}
	if err := ns[0].a.Broadcast(ctx, event(t, "during"), adapter.Options{}); err != nil {
		t.Fatalf("Broadcast while down: %v", err)
	}
	if got := here.Messages(); len(got) != 1 || got[0].Event != "during" {
		t.Fatalf("local socket got %+v right after Broadcast, want the event (G1)", got)
	}
	if err := ns[0].a.AddSockets(ctx, adapter.Options{}, []string{"later"}); err != nil {
		t.Fatalf("AddSockets while down: %v", err)
	}
	if _, err := ns[0].a.ServerSideEmit(ctx, "notice", nil, false); err != nil {
		t.Fatalf("ServerSideEmit without replies while down: %v", err)
	}

	broker.setDown(false)
	ms := waitEvents(t, ctx, there, 1)
	if ms[0].Event != "during" {
		t.Errorf("remote socket got %q, want the event broadcast while down", ms[0].Event)
	}
	testwait.For(t, waitTimeout, "the join made while down to reach the other node", func() bool {
		return slices.Contains(ns[1].a.Rooms("there"), "later")
	})
	if _, err := ns[1].ns.WaitServerEmits(ctx, 1); err != nil {
		t.Errorf("server-side emit made while down: %v", err)
	}
	// Requests work again once the buses are connected.
	testwait.For(t, waitTimeout, "the buses to reconnect", func() bool {
		return cs[0].bus.Status().State == bus.Connected && cs[1].bus.Status().State == bus.Connected
	})
	waitMesh(t, cs)
	infos, err := ns[0].a.FetchSockets(ctx, adapter.Options{Rooms: []string{"later"}})
	if err != nil || len(infos) != 2 {
		t.Errorf("FetchSockets after the outage = %d sockets, %v; want 2", len(infos), err)
	}
}

// A node that closes says goodbye; one that goes silent times out. Neither makes
// requests wait.
func TestNodeLeaves(t *testing.T) {
	opts := &Options{RequestTimeout: time.Minute, HeartbeatInterval: 50 * time.Millisecond, NodeTimeout: 2 * time.Second}
	hub := bus.NewMemoryHub()
	buses := make(map[string]bus.Bus)
	cs := startNodes(t, 3, opts, func(id string) bus.Bus {
		b := memoryBus(t, hub, id)
		buses[id] = b
		return b
	})
	ns := bind(t, cs, "/")
	for i, n := range ns {
		connect(n, "s"+strconv.Itoa(i))
	}
	ctx := testCtx(t)

	// Node 2 goes silent without a goodbye: its bus stops.
	if err := buses[cs[2].NodeID()].Close(ctx); err != nil {
		t.Fatal(err)
	}
	// A request made now still counts on node 2, and ends when node 2 times out,
	// long before RequestTimeout.
	infos, err := ns[0].a.FetchSockets(context.Background(), adapter.Options{})
	if err != nil {
		t.Fatalf("FetchSockets with a silent node: %v", err)
	}
	if got := infoIDs(infos); !slices.Equal(got, []string{"s0", "s1"}) {
		t.Errorf("FetchSockets = %q, want s0 s1", got)
	}
	testwait.For(t, waitTimeout, "node 2 to be forgotten", func() bool { return !slices.Contains(cs[0].Nodes(), cs[2].NodeID()) })

	// Node 1 closes: it says goodbye.
	if err := cs[1].Close(ctx); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, waitTimeout, "node 1 to be forgotten", func() bool { return len(cs[0].Nodes()) == 0 })
	replies, err := ns[0].a.ServerSideEmit(context.Background(), "q", nil, true)
	if err != nil || len(replies) != 0 {
		t.Errorf("ServerSideEmit alone = %v, %v; want no replies, nil", replies, err)
	}
	if _, err := ns[1].a.FetchSockets(ctx, adapter.Options{}); !errors.Is(err, adapter.ErrClosed) {
		t.Errorf("FetchSockets on a closed cluster: %v, want adapter.ErrClosed", err)
	}
}

func infoIDs(infos []adapter.SocketInfo) []string {
	var ids []string
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	return ids
}

// Messages no node of ours could have written are dropped and counted; the
// cluster goes on.
func TestMalformedMessagesCounted(t *testing.T) {
	hub := bus.NewMemoryHub()
	reg := prometheus.NewRegistry()
	first := startNodes(t, 1, nil, func(id string) bus.Bus { return memoryBus(t, hub, "a-"+id) })
	second := startNodes(t, 1, &Options{Registerer: reg}, func(id string) bus.Bus { return memoryBus(t, hub, "b-"+id) })
	cs := []*Cluster{first[0], second[0]}
	waitMesh(t, cs)
	ns := bind(t, cs, "/")
	there := connect(ns[1], "there")
	ctx := testCtx(t)

	foreign := memoryBus(t, hub, "foreign")
	t.Cleanup(func() {
		if err := foreign.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	foreign.Receive(func(bus.Message) {})
	testwait.For(t, waitTimeout, "the foreign bus to connect", func() bool { return foreign.Status().State == bus.Connected })
	valid := (&message{kind: kindBroadcast, nsp: "/", ptype: parser.Event, data: []byte(`["x"]`)}).marshal()
	bad := [][]byte{
		nil,
		{0xff},
		{2, byte(kindBroadcast), 0, 0}, // unknown version
		{codecVersion, 99, 0, 0},       // unknown kind
		{codecVersion, byte(kindHeartbeat), 0x80, 0}, // unknown flag
		valid[:len(valid)-1],                         // truncated
		append(slices.Clone(valid), 0),               // trailing byte
		(&message{kind: kindBroadcast, nsp: "/", ptype: parser.Connect, data: []byte(`{}`)}).marshal(),
		(&message{kind: kindFetchRequest, nsp: "/"}).marshal(), // request id 0
		[]byte("{\"type\":\"broadcast\"}"),
	}
	for _, p := range bad {
		if err := foreign.Publish(ctx, "/", p); err != nil {
			t.Fatal(err)
		}
		if err := foreign.Send(ctx, cs[1].NodeID(), p); err != nil {
			t.Fatal(err)
		}
	}
	// A valid broadcast after the broken ones: once it arrived, they were handled.
	if err := foreign.Publish(ctx, "/", valid); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, ctx, there, 1)
	// Direct messages may be dropped by the best-effort plane, so at least the
	// published ones are counted.
	testwait.For(t, waitTimeout, "decode errors to be counted", func() bool { return cs[1].Stats().DecodeErrors >= uint64(len(bad)) })
	got := cs[1].Stats().DecodeErrors
	if m := gathered(t, reg, "durasock_cluster_decode_errors_total"); m != float64(got) {
		t.Errorf("durasock_cluster_decode_errors_total = %v, Stats = %d", m, got)
	}
	if err := ns[0].a.Broadcast(ctx, event(t, "after"), adapter.Options{}); err != nil {
		t.Fatal(err)
	}
	if ms := waitEvents(t, ctx, there, 2); ms[1].Event != "after" {
		t.Errorf("after the broken messages: %q", ms[1].Event)
	}
}

// TestRegistererTaken: New refuses a second Cluster on one Registerer (the
// sentinel errors are checked from outside the package, in errors_test.go).
func TestRegistererTaken(t *testing.T) {
	hub := bus.NewMemoryHub()
	reg := prometheus.NewRegistry()
	startNodes(t, 1, &Options{Registerer: reg}, func(id string) bus.Bus { return memoryBus(t, hub, id) })
	b := memoryBus(t, hub, "second")
	t.Cleanup(func() {
		if err := b.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if _, err := New(b, &Options{Registerer: reg}); err == nil {
		t.Errorf("a second Cluster on one Registerer: no error")
	}
}

// gathered returns the summed value of the counter or gauge name in reg.
func gathered(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// A process that is no server publishes into the cluster with the encoders.
func TestEncodersForEmitters(t *testing.T) {
	hub := bus.NewMemoryHub()
	cs := startNodes(t, 1, nil, func(id string) bus.Bus { return memoryBus(t, hub, id) })
	ns := bind(t, cs, "/")
	target := connect(ns[0], "target", "r")
	other := connect(ns[0], "other")
	ctx := testCtx(t)
	emitter := memoryBus(t, hub, "emitter")
	t.Cleanup(func() {
		if err := emitter.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	emitter.Receive(func(bus.Message) {})

	if _, err := encodeBroadcast("/", &parser.Packet{Type: parser.Ack, Data: []byte(`[]`)}, adapter.Options{}); !errors.Is(err, adapter.ErrInvalidPacket) {
		t.Errorf("encodeBroadcast of an ACK: %v", err)
	}
	publish := func(b []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if err := emitter.Publish(ctx, partitionKey("/"), b); err != nil {
			t.Fatal(err)
		}
	}
	p := event(t, "from-emitter", 1)
	publish(encodeBroadcast("/", p, adapter.Options{Rooms: []string{"r"}}))
	publish(encodeAddSockets("/", adapter.Options{Rooms: []string{"other"}}, []string{"r"}), nil)
	publish(encodeServerSideEmit("/", "note", nil))
	publish(encodeBroadcast("/", event(t, "second"), adapter.Options{Rooms: []string{"r"}}))
	publish(encodeDelSockets("/", adapter.Options{}, []string{"r"}), nil)
	publish(encodeDisconnectSockets("/", adapter.Options{Rooms: []string{"target"}}, true), nil)

	ms := waitEvents(t, ctx, target, 2)
	if ms[0].Event != "from-emitter" || ms[1].Event != "second" {
		t.Errorf("target got %q, %q", ms[0].Event, ms[1].Event)
	}
	if ms := waitEvents(t, ctx, other, 1); ms[0].Event != "second" {
		t.Errorf("other got %q", ms[0].Event)
	}
	if err := target.WaitState(ctx, func(s *adaptertest.Socket) bool { return len(s.Disconnects()) == 1 }); err != nil {
		t.Errorf("target not disconnected: %v", err)
	}
	if _, err := ns[0].ns.WaitServerEmits(ctx, 1); err != nil {
		t.Error(err)
	}
	if got := ns[0].a.Rooms("other"); slices.Contains(got, "r") {
		t.Errorf("other still in r: %q", got)
	}
}
