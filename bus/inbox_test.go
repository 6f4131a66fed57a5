package bus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// inboxSpy is a MemoryHub transport (an Inboxer) that counts, per partition,
// the probe frames it published (round-trip probes and round-0
// announcements apart) and the frames its subscription delivered.
type inboxSpy struct {
	*memoryTransport
	mu            sync.Mutex
	probes        map[int]int
	announcements map[int]int
	finals        map[int]int
	delivered     map[int]int
}

func newInboxSpy(hub *MemoryHub) *inboxSpy {
	return &inboxSpy{
		memoryTransport: hub.Transport().(*memoryTransport),
		probes:          make(map[int]int),
		announcements:   make(map[int]int),
		finals:          make(map[int]int),
		delivered:       make(map[int]int),
	}
}

func (s *inboxSpy) Publish(ctx context.Context, frames []Frame) error {
	if err := s.memoryTransport.Publish(ctx, frames); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range frames {
		e, err := decodeEnvelope(f.Data, nil)
		if err != nil || e.Kind != kindProbe || e.Partition != f.Partition {
			continue
		}
		switch e.Seq {
		case 0:
			s.announcements[f.Partition]++
		case finalRound:
			s.finals[f.Partition]++
		default:
			s.probes[f.Partition]++
		}
	}
	return nil
}

func (s *inboxSpy) Subscribe(ctx context.Context, nodeID string, deliver func(Frame)) error {
	return s.memoryTransport.Subscribe(ctx, nodeID, func(f Frame) {
		s.mu.Lock()
		s.delivered[f.Partition]++
		s.mu.Unlock()
		deliver(f)
	})
}

// counts returns copies of the spy's counters.
func (s *inboxSpy) counts() (probes, announcements, delivered map[int]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.probes), maps.Clone(s.announcements), maps.Clone(s.delivered)
}

// inboxIDs returns n node ids whose inboxes (shared, inboxes) are distinct.
func inboxIDs(t testing.TB, shared, inboxes, n int) []string {
	t.Helper()
	var ids []string
	used := make(map[int]bool)
	for i := 0; len(ids) < n && i < 10_000; i++ {
		id := fmt.Sprintf("n%d", i)
		if p := InboxOf(id, shared, inboxes); !used[p] {
			used[p] = true
			ids = append(ids, id)
		}
	}
	if len(ids) < n {
		t.Fatalf("found %d ids with distinct inboxes, want %d", len(ids), n)
	}
	return ids
}

// inboxNodes starts, on hub, a receiving bus per id over an inboxSpy, with
// cfg (NodeID set per bus), and lets two probe intervals pass, in a synctest
// bubble.
func inboxNodes(t *testing.T, hub *MemoryHub, cfg Config, ids ...string) ([]*Reliable, []*sink, []*inboxSpy) {
	t.Helper()
	var buses []*Reliable
	var sinks []*sink
	var spies []*inboxSpy
	for _, id := range ids {
		spy := newInboxSpy(hub)
		c := cfg
		c.NodeID = id
		b := newBusOn(t, spy, c)
		s := newSink()
		b.Receive(s.handle)
		buses, sinks, spies = append(buses, b), append(sinks, s), append(spies, spy)
	}
	time.Sleep(2 * time.Second)
	synctestWait()
	return buses, sinks, spies
}

// reads returns the partitions b reads.
func reads(b *Reliable) []int {
	var out []int
	for p := range b.shared {
		out = append(out, p)
	}
	return append(out, b.inbox)
}

// publishTo publishes payload(origin, from..to) to node's inbox.
func publishTo(t *testing.T, b *Reliable, node, origin string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := b.PublishTo(t.Context(), node, payload(origin, i)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPublishToReachesOnlyTarget: messages published with PublishTo reach
// their target only, in order, exactly once; no subscription delivers a frame
// of a partition its node does not read (a node never reads what it sends to
// others); Publish hashes keys over the shared partitions, whose messages
// reach every node as without inboxes.
func TestPublishToReachesOnlyTarget(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 2, 8
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 3)
		buses, sinks, spies := inboxNodes(t, hub, Config{}, ids...)
		a, b, c := buses[0], buses[1], buses[2]
		if !a.Routing() || a.Partitions() != shared+inboxes || a.InboxOf(ids[1]) != InboxOf(ids[1], shared, inboxes) {
			t.Fatalf("routing %v partitions %d inbox %d", a.Routing(), a.Partitions(), a.InboxOf(ids[1]))
		}
		keys := make(map[int]bool)
		for i := range 100 {
			p := a.PartitionOf(fmt.Sprint("k", i))
			if p < 0 || p >= shared {
				t.Fatalf("PartitionOf = %d, want a shared partition", p)
			}
			keys[p] = true
		}
		if len(keys) != shared {
			t.Fatalf("100 keys hash to %d partitions, want %d", len(keys), shared)
		}
		publishTo(t, a, ids[1], ids[0], 1, 100)
		publishTo(t, c, ids[0], ids[2], 1, 40)
		for i := 1; i <= 30; i++ {
			if err := b.Publish(t.Context(), fmt.Sprint("k", i), payload(ids[1], i)); err != nil {
				t.Fatal(err)
			}
		}
		sinks[1].wait(t, 100, time.Minute)
		sinks[0].wait(t, 70, time.Minute)
		sinks[2].wait(t, 30, time.Minute)
		time.Sleep(3 * time.Second)
		synctestWait()
		checkStreams(t, sinks[0].all(), map[string]int{ids[2]: 40, ids[1]: 30})
		checkStreams(t, sinks[1].all(), map[string]int{ids[0]: 100})
		checkStreams(t, sinks[2].all(), map[string]int{ids[1]: 30})
		for _, m := range sinks[1].all() {
			if m.Partition != b.InboxOf(ids[1]) {
				t.Fatalf("message on partition %d, want b's inbox %d", m.Partition, b.InboxOf(ids[1]))
			}
		}
		for i, bus := range buses {
			if s := bus.Stats(); s.Gaps != 0 || s.Duplicates != 0 || s.Published != []uint64{100, 30, 40}[i] {
				t.Fatalf("node %s stats %+v", ids[i], s)
			}
			_, _, delivered := spies[i].counts()
			for p, n := range delivered {
				if p >= 0 && !slices.Contains(reads(bus), p) {
					t.Fatalf("node %s (reads %v) was delivered %d frames of partition %d", ids[i], reads(bus), n, p)
				}
			}
			if delivered[bus.inbox] == 0 {
				t.Fatalf("node %s was delivered nothing of its inbox %d", ids[i], bus.inbox)
			}
		}
	})
}

// TestPublishToInboxMates: two node ids whose inbox is one partition both get
// what is published to either, once and in order; a node does not get its own
// messages, also those sent to its inbox-mate.
func TestPublishToInboxMates(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 1, 4
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		// x and y share an inbox, z has another.
		var x, y, z string
		for i := 0; z == "" || y == ""; i++ {
			id := fmt.Sprintf("n%d", i)
			switch p := InboxOf(id, shared, inboxes); {
			case x == "":
				x = id
			case p == InboxOf(x, shared, inboxes) && y == "":
				y = id
			case p != InboxOf(x, shared, inboxes) && z == "":
				z = id
			}
		}
		buses, sinks, _ := inboxNodes(t, hub, Config{}, x, y, z)
		publishTo(t, buses[2], x, z, 1, 50)
		publishTo(t, buses[0], y, x, 1, 20)
		sinks[0].wait(t, 50, time.Minute)
		sinks[1].wait(t, 70, time.Minute)
		time.Sleep(3 * time.Second)
		synctestWait()
		checkStreams(t, sinks[0].all(), map[string]int{z: 50})
		checkStreams(t, sinks[1].all(), map[string]int{z: 50, x: 20})
		if n := sinks[2].len(); n != 0 {
			t.Fatalf("z received %d messages, want 0", n)
		}
		for _, b := range buses {
			if s := b.Stats(); s.Gaps != 0 || s.Duplicates != 0 {
				t.Fatalf("node %s stats %+v", b.NodeID(), s)
			}
		}
	})
}

// TestInboxLostTailReported: the broker restarts without persistence and
// loses the last messages a node sent to another node's inbox, without
// retention to publish them again; the sender publishes nothing more there.
// Its announcement after the reconnect makes the target report the lost
// tail, exactly once; a later message is neither a duplicate nor another gap.
// A sender that receives announces in its probe rounds, one that only
// publishes in its announcements.
func TestInboxLostTailReported(t *testing.T) {
	for _, receives := range []bool{true, false} {
		t.Run(fmt.Sprint("receives=", receives), func(t *testing.T) { testInboxLostTail(t, receives) })
	}
}

func testInboxLostTail(t *testing.T, receives bool) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 2, 8
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 2)
		var gaps gapLog
		a := newBus(t, hub, Config{NodeID: ids[0], Retain: RetainConfig{Window: -1}})
		if receives {
			a.Receive(func(Message) {})
		}
		r := newBus(t, hub, Config{NodeID: ids[1], OnGap: gaps.add})
		sr := newSink()
		block, first := make(chan struct{}), make(chan struct{})
		r.Receive(func(m Message) {
			if string(m.Payload) == string(payload(ids[0], 1)) {
				close(first)
				<-block // r is behind while the broker loses the tail
			}
			sr.handle(m)
		})
		time.Sleep(2 * time.Second)
		synctestWait()
		publishTo(t, a, ids[1], ids[0], 1, 1)
		<-first
		publishTo(t, a, ids[1], ids[0], 2, 10)
		time.Sleep(3 * time.Second) // a announces its last seq there (10)
		synctestWait()
		if st := a.Status(); st.OutboxLen != 0 {
			t.Fatalf("a's outbox holds %d", st.OutboxLen)
		}
		hub.setDown(true)
		hub.lose() // 2..10 and a's announcement of them are gone
		time.Sleep(3 * time.Second)
		synctestWait()
		hub.setDown(false)
		close(block)
		time.Sleep(10 * time.Second)
		synctestWait()
		inbox := r.InboxOf(ids[1])
		if g := gaps.all(); len(g) != 1 || g[0] != (Gap{Origin: ids[0], Partition: inbox, After: 1, Next: 11, Missing: 9, Tail: true}) {
			t.Fatalf("OnGap got %+v", g)
		}
		publishTo(t, a, ids[1], ids[0], 11, 11)
		msgs := sr.wait(t, 2, time.Minute)
		if msgs[1].Seq != 11 || string(msgs[1].Payload) != string(payload(ids[0], 11)) {
			t.Fatalf("after the gap: %+v", msgs[1])
		}
		time.Sleep(3 * time.Second)
		synctestWait()
		if s := r.Stats(); s.Gaps != 1 || s.TailGaps != 1 || s.GapMessages != 9 || s.Duplicates != 0 || s.Received != 2 {
			t.Fatalf("receiver stats %+v", s)
		}
	})
}

// TestInboxReplayAfterOutage: a node sends to the inboxes of two others, one
// reading along and one behind, before, during and after an outage in which
// the broker loses everything (a restart without persistence). What the
// broker had acknowledged goes out again from the retained window, what was
// accepted meanwhile from the outbox: both targets apply every message once,
// in order, and report no gap.
func TestInboxReplayAfterOutage(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes, n = 2, 16, 30
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 3)
		a := newBus(t, hub, Config{NodeID: ids[0]})
		a.Receive(func(Message) {})
		current := newBus(t, hub, Config{NodeID: ids[1]})
		sc := newSink()
		current.Receive(sc.handle)
		behind := newBus(t, hub, Config{NodeID: ids[2]})
		sb := newSink()
		first, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		behind.Receive(func(m Message) {
			sb.handle(m)
			once.Do(func() {
				close(first)
				<-release
			})
		})
		time.Sleep(2 * time.Second)
		synctestWait()
		publishTo(t, a, ids[2], ids[0], 1, 1)
		<-first
		publishTo(t, a, ids[2], ids[0], 2, n)
		publishTo(t, a, ids[1], ids[0], 1, n)
		sc.wait(t, n, time.Minute)
		synctestWait()
		hub.setDown(true)
		hub.lose()
		publishTo(t, a, ids[1], ids[0], n+1, 2*n) // into the outbox
		publishTo(t, a, ids[2], ids[0], n+1, 2*n)
		time.Sleep(3 * time.Second)
		synctestWait()
		hub.setDown(false)
		close(release)
		time.Sleep(5 * time.Second)
		synctestWait()
		publishTo(t, a, ids[1], ids[0], 2*n+1, 3*n)
		publishTo(t, a, ids[2], ids[0], 2*n+1, 3*n)
		sc.wait(t, 3*n, time.Minute)
		sb.wait(t, 3*n, time.Minute)
		time.Sleep(5 * time.Second)
		synctestWait()
		checkStreams(t, sc.all(), map[string]int{ids[0]: 3 * n})
		checkStreams(t, sb.all(), map[string]int{ids[0]: 3 * n})
		for _, r := range []*Reliable{current, behind} {
			if s := r.Stats(); s.Gaps != 0 || s.Received != 3*n {
				t.Fatalf("%s: %+v", r.NodeID(), s)
			}
		}
		// Both inboxes lost their n acknowledged messages: all of them go out
		// again, once.
		if s := a.Stats(); s.Republished != 2*n || s.Republishes != 1 {
			t.Fatalf("sender %+v, want %d republished once", s, 2*n)
		}
	})
}

// TestInboxSenderStopsWritingNotGone: a node writes to another node's inbox
// and then never again, for many liveness windows. It announces its last seq
// there every round for liveFor (6 s: two liveness windows, more than the
// retain window), then every announceEvery rounds until inboxReannounceFor
// (6 min) after the write, then never, except once more after a broken
// connection; only on that inbox. The target never reports it gone: its
// every-round announcements promised no more than liveFor, and its
// round-trip probes go to its own inbox only, so the target does not hear it
// between announcements.
func TestInboxSenderStopsWritingNotGone(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 2, 8
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 2)
		buses, sinks, spies := inboxNodes(t, hub, Config{}, ids...)
		a, r := buses[0], buses[1]
		publishTo(t, a, ids[1], ids[0], 1, 5)
		sinks[1].wait(t, 5, time.Minute)
		inbox := r.InboxOf(ids[1])
		reannounce := a.inboxReannounceFor()
		time.Sleep(reannounce + 30*time.Second)
		synctestWait()
		_, ann, _ := spies[0].counts()
		// 6 or 7 rounds within liveFor, then one per 10 rounds (give or
		// take one at either end).
		periodic := int(reannounce / (announceEvery * time.Second))
		if n := ann[inbox]; len(ann) != 1 || n < 6+periodic-2 || n > 7+periodic+2 {
			t.Fatalf("announcements in %v after a write: %v, want about %d on partition %d", reannounce, ann, 6+periodic, inbox)
		}
		time.Sleep(10 * time.Minute)
		synctestWait()
		if _, now, _ := spies[0].counts(); !maps.Equal(now, ann) {
			t.Fatalf("announcements long after the write: %v, then %v", ann, now)
		}
		if s := r.Stats(); s.NodesGoneSilent+s.NodesGoneReplaced+s.NodesClosed != 0 || slices.Contains(r.Status().Nodes, ids[0]) {
			t.Fatalf("target stats %+v, nodes %v", s, r.Status().Nodes)
		}
		hub.setDown(true)
		time.Sleep(2 * time.Second)
		synctestWait()
		hub.setDown(false)
		time.Sleep(time.Minute)
		synctestWait()
		if _, now, _ := spies[0].counts(); now[inbox] != ann[inbox]+1 || len(now) != 1 {
			t.Fatalf("announcements after a reconnect: %v, want %d on partition %d", now, ann[inbox]+1, inbox)
		}
		if s := r.Stats(); s.NodesGoneSilent+s.NodesGoneReplaced+s.NodesClosed != 0 || s.Gaps != 0 || s.Received != 5 ||
			slices.Contains(r.Status().Nodes, ids[0]) {
			t.Fatalf("target stats %+v, nodes %v", s, r.Status().Nodes)
		}
	})
}

// TestProbesOnlyOnReadPartitions: with inboxes, a node's round-trip probes
// go only to its own inbox, which only it reads: a round costs one probe,
// not one per shared partition read by every node (O(nodes) in the cluster,
// not O(nodes² × shared partitions)). Nothing of any node goes to the
// shared partitions while nothing is written there. A node's announcements
// go only to the inboxes it wrote to: every round for liveFor (6 or 7), then
// every announceEvery rounds (2 or 3 in 30 s).
func TestProbesOnlyOnReadPartitions(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 2, 64
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 4)
		buses, _, spies := inboxNodes(t, hub, Config{}, ids...)
		for _, b := range buses[1:] {
			publishTo(t, buses[0], b.NodeID(), ids[0], 1, 3)
		}
		time.Sleep(30 * time.Second)
		synctestWait()
		for i, b := range buses {
			probes, ann, _ := spies[i].counts()
			if got := slices.Sorted(maps.Keys(probes)); !slices.Equal(got, []int{b.inbox}) {
				t.Fatalf("node %s probed partitions %v, want only its inbox %d", ids[i], got, b.inbox)
			}
			if rounds := probes[b.inbox]; rounds < 20 {
				t.Fatalf("node %s: %d probe rounds in 30 s", ids[i], rounds)
			}
			if i > 0 && len(ann) != 0 {
				t.Fatalf("node %s wrote to no inbox and announced %v", ids[i], ann)
			}
		}
		for p := range shared {
			if n := hub.kept(p); n != 0 {
				t.Fatalf("shared partition %d holds %d frames", p, n)
			}
		}
		_, ann, _ := spies[0].counts()
		for _, b := range buses[1:] {
			if ann[b.inbox] < 8 || ann[b.inbox] > 10 {
				t.Fatalf("announcements of the sender %v, want 8 to 10 on each of its targets' inboxes", ann)
			}
		}
		if len(ann) != 3 {
			t.Fatalf("announcements of the sender %v, want 3 partitions", ann)
		}
	})
}

// TestProbesWithoutInboxes: without inboxes, a node's round-trip probes go
// to every partition, which every node reads (the control of
// TestProbesOnlyOnReadPartitions).
func TestProbesWithoutInboxes(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 2})
		for i := range 4 {
			b := newBus(t, hub, Config{NodeID: fmt.Sprint("n", i)})
			b.Receive(func(Message) {})
		}
		time.Sleep(30 * time.Second)
		synctestWait()
		for p := range 2 {
			// 4 nodes, about 30 rounds each.
			if n := hub.kept(p); n < 4*25 {
				t.Fatalf("partition %d holds %d frames, want a probe of each node every round", p, n)
			}
		}
	})
}

// TestInboxFinalAnnouncement: at Close a node announces its last seq for good
// on the partitions it reads and on the inbox it wrote to, not on the others;
// the target reports it closed, not gone silent, and no gap.
func TestInboxFinalAnnouncement(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 2, 8
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 3)
		spy := newInboxSpy(hub)
		a, err := New(spy, &Config{NodeID: ids[0], Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		a.Receive(func(Message) {})
		buses, sinks, _ := inboxNodes(t, hub, Config{}, ids[1:]...)
		r := buses[0]
		publishTo(t, a, ids[1], ids[0], 1, 5)
		sinks[0].wait(t, 5, time.Minute)
		if err := a.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctestWait()
		spy.mu.Lock()
		finals := slices.Sorted(maps.Keys(spy.finals))
		spy.mu.Unlock()
		want := append(reads(a), r.inbox)
		slices.Sort(want)
		if !slices.Equal(finals, want) {
			t.Fatalf("final announcements on %v, want %v", finals, want)
		}
		for _, b := range buses {
			if s := b.Stats(); s.NodesClosed != 1 || s.NodesGoneSilent != 0 || s.Gaps != 0 {
				t.Fatalf("%s stats %+v", b.NodeID(), s)
			}
		}
	})
}

// TestPublishToWithoutInboxes: a bus whose transport has no inboxes refuses
// PublishTo and routes nothing.
func TestPublishToWithoutInboxes(t *testing.T) {
	hub := NewMemoryHub()
	b := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1})
	if b.Routing() || b.InboxOf("x") != -1 {
		t.Fatalf("routing %v inbox %d", b.Routing(), b.InboxOf("x"))
	}
	if err := b.PublishTo(t.Context(), "x", []byte("p")); !errors.Is(err, ErrNoInboxes) {
		t.Fatalf("PublishTo = %v, want ErrNoInboxes", err)
	}
}

// TestMemoryHubInboxes: a hub with inboxes has them after its shared
// partitions; a transport restricted by ReadPartitions delivers, in order,
// only the frames of the partitions it reads, and the survivor search still
// reads any partition (a sender checks the inboxes it wrote to).
func TestMemoryHubInboxes(t *testing.T) {
	hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 2, Inboxes: 3})
	pub, sub := hub.Transport(), hub.Transport()
	defer pub.Close()
	defer sub.Close()
	ib, ok := sub.(Inboxer)
	if !ok || sub.Partitions() != 5 || ib.Inboxes() != 3 {
		t.Fatalf("Inboxer %v, partitions %d", ok, sub.Partitions())
	}
	if n := NewMemoryHub().Transport().(Inboxer).Inboxes(); n != 0 {
		t.Fatalf("a hub without inboxes has %d", n)
	}
	ib.ReadPartitions([]int{0, 1, 3})
	ctx := context.Background()
	const rounds = 100
	for i := 1; i <= rounds; i++ {
		var frames []Frame
		for p := range 5 {
			frames = append(frames, Frame{Partition: p, Data: fmt.Appendf(nil, "%d", i)})
		}
		if err := pub.Publish(ctx, frames); err != nil {
			t.Fatal(err)
		}
	}
	ch, _ := collect(t, sub, "sub")
	got := recvFrames(t, ch, 3*rounds)
	last := make(map[int]int)
	for _, f := range got {
		var n int
		fmt.Sscan(string(f.Data), &n)
		if !slices.Contains([]int{0, 1, 3}, f.Partition) || n != last[f.Partition]+1 {
			t.Fatalf("frame %d of partition %d after %d", n, f.Partition, last[f.Partition])
		}
		last[f.Partition] = n
	}
	expectNoFrame(t, ch)
	i, err := pub.(SurvivorFinder).FindSurvivor(ctx, 4, 10, func(data []byte) int {
		if string(data) == fmt.Sprint(rounds) {
			return 7
		}
		return -1
	})
	if err != nil || i != 7 {
		t.Fatalf("FindSurvivor on an inbox = %d, %v", i, err)
	}
}

// TestPublishToNodesAllOrNone: a payload for several nodes is accepted into
// the outbox once per distinct inbox, all or none: when the outbox cannot
// take every copy (RejectNew), no copy is accepted and the refusal counts
// once.
func TestPublishToNodesAllOrNone(t *testing.T) {
	hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 1, Inboxes: 64})
	hub.setDown(true) // nothing leaves the outbox
	b := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1,
		Outbox: OutboxConfig{MaxMessages: 5, Overflow: RejectNew}})
	// Three nodes with inboxes of their own, and one sharing x's.
	var ids []string
	inboxes := map[int]string{}
	mate := ""
	for i := 0; len(ids) < 3 || mate == ""; i++ {
		id := fmt.Sprintf("n%d", i)
		p := b.InboxOf(id)
		switch other, ok := inboxes[p]; {
		case !ok && len(ids) < 3:
			inboxes[p] = id
			ids = append(ids, id)
		case ok && other == ids[0] && mate == "":
			mate = id
		}
	}
	ctx := t.Context()
	if err := b.PublishToNodes(ctx, append(slices.Clone(ids), mate), []byte("first")); err != nil {
		t.Fatalf("first: %v", err)
	}
	if n := b.Status().OutboxLen; n != 3 {
		t.Fatalf("outbox holds %d after a payload for 3 inboxes (one node shares one), want 3", n)
	}
	if err := b.PublishToNodes(ctx, ids, []byte("second")); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("second: %v, want ErrOutboxFull (3 more copies do not fit in 5)", err)
	}
	if n, rej := b.Status().OutboxLen, b.Stats().Rejected; n != 3 || rej != 1 {
		t.Fatalf("after the refusal: outbox %d, rejected %d; want 3 and 1 (no copy accepted, one refusal)", n, rej)
	}
	if err := b.PublishToNodes(ctx, ids[:2], []byte("third")); err != nil {
		t.Fatalf("third (2 copies, room for 2): %v", err)
	}
	if n := b.Status().OutboxLen; n != 5 {
		t.Fatalf("outbox holds %d, want 5", n)
	}
	if err := b.PublishToNodes(ctx, nil, []byte("none")); err != nil {
		t.Fatalf("no node: %v", err)
	}
	hub.setDown(false) // the outbox drains before Close
}

// TestInboxWriterCutReportedGone: with inboxes no node hears another's
// round-trip probes, yet a node that writes to another and then falls
// silent (its link cut, as in a crash) is reported gone, once, by its
// every-round promise: whether it wrote to the target's inbox or to a shared
// partition, and whether it announced after its last write (the promise of
// the announcement) or not (the promise its data carries once it was heard
// promising), also after a quiet spell longer than its promises. A node
// that reads nothing the writer wrote does not report it.
func TestInboxWriterCutReportedGone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		inbox bool
		// announce: the writer announced after its last write before the cut.
		announce bool
		// quiet: the writer wrote nothing for 20 s before its last write.
		quiet bool
	}{
		{"inbox, cut right after the write", true, false, false},
		{"inbox, cut after an announcement", true, true, false},
		{"inbox, cut right after a write after a quiet spell", true, false, true},
		{"shared partition, cut right after the write", false, false, false},
		{"shared partition, cut after an announcement", false, true, false},
		{"shared partition, cut right after a write after a quiet spell", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctestRun(t, func(t *testing.T) {
				const shared, inboxes = 2, 8
				hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
				ids := inboxIDs(t, shared, inboxes, 3)
				ta := newInboxCut(hub)
				a := newBusOn(t, ta, Config{NodeID: ids[0]})
				t.Cleanup(func() { ta.setDown(false) })
				a.Receive(func(Message) {})
				c := newBus(t, hub, Config{NodeID: ids[2]}) // writes nothing
				c.Receive(func(Message) {})
				r := newBus(t, hub, Config{NodeID: ids[1]})
				sr := newSink()
				r.Receive(sr.handle)
				time.Sleep(2 * time.Second)
				synctestWait()
				for i := 1; i <= 20; i++ {
					sendOn(t, a, tc.inbox, ids[1], ids[0], i, i)
					time.Sleep(250 * time.Millisecond)
				}
				n := 20
				if tc.quiet {
					sr.wait(t, n, time.Minute)
					time.Sleep(20 * time.Second)
					synctestWait()
					n++
					sendOn(t, a, tc.inbox, ids[1], ids[0], n, n)
				}
				sr.wait(t, n, time.Minute)
				if tc.announce {
					time.Sleep(1500 * time.Millisecond)
					synctestWait()
				}
				ta.setDown(true)
				time.Sleep(time.Minute)
				synctestWait()
				if s := r.Stats(); s.NodesGoneSilent != 1 || s.NodesGoneReplaced+s.NodesClosed != 0 || s.Gaps != 0 {
					t.Fatalf("target stats %+v", s)
				}
				// c reads the shared partitions, not the target's inbox.
				if s, want := c.Stats(), map[bool]uint64{true: 0, false: 1}[tc.inbox]; s.NodesGoneSilent != want || s.NodesGoneReplaced+s.NodesClosed != 0 {
					t.Fatalf("the other node: stats %+v, want %d gone", s, want)
				}
			})
		})
	}
}

// TestInboxLiveWriterNotGone: writers that stay alive and stop writing are
// not reported gone by a target that hears them no more: a publisher that
// does not receive (an emitter), writing to the inbox it shares with its
// target or to a shared partition, keeps the every-round promise of its
// writes; a writer with probes disabled never promises, so its data gives
// none.
func TestInboxLiveWriterNotGone(t *testing.T) {
	const shared, inboxes = 2, 8
	mate := func(t *testing.T, target string) string {
		for i := 1; i < 10000; i++ {
			if id := fmt.Sprint("n", i); InboxOf(id, shared, inboxes) == InboxOf(target, shared, inboxes) {
				return id
			}
		}
		t.Fatal("no id shares n0's inbox")
		return ""
	}
	for _, tc := range []struct {
		name    string
		inbox   bool
		mate    bool // the writer shares the target's inbox
		receive bool
		probe   time.Duration
	}{
		{"not receiving, the inbox it shares with the target", true, true, false, 0},
		{"not receiving, a shared partition", false, false, false, 0},
		{"probes disabled, the target's inbox", true, false, true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctestRun(t, func(t *testing.T) {
				hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
				target, writer := "n0", ""
				if tc.mate {
					writer = mate(t, target)
				} else {
					ids := inboxIDs(t, shared, inboxes, 2)
					writer, target = ids[0], ids[1]
				}
				a := newBus(t, hub, Config{NodeID: writer, ProbeInterval: tc.probe})
				if tc.receive {
					a.Receive(func(Message) {})
				}
				r := newBus(t, hub, Config{NodeID: target})
				sr := newSink()
				r.Receive(sr.handle)
				time.Sleep(2 * time.Second)
				synctestWait()
				for i := 1; i <= 10; i++ {
					sendOn(t, a, tc.inbox, target, writer, i, i)
					time.Sleep(300 * time.Millisecond)
				}
				sr.wait(t, 10, time.Minute)
				time.Sleep(time.Minute)
				synctestWait()
				if s := r.Stats(); s.NodesGoneSilent+s.NodesGoneReplaced+s.NodesClosed != 0 || s.Gaps != 0 {
					t.Fatalf("a live writer that stopped writing: target stats %+v", s)
				}
			})
		})
	}
}
