package adapter_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/parser"
)

func TestMemoryConformance(t *testing.T) {
	adaptertest.Run(t, adaptertest.Setup{
		Name:  "memory",
		Nodes: 1,
		New: func(t *testing.T, nodes int) []adapter.Factory {
			if nodes != 1 {
				t.Fatalf("memory adapter asked for %d nodes", nodes)
			}
			return []adapter.Factory{adapter.NewMemory}
		},
		AckTimeout: adaptertest.DefaultAckTimeout,
	})
}

// newMemory returns a memory adapter bound to a fresh namespace double.
func newMemory(t *testing.T) (*adapter.Memory, *adaptertest.Namespace) {
	t.Helper()
	ns := adaptertest.NewNamespace("/")
	m, err := adapter.NewLocal(ns)
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	ns.Bind(m)
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		ns.Wait()
	})
	return m, ns
}

func event(t *testing.T, name string, args ...any) *parser.Packet {
	t.Helper()
	p, err := parser.EventPacket("/", name, args...)
	if err != nil {
		t.Fatalf("EventPacket: %v", err)
	}
	return p
}

func TestNewMemoryNilNamespace(t *testing.T) {
	if a, err := adapter.NewMemory(nil); err == nil || a != nil {
		t.Fatalf("NewMemory(nil) = %v, %v; want an error", a, err)
	}
}

func TestSocketIDsSelection(t *testing.T) {
	m, _ := newMemory(t)
	m.Join("s1", "a")
	m.Join("s2", "b")
	m.Join("s3", "a", "b", "c")
	m.Join("s4")
	cases := []struct {
		opts adapter.Options
		want []string
	}{
		{adapter.Options{}, []string{"s1", "s2", "s3", "s4"}},
		{adapter.Options{Rooms: []string{"a"}}, []string{"s1", "s3"}},
		{adapter.Options{Rooms: []string{"a", "b", "c"}}, []string{"s1", "s2", "s3"}},
		{adapter.Options{Rooms: []string{"a", "s4"}}, []string{"s1", "s3", "s4"}},
		{adapter.Options{Rooms: []string{"a", "a"}}, []string{"s1", "s3"}},
		{adapter.Options{Except: []string{"c"}}, []string{"s1", "s2", "s4"}},
		{adapter.Options{Rooms: []string{"b"}, Except: []string{"a", "s2"}}, nil},
		{adapter.Options{Except: []string{"s1", "s4"}}, []string{"s2", "s3"}},
		{adapter.Options{Rooms: []string{"missing"}}, nil},
		{adapter.Options{Rooms: []string{"a"}, Local: true}, []string{"s1", "s3"}},
	}
	for _, tc := range cases {
		got := m.SocketIDs(tc.opts)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("SocketIDs(%+v) = %q, want %q", tc.opts, got, tc.want)
		}
	}
}

func TestMembershipOwnRoom(t *testing.T) {
	m, _ := newMemory(t)
	m.Join("s1", "a")
	m.Leave("s1", "s1")
	if got := m.Rooms("s1"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("Rooms after leaving the own room = %q", got)
	}
	if got := m.SocketIDs(adapter.Options{}); !slices.Equal(got, []string{"s1"}) {
		t.Errorf("a socket that left its own room is still known: SocketIDs = %q", got)
	}
	if got := m.SocketIDs(adapter.Options{Rooms: []string{"s1"}}); len(got) != 0 {
		t.Errorf("room s1 = %q after s1 left it", got)
	}
	m.LeaveAll("s1")
	m.LeaveAll("s1")
	m.Leave("s1", "a")
	if got := m.SocketIDs(adapter.Options{}); len(got) != 0 {
		t.Errorf("SocketIDs after LeaveAll = %q", got)
	}
}

// roomLog is a namespace double that records the room changes it observes.
type roomLog struct {
	*adaptertest.Namespace
	changes []adapter.RoomChange
}

func (n *roomLog) ObservesRooms() bool              { return true }
func (n *roomLog) RoomChanged(c adapter.RoomChange) { n.changes = append(n.changes, c) }

// A socket's own room is kept implicitly; it must behave as any other room,
// also when other sockets join a room named by a socket's id.
func TestMembershipRoomNamedByAnotherSocket(t *testing.T) {
	ns := &roomLog{Namespace: adaptertest.NewNamespace("/")}
	m, err := adapter.NewLocal(ns)
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	type change = adapter.RoomChange
	expect := func(want ...change) {
		t.Helper()
		if !slices.Equal(ns.changes, want) {
			t.Errorf("room changes = %+v, want %+v", ns.changes, want)
		}
		ns.changes = nil
	}
	selected := func(rooms ...string) []string {
		got := m.SocketIDs(adapter.Options{Rooms: rooms})
		slices.Sort(got)
		return got
	}

	m.Join("s2", "s1") // s2 joins the room named by s1 before s1 connects
	expect(change{adapter.RoomCreated, "s2", ""}, change{adapter.RoomJoined, "s2", "s2"},
		change{adapter.RoomCreated, "s1", ""}, change{adapter.RoomJoined, "s1", "s2"})
	m.Join("s1")
	expect(change{adapter.RoomJoined, "s1", "s1"})
	if got := selected("s1"); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Errorf("room s1 = %q", got)
	}
	if got := selected("s1", "s2"); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Errorf("rooms s1, s2 = %q", got)
	}
	if got := m.SocketIDs(adapter.Options{Rooms: []string{"s1"}, Except: []string{"s2"}}); !slices.Equal(got, []string{"s1"}) {
		t.Errorf("room s1 except s2 = %q", got)
	}
	if got := m.Rooms("s2"); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Errorf("Rooms(s2) = %q", got)
	}
	m.Leave("s1", "s1")
	expect(change{adapter.RoomLeft, "s1", "s1"})
	if got := selected("s1"); !slices.Equal(got, []string{"s2"}) {
		t.Errorf("room s1 after s1 left it = %q", got)
	}
	m.Join("s1", "s1")
	expect(change{adapter.RoomJoined, "s1", "s1"})
	m.LeaveAll("s2")
	expect(change{adapter.RoomLeft, "s1", "s2"}, change{adapter.RoomLeft, "s2", "s2"}, change{adapter.RoomDeleted, "s2", ""})
	if err := m.AddSocketsLocal(adapter.Options{Rooms: []string{"s1"}}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	expect(change{adapter.RoomCreated, "a", ""}, change{adapter.RoomJoined, "a", "s1"})
	m.LeaveAll("s1")
	expect(change{adapter.RoomLeft, "a", "s1"}, change{adapter.RoomDeleted, "a", ""},
		change{adapter.RoomLeft, "s1", "s1"}, change{adapter.RoomDeleted, "s1", ""})
	if got := m.SocketIDs(adapter.Options{}); len(got) != 0 {
		t.Errorf("SocketIDs after LeaveAll = %q", got)
	}
}

func TestBroadcastEncodesOnce(t *testing.T) {
	m, ns := newMemory(t)
	var sockets []*adaptertest.Socket
	for i := range 5 {
		sockets = append(sockets, ns.Connect("s"+strconv.Itoa(i), adaptertest.SocketOptions{}))
	}
	n, err := m.BroadcastLocal(event(t, "e", 1), adapter.Options{})
	if err != nil || n != 5 {
		t.Fatalf("BroadcastLocal = %d, %v; want 5, nil", n, err)
	}
	first := sockets[0].Messages()[0].Encoded
	for _, s := range sockets {
		ms := s.Messages()
		if len(ms) != 1 || ms[0].Encoded != first {
			t.Errorf("socket %s: %d writes, shared encoding %v", s.ID(), len(ms), len(ms) == 1 && ms[0].Encoded == first)
		}
	}
	if string(first.Text) != `2["e",1]` {
		t.Errorf("encoded %q", first.Text)
	}
}

func TestBroadcastSkipsVanishedSocket(t *testing.T) {
	m, ns := newMemory(t)
	live := ns.Connect("live", adaptertest.SocketOptions{})
	m.Join("ghost") // known to the adapter, gone from the namespace
	n, err := m.BroadcastLocal(event(t, "e"), adapter.Options{})
	if err != nil || n != 1 || len(live.Messages()) != 1 {
		t.Fatalf("BroadcastLocal = %d, %v; live got %d", n, err, len(live.Messages()))
	}
}

func TestBroadcastPacketChecks(t *testing.T) {
	m, ns := newMemory(t)
	s := ns.Connect("s", adaptertest.SocketOptions{Ack: adaptertest.ReplyID})
	ctx := t.Context()

	noNsp := &parser.Packet{Type: parser.Event, Data: json.RawMessage(`["x"]`)}
	if err := m.Broadcast(ctx, noNsp, adapter.Options{}); err != nil {
		t.Fatalf("Broadcast without namespace: %v", err)
	}
	if got := s.Messages(); len(got) != 1 || got[0].Packet.Namespace != "/" || got[0].Event != "x" {
		t.Fatalf("got %+v", got)
	}
	if noNsp.Namespace != "" {
		t.Errorf("Broadcast modified the caller's packet")
	}

	bad := map[string]*parser.Packet{
		"nil":            nil,
		"ack":            {Type: parser.Ack, Namespace: "/", Data: json.RawMessage(`[]`)},
		"connect":        {Type: parser.Connect, Namespace: "/"},
		"other nsp":      {Type: parser.Event, Namespace: "/other", Data: json.RawMessage(`["x"]`)},
		"with an ack id": {Type: parser.Event, Namespace: "/", ID: 3, HasID: true, Data: json.RawMessage(`["x"]`)},
	}
	for name, p := range bad {
		if err := m.Broadcast(ctx, p, adapter.Options{}); !errors.Is(err, adapter.ErrInvalidPacket) {
			t.Errorf("Broadcast %s: %v, want ErrInvalidPacket", name, err)
		}
	}
	if len(s.Messages()) != 1 {
		t.Errorf("invalid packets were written: %d messages", len(s.Messages()))
	}

	p := event(t, "ask")
	replies, err := m.BroadcastWithAck(ctx, p, adapter.Options{})
	if err != nil || len(replies) != 1 || replies[0].From != "s" {
		t.Fatalf("BroadcastWithAck = %+v, %v", replies, err)
	}
	if p.HasID {
		t.Errorf("BroadcastWithAck set the ack id on the caller's packet")
	}
	if _, err := m.ServerSideEmit(ctx, "", nil, false); !errors.Is(err, adapter.ErrInvalidEvent) {
		t.Errorf("ServerSideEmit with an empty name: %v", err)
	}
}

func TestBroadcastWithAckRecipientsCallbacks(t *testing.T) {
	m, ns := newMemory(t)
	for i := range 10 {
		ns.Connect("s"+strconv.Itoa(i), adaptertest.SocketOptions{Ack: adaptertest.ReplyID, Rooms: []string{"r"}})
	}
	ns.Connect("quiet", adaptertest.SocketOptions{Rooms: []string{"r"}})
	// The quiet socket never replies: the deadline ends the broadcast, and it
	// must leave every other reply time to arrive on a loaded machine.
	ctx, cancel := context.WithTimeout(t.Context(), adaptertest.DefaultAckTimeout)
	defer cancel()
	counts := []int{}
	var from []string
	err := m.BroadcastWithAckRecipients(ctx, event(t, "ask"), adapter.Options{Rooms: []string{"r"}},
		func(ids []string) { counts = append(counts, len(ids)) },
		func(r adapter.Reply) { from = append(from, r.From) })
	var missing *adapter.MissingRepliesError
	if !errors.As(err, &missing) || !slices.Equal(missing.Missing, []string{"quiet"}) ||
		missing.Expected != 11 || missing.Received != 10 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("BroadcastWithAckRecipients: %v", err)
	}
	if !slices.Equal(counts, []int{11}) || len(from) != 10 {
		t.Errorf("onSent calls with %v recipients, %d replies", counts, len(from))
	}
	if n := ns.Get("quiet").PendingAcks(); n != 0 {
		t.Errorf("quiet socket still has %d acks registered", n)
	}
	if err := m.BroadcastWithAckRecipients(t.Context(), event(t, "ask"), adapter.Options{Rooms: []string{"none"}}, nil, nil); err != nil {
		t.Errorf("no recipients: %v", err)
	}
}

func TestBroadcastWithAckEndsOnClose(t *testing.T) {
	m, ns := newMemory(t)
	s := ns.Connect("quiet", adaptertest.SocketOptions{})
	errc := make(chan error, 1)
	go func() {
		_, err := m.BroadcastWithAck(t.Context(), event(t, "ask"), adapter.Options{})
		errc <- err
	}()
	if err := s.WaitState(t.Context(), func(s *adaptertest.Socket) bool { return s.PendingAcks() == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, adapter.ErrClosed) {
		t.Errorf("BroadcastWithAck ended by Close: %v", err)
	}
	if n := s.PendingAcks(); n != 0 {
		t.Errorf("%d acks still registered", n)
	}
	if n, err := m.BroadcastLocal(event(t, "x"), adapter.Options{}); n != 0 || !errors.Is(err, adapter.ErrClosed) {
		t.Errorf("BroadcastLocal after Close = %d, %v", n, err)
	}
}

// TestConcurrentUse runs membership changes, broadcasts and requests together;
// it finds data races under -race.
func TestConcurrentUse(t *testing.T) {
	m, ns := newMemory(t)
	for i := range 50 {
		ns.Connect("s"+strconv.Itoa(i), adaptertest.SocketOptions{Ack: adaptertest.ReplyID, Rooms: []string{"r" + strconv.Itoa(i%5)}})
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Go(func() {
		for i := range 200 {
			id := "s" + strconv.Itoa(i%50)
			m.Join(id, "x", "r"+strconv.Itoa(i%7))
			m.Leave(id, "x")
			_ = m.Rooms(id)
		}
	})
	wg.Go(func() {
		for range 100 {
			if err := m.Broadcast(ctx, event(t, "e"), adapter.Options{Rooms: []string{"r1", "x"}, Except: []string{"r3"}}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() {
		for i := range 20 {
			if _, err := m.BroadcastWithAck(ctx, event(t, "ask"), adapter.Options{Rooms: []string{"r" + strconv.Itoa(i%5)}}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() {
		for range 50 {
			if err := m.AddSockets(ctx, adapter.Options{Rooms: []string{"r2"}}, []string{"y"}); err != nil {
				errs <- err
				return
			}
			if _, err := m.FetchSockets(ctx, adapter.Options{Rooms: []string{"y"}}); err != nil {
				errs <- err
				return
			}
			if err := m.DelSockets(ctx, adapter.Options{}, []string{"y"}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// benchNamespace and benchSocket are the cheapest possible doubles, so that the
// benchmark measures the adapter.
type benchNamespace struct{ sockets map[string]*benchSocket }

func (n *benchNamespace) Name() string { return "/" }
func (n *benchNamespace) Socket(id string) adapter.Socket {
	if s, ok := n.sockets[id]; ok {
		return s
	}
	return nil
}
func (n *benchNamespace) NextAckID() uint64 { return 1 }
func (n *benchNamespace) HandleServerSideEmit(string, []json.RawMessage, func([]json.RawMessage)) {
}

type benchSocket struct {
	id     string
	writes int
	last   *parser.Encoded
}

func (s *benchSocket) ID() string { return s.id }
func (s *benchSocket) Write(e *parser.Encoded, _ bool) {
	if e != s.last {
		s.writes++
		s.last = e
	}
}
func (s *benchSocket) ExpectAck(uint64, func([]json.RawMessage)) {}
func (s *benchSocket) ForgetAck(uint64)                          {}
func (s *benchSocket) Disconnect(bool)                           {}
func (s *benchSocket) Info() adapter.SocketInfo                  { return adapter.SocketInfo{ID: s.id} }

func benchmarkBroadcast(b *testing.B, sockets int, opts adapter.Options, inRoom func(i int) bool) {
	ns := &benchNamespace{sockets: make(map[string]*benchSocket, sockets)}
	m, err := adapter.NewLocal(ns)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for i := range sockets {
		id := "socket-" + strconv.Itoa(i)
		ns.sockets[id] = &benchSocket{id: id}
		if inRoom(i) {
			m.Join(id, "room")
		} else {
			m.Join(id)
		}
	}
	want := len(m.SocketIDs(opts))
	p, err := parser.EventPacket("/", "news", map[string]any{"title": "hello", "n": 42})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Broadcast(ctx, p, opts); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// Every recipient saw one new encoding per broadcast, and all share the last:
	// the packet was encoded once per broadcast.
	var last *parser.Encoded
	got := 0
	for _, s := range ns.sockets {
		if s.writes == 0 {
			continue
		}
		got++
		if s.writes != b.N || (last != nil && s.last != last) {
			b.Fatalf("socket %s: %d encodings for %d broadcasts (shared: %v)", s.id, s.writes, b.N, s.last == last)
		}
		last = s.last
	}
	if got != want {
		b.Fatalf("%d sockets received, want %d", got, want)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(want), "ns/recipient")
}

func BenchmarkBroadcast10000(b *testing.B) {
	benchmarkBroadcast(b, 10000, adapter.Options{}, func(int) bool { return false })
}

func BenchmarkBroadcast10000Room1000(b *testing.B) {
	benchmarkBroadcast(b, 10000, adapter.Options{Rooms: []string{"room"}}, func(i int) bool { return i%10 == 0 })
}

func BenchmarkBroadcast10000Except(b *testing.B) {
	benchmarkBroadcast(b, 10000, adapter.Options{Except: []string{"room"}}, func(i int) bool { return i%10 != 0 })
}

func TestBroadcastWithAckRecipients(t *testing.T) {
	m, ns := newMemory(t)
	ns.Connect("b", adaptertest.SocketOptions{Ack: adaptertest.ReplyID, Rooms: []string{"r"}})
	ns.Connect("a", adaptertest.SocketOptions{Ack: adaptertest.ReplyID, Rooms: []string{"r"}})
	ns.Connect("c", adaptertest.SocketOptions{Ack: adaptertest.ReplyID})
	var sent [][]string
	var from []string
	err := m.BroadcastWithAckRecipients(t.Context(), event(t, "ask"), adapter.Options{Rooms: []string{"r"}},
		func(ids []string) { sent = append(sent, slices.Clone(ids)) },
		func(r adapter.Reply) { from = append(from, r.From) })
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(from)
	if len(sent) != 1 || !slices.Equal(sent[0], []string{"a", "b"}) || !slices.Equal(from, []string{"a", "b"}) {
		t.Errorf("recipients %q, replies from %q", sent, from)
	}
	if err := m.BroadcastWithAckRecipients(t.Context(), nil, adapter.Options{}, func([]string) { t.Error("onSent called for an invalid packet") }, nil); !errors.Is(err, adapter.ErrInvalidPacket) {
		t.Errorf("nil packet: %v", err)
	}
}
