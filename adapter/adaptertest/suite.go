package adaptertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// Defaults of Setup.
const (
	DefaultTimeout    = 30 * time.Second
	DefaultAckTimeout = 2 * time.Second
)

// NamespaceName is the namespace every subtest uses.
const NamespaceName = "/suite"

// Setup describes the adapter under test.
type Setup struct {
	// Name describes the adapter in failure messages.
	Name string
	// Nodes is the largest cluster New can make: 1 for a single-process adapter.
	// Subtests use min(Nodes, 3) nodes.
	Nodes int
	// New returns the factories of nodes adapters forming one fresh, empty
	// cluster. Whatever it starts is stopped by t.Cleanup. The adapters made are
	// closed by the suite before those cleanups run.
	New func(t *testing.T, nodes int) []adapter.Factory
	// Settle is waited once after a cluster's adapters are made, for an adapter
	// whose factory returns before it receives from the others. Zero waits not at
	// all; a factory that returns only when its node is ready is better.
	Settle time.Duration
	// Timeout bounds each subtest: all its waits for conditions and requests
	// together (DefaultTimeout when zero). A subtest never asserts speed: it fails
	// only when a condition does not hold by then.
	Timeout time.Duration
	// AckTimeout is the deadline of requests that are meant to time out, because a
	// socket or node stays silent (DefaultAckTimeout when zero). Every reply that
	// is given must arrive within it.
	AckTimeout time.Duration
}

// Run runs the conformance suite against the adapter s describes, one subtest
// per behaviour, each on a cluster of its own. Run it from a package whose
// TestMain checks for leaked goroutines (go.uber.org/goleak): every adapter is
// closed before its subtest ends, and nothing it started may outlive it.
func Run(t *testing.T, s Setup) {
	if s.New == nil || s.Nodes < 1 {
		t.Fatalf("adaptertest: Setup %q needs New and Nodes >= 1", s.Name)
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.AckTimeout <= 0 {
		s.AckTimeout = DefaultAckTimeout
	}
	tests := []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"BroadcastAll", testBroadcastAll},
		{"BroadcastRooms", testBroadcastRooms},
		{"BroadcastExcept", testBroadcastExcept},
		{"BroadcastSocketIDRoom", testBroadcastSocketIDRoom},
		{"BroadcastLocal", testBroadcastLocal},
		{"BroadcastVolatile", testBroadcastVolatile},
		{"BroadcastBinary", testBroadcastBinary},
		{"BroadcastOrder", testBroadcastOrder},
		{"BroadcastPaced", testBroadcastPaced},
		{"BroadcastInvalid", testBroadcastInvalid},
		{"Membership", testMembership},
		{"AddDelSockets", testAddDelSockets},
		{"DisconnectSockets", testDisconnectSockets},
		{"FetchSockets", testFetchSockets},
		{"BroadcastWithAck", testBroadcastWithAck},
		{"BroadcastWithAckMissing", testBroadcastWithAckMissing},
		{"BroadcastWithAckNone", testBroadcastWithAckNone},
		{"ServerSideEmit", testServerSideEmit},
		{"Close", testClose},
	}
	if s.Nodes > 1 {
		tests = append(tests, struct {
			name string
			fn   func(*testing.T, *suite)
		}{"ServerSideEmitMissing", testServerSideEmitMissing})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, &suite{Setup: s}) })
	}
}

type suite struct{ Setup }

// nodes returns how many nodes a multi-node subtest uses.
func (s *suite) nodes() int { return min(s.Nodes, 3) }

type node struct {
	i  int
	ns *Namespace
	a  adapter.Adapter
}

// cluster is one subtest's cluster and the sockets connected to it.
type cluster struct {
	t       *testing.T
	s       *suite
	ctx     context.Context // bounded by Timeout
	nodes   []*node
	sockets []*Socket
	owner   map[*Socket]int
	fences  int
}

func (s *suite) cluster(t *testing.T, n int) *cluster {
	t.Helper()
	factories := s.New(t, n)
	if len(factories) != n {
		t.Fatalf("%s: New(%d) returned %d factories", s.Name, n, len(factories))
	}
	ctx, cancel := context.WithTimeout(t.Context(), s.Timeout)
	t.Cleanup(cancel)
	c := &cluster{t: t, s: s, ctx: ctx, owner: make(map[*Socket]int)}
	for i, f := range factories {
		ns := NewNamespace(NamespaceName)
		a, err := f(ns)
		if err != nil {
			t.Fatalf("%s: factory of node %d: %v", s.Name, i, err)
		}
		ns.Bind(a)
		t.Cleanup(func() {
			if err := a.Close(); err != nil && !errors.Is(err, adapter.ErrClosed) {
				t.Errorf("node %d: Close: %v", i, err)
			}
			ns.Wait()
		})
		c.nodes = append(c.nodes, &node{i: i, ns: ns, a: a})
	}
	if s.Settle > 0 {
		timer := time.NewTimer(s.Settle)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			t.Fatalf("settling: %v", ctx.Err())
		}
	}
	return c
}

// handshake is the handshake every socket of the suite presents.
func handshake(id string) adapter.Handshake {
	return adapter.Handshake{
		Headers: map[string][]string{"User-Agent": {"adaptertest"}, "X-Id": {id}},
		Query:   map[string][]string{"EIO": {"4"}, "transport": {"websocket"}},
		Auth:    json.RawMessage(`{"token":"t-` + id + `"}`),
		Address: "127.0.0.1",
		Time:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Secure:  true,
		URL:     "/socket.io/?EIO=4&transport=websocket",
	}
}

// connect connects socket id to node i, in rooms, answering acks with its id.
func (c *cluster) connect(i int, id string, rooms ...string) *Socket {
	s := c.nodes[i].ns.Connect(id, SocketOptions{
		Rooms:     rooms,
		Ack:       ReplyID,
		Data:      json.RawMessage(`{"node":` + strconv.Itoa(i) + `,"id":"` + id + `"}`),
		Handshake: handshake(id),
	})
	c.sockets = append(c.sockets, s)
	c.owner[s] = i
	return s
}

// layout is the sockets of the standard layout, by node: s0 in room a, s1 in b,
// s2 in a and b, s3 in no room but its own.
type layout [][4]*Socket

func (c *cluster) standard() layout {
	l := make(layout, len(c.nodes))
	for i := range c.nodes {
		p := "n" + strconv.Itoa(i) + "-"
		l[i] = [4]*Socket{
			c.connect(i, p+"s0", "a"),
			c.connect(i, p+"s1", "b"),
			c.connect(i, p+"s2", "a", "b"),
			c.connect(i, p+"s3"),
		}
	}
	return l
}

// pick returns socket j of every node.
func (l layout) pick(js ...int) []*Socket {
	var out []*Socket
	for _, node := range l {
		for _, j := range js {
			out = append(out, node[j])
		}
	}
	return out
}

func packet(t *testing.T, event string, args ...any) *parser.Packet {
	t.Helper()
	p, err := parser.EventPacket(NamespaceName, event, args...)
	if err != nil {
		t.Fatalf("EventPacket: %v", err)
	}
	return p
}

// emit broadcasts event from node i.
func (c *cluster) emit(i int, opts adapter.Options, event string, args ...any) {
	c.t.Helper()
	if err := c.nodes[i].a.Broadcast(c.ctx, packet(c.t, event, args...), opts); err != nil {
		c.t.Fatalf("node %d: Broadcast %q %+v: %v", i, event, opts, err)
	}
}

const fenceEvent = "adaptertest-fence"

// fence broadcasts a fence event to all from every node and waits until every
// connected socket has every fence. Since each node's broadcasts arrive in order,
// whatever was broadcast before has then arrived everywhere it is going to.
func (c *cluster) fence() {
	c.t.Helper()
	c.fences++
	seq := c.fences
	for i := range c.nodes {
		c.emit(i, adapter.Options{}, fenceEvent, seq, i)
	}
	for _, s := range c.sockets {
		if !c.known(s) {
			continue
		}
		got, err := s.WaitFor(c.ctx, func(ms []Message) bool { return countFences(ms, seq) == len(c.nodes) })
		if err != nil {
			c.t.Fatalf("fence %d: socket %s has %d of %d fences: %v", seq, s.ID(), countFences(got, seq), len(c.nodes), err)
		}
	}
}

// known reports whether s is connected and known to its node's adapter, so that
// a broadcast to all reaches it.
func (c *cluster) known(s *Socket) bool {
	return s.Connected() && len(c.nodes[c.index(s)].a.Rooms(s.ID())) > 0
}

// index returns the position in c.nodes of the node s is connected to.
func (c *cluster) index(s *Socket) int {
	for i, n := range c.nodes {
		if n.ns == s.ns {
			return i
		}
	}
	c.t.Fatalf("socket %s is on no node of the cluster", s.ID())
	return 0
}

func countFences(ms []Message, seq int) int {
	n := 0
	want := []byte(strconv.Itoa(seq))
	for _, m := range ms {
		if m.Event == fenceEvent && len(m.Args) == 2 && bytes.Equal(m.Args[0], want) {
			n++
		}
	}
	return n
}

// events returns the messages of s other than fences.
func events(s *Socket) []Message {
	var out []Message
	for _, m := range s.Messages() {
		if m.Event != fenceEvent {
			out = append(out, m)
		}
	}
	return out
}

// expect fences the cluster and then checks that each event of want reached
// exactly the sockets listed, once each, and no other socket.
func (c *cluster) expect(want map[string][]*Socket) {
	c.t.Helper()
	c.fence()
	for _, s := range c.sockets {
		if errs := s.DecodeErrors(); len(errs) > 0 {
			c.t.Errorf("socket %s: written packets that do not decode: %v", s.ID(), errs)
		}
		counts := make(map[string]int)
		for _, m := range events(s) {
			counts[m.Event]++
		}
		for event, to := range want {
			n := 0
			if slices.Contains(to, s) {
				n = 1
			}
			if counts[event] != n {
				c.t.Errorf("socket %s (node %d): event %q received %d times, want %d", s.ID(), c.owner[s], event, counts[event], n)
			}
		}
	}
}

func testBroadcastAll(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	want := make(map[string][]*Socket)
	for i := range c.nodes {
		event := "all-from-" + strconv.Itoa(i)
		c.emit(i, adapter.Options{}, event, "hello", i)
		want[event] = l.pick(0, 1, 2, 3)
	}
	c.expect(want)
	for _, so := range c.sockets {
		for _, m := range events(so) {
			if len(m.Args) != 2 || string(m.Args[0]) != `"hello"` || m.Packet.Namespace != NamespaceName || m.Packet.HasID {
				t.Errorf("socket %s: got %q %s in %q (ack id %v)", so.ID(), m.Event, m.Args, m.Packet.Namespace, m.Packet.HasID)
			}
		}
	}
}

func testBroadcastRooms(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	last := len(c.nodes) - 1
	c.emit(0, adapter.Options{Rooms: []string{"a", "b"}}, "to-a-b")
	c.emit(last, adapter.Options{Rooms: []string{"a"}}, "to-a")
	c.emit(0, adapter.Options{Rooms: []string{"b", "nobody"}}, "to-b")
	c.emit(last, adapter.Options{Rooms: []string{"nobody"}}, "to-nobody")
	c.expect(map[string][]*Socket{
		"to-a-b":    l.pick(0, 1, 2),
		"to-a":      l.pick(0, 2),
		"to-b":      l.pick(1, 2),
		"to-nobody": nil,
	})
}

func testBroadcastExcept(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	last := len(c.nodes) - 1
	c.emit(0, adapter.Options{Rooms: []string{"a"}, Except: []string{"b"}}, "a-not-b")
	c.emit(last, adapter.Options{Except: []string{"a"}}, "all-not-a")
	c.emit(0, adapter.Options{Rooms: []string{"a", "b"}, Except: []string{"a", "b"}}, "none")
	c.emit(last, adapter.Options{Except: []string{"nobody"}}, "all-not-nobody")
	c.expect(map[string][]*Socket{
		"a-not-b":        l.pick(0),
		"all-not-a":      l.pick(1, 3),
		"none":           nil,
		"all-not-nobody": l.pick(0, 1, 2, 3),
	})
}

func testBroadcastSocketIDRoom(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	last := len(c.nodes) - 1
	target := l[last][1]
	other := l[0][3]
	c.emit(0, adapter.Options{Rooms: []string{target.ID()}}, "to-one")
	c.emit(last, adapter.Options{Rooms: []string{target.ID(), other.ID()}}, "to-two")
	c.emit(0, adapter.Options{Except: []string{target.ID()}}, "all-but-one")
	all := l.pick(0, 1, 2, 3)
	c.expect(map[string][]*Socket{
		"to-one":      {target},
		"to-two":      {target, other},
		"all-but-one": slices.DeleteFunc(slices.Clone(all), func(x *Socket) bool { return x == target }),
	})
}

func testBroadcastLocal(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	want := make(map[string][]*Socket)
	for i := range c.nodes {
		event := "local-" + strconv.Itoa(i)
		c.emit(i, adapter.Options{Local: true}, event)
		want[event] = l[i][:]
		event = "local-a-" + strconv.Itoa(i)
		c.emit(i, adapter.Options{Local: true, Rooms: []string{"a"}}, event)
		want[event] = []*Socket{l[i][0], l[i][2]}
	}
	c.expect(want)
}

func testBroadcastVolatile(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	last := len(c.nodes) - 1
	c.emit(last, adapter.Options{Volatile: true}, "volatile")
	c.emit(last, adapter.Options{}, "plain")
	c.expect(map[string][]*Socket{"volatile": l.pick(0, 1, 2, 3), "plain": l.pick(0, 1, 2, 3)})
	for _, so := range c.sockets {
		for _, m := range events(so) {
			if m.Volatile != (m.Event == "volatile") {
				t.Errorf("socket %s: event %q written with volatile=%v", so.ID(), m.Event, m.Volatile)
			}
		}
	}
}

func testBroadcastBinary(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	big := bytes.Repeat([]byte("\x00\xff\r\n\x1e{\"_placeholder\":true}"), 4096)
	obj := json.RawMessage(`{"z":1,"a":[true,null,"é\u2028"],"m":{"k":"v"}}`)
	p := packet(t, "bin", every, obj, []byte{}, big)
	wantData := slices.Clone(p.Data)
	last := len(c.nodes) - 1
	if err := c.nodes[last].a.Broadcast(c.ctx, p, adapter.Options{Rooms: []string{"b"}}); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	c.expect(map[string][]*Socket{"bin": l.pick(1, 2)})
	for _, so := range l.pick(1, 2) {
		for _, m := range events(so) {
			if m.Packet.Type != parser.BinaryEvent {
				t.Errorf("socket %s: packet type %d, want BINARY_EVENT", so.ID(), m.Packet.Type)
			}
			if !bytes.Equal(m.Packet.Data, wantData) {
				t.Errorf("socket %s: data\n%s\nwant\n%s", so.ID(), m.Packet.Data, wantData)
			}
			want := [][]byte{every, {}, big}
			if len(m.Packet.Attachments) != len(want) {
				t.Fatalf("socket %s: %d attachments, want %d", so.ID(), len(m.Packet.Attachments), len(want))
			}
			for k := range want {
				if !bytes.Equal(m.Packet.Attachments[k], want[k]) {
					t.Errorf("socket %s: attachment %d differs (%d bytes, want %d)", so.ID(), k, len(m.Packet.Attachments[k]), len(want[k]))
				}
			}
		}
	}
}

// OrderEvents is how many numbered events each node broadcasts in BroadcastOrder.
const OrderEvents = 500

func testBroadcastOrder(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	var wg sync.WaitGroup
	errs := make(chan error, len(c.nodes))
	for i, n := range c.nodes {
		wg.Go(func() {
			for seq := range OrderEvents {
				p, err := parser.EventPacket(NamespaceName, "seq", i, seq)
				if err != nil {
					errs <- err
					return
				}
				if err := n.a.Broadcast(c.ctx, p, adapter.Options{Rooms: []string{"a", "b"}}); err != nil {
					errs <- fmt.Errorf("node %d: Broadcast %d: %w", i, seq, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c.fence()
	total := OrderEvents * len(c.nodes)
	for _, so := range l.pick(0, 1, 2) {
		next := make([]int, len(c.nodes))
		bad := 0
		for _, m := range events(so) {
			var origin, seq int
			if len(m.Args) != 2 || json.Unmarshal(m.Args[0], &origin) != nil || json.Unmarshal(m.Args[1], &seq) != nil ||
				origin < 0 || origin >= len(c.nodes) {
				t.Fatalf("socket %s: unexpected %q %s", so.ID(), m.Event, m.Args)
			}
			if seq != next[origin] && bad < 5 {
				bad++
				t.Errorf("socket %s: from node %d got event %d, want %d (lost, duplicated or reordered)", so.ID(), origin, seq, next[origin])
			}
			next[origin] = seq + 1
		}
		if got := len(events(so)); got != total {
			t.Errorf("socket %s: %d events, want %d", so.ID(), got, total)
		}
	}
	for _, so := range l.pick(3) {
		if n := len(events(so)); n != 0 {
			t.Errorf("socket %s (in no room) got %d events", so.ID(), n)
		}
	}
}

func testBroadcastInvalid(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	a := c.nodes[0].a
	ack := &parser.Packet{Type: parser.Ack, Namespace: NamespaceName, ID: 1, HasID: true, Data: json.RawMessage(`[]`)}
	other := &parser.Packet{Type: parser.Event, Namespace: "/other", Data: json.RawMessage(`["x"]`)}
	object := &parser.Packet{Type: parser.Event, Namespace: NamespaceName, Data: json.RawMessage(` {"x":1}`)}
	invalid := map[string]*parser.Packet{"nil": nil, "ACK": ack, "other namespace's": other, "object data": object}
	for name, p := range invalid {
		if err := a.Broadcast(c.ctx, p, adapter.Options{}); !errors.Is(err, adapter.ErrInvalidPacket) {
			t.Errorf("Broadcast of a %s packet: %v, want adapter.ErrInvalidPacket", name, err)
		}
		if _, err := a.BroadcastWithAck(c.ctx, p, adapter.Options{}); !errors.Is(err, adapter.ErrInvalidPacket) {
			t.Errorf("BroadcastWithAck of a %s packet: %v, want adapter.ErrInvalidPacket", name, err)
		}
	}
	c.emit(0, adapter.Options{}, "valid")
	c.expect(map[string][]*Socket{"valid": l.pick(0, 1, 2, 3)})
	for _, so := range c.sockets {
		if n := len(events(so)); n != 1 {
			t.Errorf("socket %s: %d events, want 1", so.ID(), n)
		}
	}
}

func sameRooms(got, want []string) bool {
	got, want = slices.Clone(got), slices.Clone(want)
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(got, want)
}

func testMembership(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	last := len(c.nodes) - 1
	a := c.nodes[last].a
	m := c.connect(last, "member")
	peer := c.connect(0, "peer", "r2")
	check := func(step string, want ...string) {
		t.Helper()
		if got := a.Rooms("member"); !sameRooms(got, want) {
			t.Errorf("%s: Rooms = %q, want %q", step, got, want)
		}
	}
	check("connected", "member")
	a.Join("member", "r1", "r2", "r3")
	a.Join("member", "r1")
	check("joined", "member", "r1", "r2", "r3")
	a.Leave("member", "r1", "unknown")
	check("left r1", "member", "r2", "r3")
	if got := a.Rooms("nobody"); len(got) != 0 {
		t.Errorf("Rooms of an unknown socket = %q", got)
	}
	c.emit(0, adapter.Options{Rooms: []string{"r1"}}, "to-r1")
	c.emit(0, adapter.Options{Rooms: []string{"r2"}}, "to-r2")
	c.emit(0, adapter.Options{Rooms: []string{"r3"}, Except: []string{"r2"}}, "to-r3-not-r2")
	c.expect(map[string][]*Socket{"to-r1": nil, "to-r2": {m, peer}, "to-r3-not-r2": nil})

	a.LeaveAll("member")
	check("left all")
	c.emit(0, adapter.Options{}, "to-all")
	c.emit(0, adapter.Options{Rooms: []string{"member", "r2"}}, "to-member")
	c.expect(map[string][]*Socket{"to-all": {peer}, "to-member": {peer}})
}

// testAddDelSockets issues each socket operation and the broadcasts that check
// it from one node, and fences before the next node's operations: only the order
// of one node's operations is guaranteed everywhere.
func testAddDelSockets(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	last := len(c.nodes) - 1
	if err := c.nodes[0].a.AddSockets(c.ctx, adapter.Options{Rooms: []string{"a"}, Except: []string{"b"}}, []string{"x", "y"}); err != nil {
		t.Fatalf("AddSockets: %v", err)
	}
	c.emit(0, adapter.Options{Rooms: []string{"x"}}, "to-x")
	c.emit(0, adapter.Options{Rooms: []string{"y"}}, "to-y")
	c.expect(map[string][]*Socket{"to-x": l.pick(0), "to-y": l.pick(0)})
	for i, n := range c.nodes {
		if got := n.a.Rooms(l[i][0].ID()); !sameRooms(got, []string{l[i][0].ID(), "a", "x", "y"}) {
			t.Errorf("node %d: rooms of %s = %q after AddSockets", i, l[i][0].ID(), got)
		}
	}

	if err := c.nodes[last].a.AddSockets(c.ctx, adapter.Options{Rooms: []string{l[0][3].ID()}}, []string{"x"}); err != nil {
		t.Fatalf("AddSockets to a socket id: %v", err)
	}
	c.emit(last, adapter.Options{Rooms: []string{"x"}}, "to-x-again")
	c.expect(map[string][]*Socket{"to-x-again": append(l.pick(0), l[0][3])})

	if err := c.nodes[last].a.DelSockets(c.ctx, adapter.Options{Except: []string{l[0][3].ID()}}, []string{"x", "a"}); err != nil {
		t.Fatalf("DelSockets: %v", err)
	}
	c.emit(last, adapter.Options{Rooms: []string{"x"}}, "to-x-after")
	c.emit(last, adapter.Options{Rooms: []string{"a"}}, "to-a-after")
	c.emit(last, adapter.Options{Rooms: []string{"y"}}, "to-y-after")
	c.expect(map[string][]*Socket{"to-x-after": {l[0][3]}, "to-a-after": nil, "to-y-after": l.pick(0)})
	for i, n := range c.nodes {
		if got := n.a.Rooms(l[i][2].ID()); !sameRooms(got, []string{l[i][2].ID(), "b"}) {
			t.Errorf("node %d: rooms of %s = %q after DelSockets", i, l[i][2].ID(), got)
		}
	}
}

// waitDisconnects waits until s has been disconnected len(want) times with the
// flags in want.
func (c *cluster) waitDisconnects(s *Socket, want ...bool) {
	c.t.Helper()
	err := s.WaitState(c.ctx, func(s *Socket) bool { return len(s.Disconnects()) >= len(want) })
	if got := s.Disconnects(); err != nil || !slices.Equal(got, want) {
		c.t.Errorf("socket %s: disconnects %v, want %v (%v)", s.ID(), got, want, err)
	}
}

func testDisconnectSockets(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	last := len(c.nodes) - 1
	if err := c.nodes[0].a.DisconnectSockets(c.ctx, adapter.Options{Rooms: []string{"a"}}, true); err != nil {
		t.Fatalf("DisconnectSockets: %v", err)
	}
	for _, so := range l.pick(0, 2) {
		c.waitDisconnects(so, true)
	}
	if err := c.nodes[last].a.DisconnectSockets(c.ctx, adapter.Options{Rooms: []string{"b"}}, false); err != nil {
		t.Fatalf("DisconnectSockets: %v", err)
	}
	for _, so := range l.pick(1) {
		c.waitDisconnects(so, false)
	}
	c.emit(0, adapter.Options{}, "after")
	c.expect(map[string][]*Socket{"after": l.pick(3)})
	for _, so := range l.pick(3) {
		if got := so.Disconnects(); len(got) != 0 {
			t.Errorf("socket %s: disconnected %v, want never", so.ID(), got)
		}
	}
	for i, n := range c.nodes {
		infos, err := n.a.FetchSockets(c.ctx, adapter.Options{})
		if err != nil {
			t.Fatalf("node %d: FetchSockets: %v", i, err)
		}
		if got, want := infoIDs(infos), socketIDs(l.pick(3)); !slices.Equal(got, want) {
			t.Errorf("node %d: FetchSockets after disconnects = %q, want %q", i, got, want)
		}
	}
}

func infoIDs(infos []adapter.SocketInfo) []string {
	ids := make([]string, 0, len(infos))
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	return ids
}

func socketIDs(ss []*Socket) []string {
	ids := make([]string, 0, len(ss))
	for _, s := range ss {
		ids = append(ids, s.ID())
	}
	slices.Sort(ids)
	return ids
}

func testFetchSockets(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	c.nodes[0].a.Join(l[0][3].ID(), "solo")
	expected := func(ss []*Socket) []adapter.SocketInfo {
		var out []adapter.SocketInfo
		for _, so := range ss {
			in := so.Info()
			in.Rooms = c.nodes[c.index(so)].a.Rooms(so.ID())
			out = append(out, in)
		}
		return out
	}
	opt := cmp.Options{
		cmpopts.SortSlices(func(a, b string) bool { return a < b }),
		cmpopts.SortSlices(func(a, b adapter.SocketInfo) bool { return a.ID < b.ID }),
		cmpopts.IgnoreFields(adapter.SocketInfo{}, "Node"),
		cmpopts.EquateEmpty(),
		cmp.Comparer(func(a, b json.RawMessage) bool { return jsonEqual(a, b) }),
	}
	cases := []struct {
		opts adapter.Options
		want []*Socket
	}{
		{adapter.Options{}, l.pick(0, 1, 2, 3)},
		{adapter.Options{Rooms: []string{"b"}, Except: []string{"a"}}, l.pick(1)},
		{adapter.Options{Rooms: []string{"solo", l[len(l)-1][0].ID()}}, []*Socket{l[0][3], l[len(l)-1][0]}},
	}
	for i, n := range c.nodes {
		for _, tc := range cases {
			got, err := n.a.FetchSockets(c.ctx, tc.opts)
			if err != nil {
				t.Fatalf("node %d: FetchSockets(%+v): %v", i, tc.opts, err)
			}
			if diff := cmp.Diff(expected(tc.want), got, opt); diff != "" {
				t.Errorf("node %d: FetchSockets(%+v) (-want +got):\n%s", i, tc.opts, diff)
			}
		}
		got, err := n.a.FetchSockets(c.ctx, adapter.Options{Local: true})
		if err != nil {
			t.Fatalf("node %d: FetchSockets(Local): %v", i, err)
		}
		if diff := cmp.Diff(expected(l[i][:]), got, opt); diff != "" {
			t.Errorf("node %d: FetchSockets(Local) (-want +got):\n%s", i, diff)
		}
	}
}

// jsonEqual compares JSON documents by value, so that an adapter may carry them
// re-encoded.
func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return cmp.Equal(x, y)
}

// checkReplies checks that replies holds one reply per socket of from, each with
// the socket's id as its only argument.
func checkReplies(t *testing.T, replies []adapter.Reply, from []*Socket) {
	t.Helper()
	var got []string
	for _, r := range replies {
		got = append(got, r.From)
		if len(r.Args) != 1 || !bytes.Equal(r.Args[0], quote(r.From)) {
			t.Errorf("reply from %s: args %s, want [%s]", r.From, r.Args, quote(r.From))
		}
	}
	slices.Sort(got)
	if want := socketIDs(from); !slices.Equal(got, want) {
		t.Errorf("replies from %q, want one from each of %q", got, want)
	}
}

func testBroadcastWithAck(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	want := make(map[string][]*Socket)
	for i, n := range c.nodes {
		event := "ask-" + strconv.Itoa(i)
		replies, err := n.a.BroadcastWithAck(c.ctx, packet(t, event, i), adapter.Options{})
		if err != nil {
			t.Fatalf("node %d: BroadcastWithAck: %v", i, err)
		}
		checkReplies(t, replies, l.pick(0, 1, 2, 3))
		want[event] = l.pick(0, 1, 2, 3)
	}
	replies, err := c.nodes[0].a.BroadcastWithAck(c.ctx, packet(t, "ask-b"), adapter.Options{Rooms: []string{"b"}, Except: []string{"a"}})
	if err != nil {
		t.Fatalf("BroadcastWithAck to b except a: %v", err)
	}
	checkReplies(t, replies, l.pick(1))
	want["ask-b"] = l.pick(1)
	// An emit with an ack to one socket, on another node when there is one.
	one := l[len(l)-1][3]
	replies, err = c.nodes[0].a.BroadcastWithAck(c.ctx, packet(t, "ask-one", []byte{7}), adapter.Options{Rooms: []string{one.ID()}})
	if err != nil {
		t.Fatalf("BroadcastWithAck to %s: %v", one.ID(), err)
	}
	checkReplies(t, replies, []*Socket{one})
	want["ask-one"] = []*Socket{one}
	c.expect(want)
	for _, so := range c.sockets {
		var ids []uint64
		for _, m := range events(so) {
			if !m.Packet.HasID {
				t.Errorf("socket %s: %q written without an ack id", so.ID(), m.Event)
			}
			ids = append(ids, m.Packet.ID)
		}
		sorted := slices.Clone(ids)
		slices.Sort(sorted)
		if len(ids) != len(slices.Compact(sorted)) {
			t.Errorf("socket %s: ack ids %v repeat", so.ID(), ids)
		}
		if n := so.PendingAcks(); n != 0 {
			t.Errorf("socket %s: %d acks still registered", so.ID(), n)
		}
	}
}

func testBroadcastWithAckMissing(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	last := len(c.nodes) - 1
	silent := l[last][2]
	silent.SetAck(Silent)
	ctx, cancel := context.WithTimeout(c.ctx, s.AckTimeout)
	defer cancel()
	replies, err := c.nodes[0].a.BroadcastWithAck(ctx, packet(t, "ask"), adapter.Options{Rooms: []string{"a", "b"}})
	answered := l.pick(0, 1)
	for i := range c.nodes {
		if i != last {
			answered = append(answered, l[i][2])
		}
	}
	checkReplies(t, replies, answered)
	var missing *adapter.MissingRepliesError
	if !errors.As(err, &missing) {
		t.Fatalf("BroadcastWithAck with a silent socket: error %v, want a *MissingRepliesError", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if missing.Expected != len(answered)+1 || missing.Received != len(answered) {
		t.Errorf("MissingRepliesError: %d of %d, want %d of %d", missing.Received, missing.Expected, len(answered), len(answered)+1)
	}
	for _, id := range missing.Missing {
		if slices.Contains(socketIDs(answered), id) {
			t.Errorf("MissingRepliesError names %s, which replied", id)
		}
	}
	if len(c.nodes) == 1 && !slices.Equal(missing.Missing, []string{silent.ID()}) {
		t.Errorf("MissingRepliesError.Missing = %q, want [%s]", missing.Missing, silent.ID())
	}
	// The silent socket's registration is forgotten, here or on its node.
	if err := silent.WaitState(c.ctx, func(s *Socket) bool { return s.PendingAcks() == 0 }); err != nil {
		t.Errorf("the silent socket still has %d acks registered: %v", silent.PendingAcks(), err)
	}
}

func testBroadcastWithAckNone(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	c.standard()
	for i, n := range c.nodes {
		replies, err := n.a.BroadcastWithAck(c.ctx, packet(t, "ask"), adapter.Options{Rooms: []string{"nobody"}})
		if err != nil || len(replies) != 0 {
			t.Errorf("node %d: BroadcastWithAck to nobody = %v, %v; want no replies and nil", i, replies, err)
		}
	}
}

func replyNode(i int) ServerEmitFunc {
	return func(ServerEmit) ([]json.RawMessage, bool) {
		return []json.RawMessage{quote("node-" + strconv.Itoa(i))}, true
	}
}

func testServerSideEmit(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	last := len(c.nodes) - 1
	for i, n := range c.nodes {
		n.ns.OnServerSideEmit(replyNode(i))
	}
	args := []json.RawMessage{json.RawMessage(`1`), json.RawMessage(`{"b":[1,2],"a":"x"}`)}
	replies, err := c.nodes[0].a.ServerSideEmit(c.ctx, "hello", args, false)
	if err != nil || len(replies) != 0 {
		t.Fatalf("ServerSideEmit without replies = %v, %v; want none and nil", replies, err)
	}
	for _, n := range c.nodes[1:] {
		if _, err := n.ns.WaitServerEmits(c.ctx, 1); err != nil {
			t.Fatalf("node %d: %v", n.i, err)
		}
	}
	replies, err = c.nodes[last].a.ServerSideEmit(c.ctx, "question", nil, true)
	if err != nil {
		t.Fatalf("ServerSideEmit with replies: %v", err)
	}
	var got, want []string
	for _, r := range replies {
		var from string
		if len(r.Args) != 1 || json.Unmarshal(r.Args[0], &from) != nil {
			t.Errorf("reply %+v: want one string argument", r)
		}
		got = append(got, from)
	}
	for i := range c.nodes {
		if i != last {
			want = append(want, "node-"+strconv.Itoa(i))
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("ServerSideEmit replies from %q, want %q", got, want)
	}

	hello := ServerEmit{Event: "hello", Args: args}
	question := ServerEmit{Event: "question", WantReply: true}
	for i, n := range c.nodes {
		var want []ServerEmit
		if i != 0 {
			want = append(want, hello)
		}
		if i != last {
			want = append(want, question)
		}
		opt := cmp.Options{cmpopts.EquateEmpty(), cmp.Comparer(func(a, b json.RawMessage) bool { return jsonEqual(a, b) })}
		if diff := cmp.Diff(want, n.ns.ServerEmits(), opt); diff != "" {
			t.Errorf("node %d: server-side emits (-want +got):\n%s", i, diff)
		}
	}
	if _, err := c.nodes[0].a.ServerSideEmit(c.ctx, "", nil, false); !errors.Is(err, adapter.ErrInvalidEvent) {
		t.Errorf("ServerSideEmit with an empty event name: %v, want adapter.ErrInvalidEvent", err)
	}
}

func testServerSideEmitMissing(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	for i, n := range c.nodes {
		n.ns.OnServerSideEmit(replyNode(i))
	}
	c.nodes[1].ns.OnServerSideEmit(func(ServerEmit) ([]json.RawMessage, bool) { return nil, false })
	ctx, cancel := context.WithTimeout(c.ctx, s.AckTimeout)
	defer cancel()
	replies, err := c.nodes[0].a.ServerSideEmit(ctx, "question", nil, true)
	var missing *adapter.MissingRepliesError
	if !errors.As(err, &missing) {
		t.Fatalf("ServerSideEmit with a silent node: error %v, want a *MissingRepliesError", err)
	}
	if len(replies) != len(c.nodes)-2 || missing.Received != len(c.nodes)-2 || missing.Expected != len(c.nodes)-1 {
		t.Errorf("ServerSideEmit with a silent node: %d replies, %d of %d in the error; want %d of %d",
			len(replies), missing.Received, missing.Expected, len(c.nodes)-2, len(c.nodes)-1)
	}
}

func testClose(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	l := c.standard()
	a := c.nodes[0].a
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := a.Close(); err != nil && !errors.Is(err, adapter.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	p := packet(t, "late")
	opts := adapter.Options{}
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, adapter.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
	}
	check("Broadcast", a.Broadcast(c.ctx, p, opts))
	_, err := a.BroadcastWithAck(c.ctx, p, opts)
	check("BroadcastWithAck", err)
	check("AddSockets", a.AddSockets(c.ctx, opts, []string{"x"}))
	check("DelSockets", a.DelSockets(c.ctx, opts, []string{"a"}))
	check("DisconnectSockets", a.DisconnectSockets(c.ctx, opts, false))
	_, err = a.FetchSockets(c.ctx, opts)
	check("FetchSockets", err)
	_, err = a.ServerSideEmit(c.ctx, "late", nil, true)
	check("ServerSideEmit", err)
	a.Join("after-close", "x")
	a.Leave(l[0][0].ID(), "a")
	a.LeaveAll(l[0][1].ID())
	_ = a.Rooms(l[0][2].ID()) // may answer or not; must not panic

	for _, so := range c.sockets {
		if n := len(so.Messages()); n != 0 {
			t.Errorf("socket %s: %d packets after its adapter closed", so.ID(), n)
		}
		if d := so.Disconnects(); len(d) != 0 {
			t.Errorf("socket %s: disconnected %v by a closed adapter", so.ID(), d)
		}
	}
	if len(c.nodes) < 2 {
		return
	}
	// The other nodes go on without the closed one.
	rest := &cluster{t: t, s: s, ctx: c.ctx, nodes: c.nodes[1:], owner: c.owner, fences: 100}
	for _, so := range c.sockets {
		if c.owner[so] != 0 {
			rest.sockets = append(rest.sockets, so)
		}
	}
	others := func(ss []*Socket) []*Socket {
		return slices.DeleteFunc(ss, func(x *Socket) bool { return c.owner[x] == 0 })
	}
	rest.emit(0, adapter.Options{Rooms: []string{"a"}}, "without-node-0")
	rest.expect(map[string][]*Socket{"without-node-0": others(l.pick(0, 2))})

	// Requests do not wait for the node that left.
	a = rest.nodes[0].a
	infos, err := a.FetchSockets(c.ctx, adapter.Options{})
	if err != nil {
		t.Fatalf("FetchSockets after a node left: %v", err)
	}
	if got, want := infoIDs(infos), socketIDs(others(l.pick(0, 1, 2, 3))); !slices.Equal(got, want) {
		t.Errorf("FetchSockets after a node left = %q, want %q", got, want)
	}
	replies, err := a.BroadcastWithAck(c.ctx, packet(t, "ask"), adapter.Options{})
	if err != nil {
		t.Fatalf("BroadcastWithAck after a node left: %v", err)
	}
	checkReplies(t, replies, others(l.pick(0, 1, 2, 3)))
	for i, n := range rest.nodes {
		n.ns.OnServerSideEmit(replyNode(i))
	}
	replies, err = a.ServerSideEmit(c.ctx, "question", nil, true)
	if err != nil || len(replies) != len(rest.nodes)-1 {
		t.Errorf("ServerSideEmit after a node left = %d replies, %v; want %d, nil", len(replies), err, len(rest.nodes)-1)
	}
}
