package bus

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// behindReceiver starts, on hub, the receiving bus of id with OnGap into
// gaps, whose handler blocks on the first message it gets until release is
// closed (it is behind while the broker loses messages). It returns the sink
// of what it applied and a channel closed when the first message arrived.
func behindReceiver(t *testing.T, hub *MemoryHub, id string, gaps *gapLog, release <-chan struct{}) (*Reliable, *sink, <-chan struct{}) {
	t.Helper()
	r := newBus(t, hub, Config{NodeID: id, OnGap: gaps.add})
	s := newSink()
	first := make(chan struct{})
	n := 0
	r.Receive(func(m Message) {
		n++
		if n == 1 {
			close(first)
			<-release
		}
		s.handle(m)
	})
	return r, s, first
}

// originGaps returns the gaps of origin in gaps.
func originGaps(gaps *gapLog, origin string) []Gap {
	return slices.DeleteFunc(gaps.all(), func(g Gap) bool { return g.Origin != origin })
}

// TestInboxFirstMessagesLostReported: the broker loses the first 10 messages
// a node ever sent to another node's inbox (a restart without persistence,
// retention off), before the target, reading its inbox since long before,
// got any of them. The sender's announcement after the reconnect carries the
// time of its first message there: the target, reading since before it,
// takes 0 as the baseline and reports the 10 as lost, exactly once, instead
// of taking the announcement as its baseline. Control: the same on a shared
// partition, where the sender's probes gave the baseline.
func TestInboxFirstMessagesLostReported(t *testing.T) {
	for _, inbox := range []bool{true, false} {
		t.Run(fmt.Sprint("inbox=", inbox), func(t *testing.T) {
			synctestRun(t, func(t *testing.T) {
				const shared, inboxes = 2, 8
				hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
				ids := inboxIDs(t, shared, inboxes, 3)
				var gaps gapLog
				a := newBus(t, hub, Config{NodeID: ids[0], Retain: RetainConfig{Window: -1}})
				a.Receive(func(Message) {})
				c := newBus(t, hub, Config{NodeID: ids[2], Retain: RetainConfig{Window: -1}})
				c.Receive(func(Message) {})
				release := make(chan struct{})
				r, sr, first := behindReceiver(t, hub, ids[1], &gaps, release)
				// The receiver counts as reading from its first frame: a's
				// and c's probes at 0 s (which it may start too late for)
				// or 1 s; a's first message comes more than the 1 s
				// baseline margin after that.
				time.Sleep(3 * time.Second)
				synctestWait()
				if err := c.PublishTo(t.Context(), ids[1], []byte("x")); err != nil {
					t.Fatal(err)
				}
				<-first
				sendOn(t, a, inbox, ids[1], ids[0], 1, 10)
				time.Sleep(3 * time.Second)
				synctestWait()
				if st := a.Status(); st.OutboxLen != 0 {
					t.Fatalf("a's outbox holds %d", st.OutboxLen)
				}
				hub.setDown(true)
				hub.lose()
				time.Sleep(3 * time.Second)
				synctestWait()
				hub.setDown(false)
				close(release)
				time.Sleep(10 * time.Second)
				synctestWait()
				p := r.PartitionOf("k")
				if inbox {
					p = r.InboxOf(ids[1])
				}
				want := Gap{Origin: ids[0], Partition: p, After: 0, Next: 11, Missing: 10, Tail: true}
				if g := originGaps(&gaps, ids[0]); len(g) != 1 || g[0] != want {
					t.Fatalf("gaps of a %+v, want %+v", g, want)
				}
				sendOn(t, a, inbox, ids[1], ids[0], 11, 11)
				msgs := sr.wait(t, 2, time.Minute)
				if msgs[1].Seq != 11 {
					t.Fatalf("after the gap: %+v", msgs[1])
				}
				time.Sleep(3 * time.Second)
				synctestWait()
				if s := r.Stats(); s.Gaps != 1 || s.GapMessages != 10 || s.Duplicates != 0 || s.Received != 2 {
					t.Fatalf("receiver stats %+v", s)
				}
			})
		})
	}
}

// TestInboxFirstMessagesLostDataFirst: the broker loses the first 5
// messages a node sent to another node's inbox and its announcement of them
// without any connection breaking (a trim, a failover of a shard it only
// writes to); the next 5 arrive before any announcement. The first message
// the target sees (seq 6) is only a provisional baseline: the sender's next
// announcement, with the time of its first message there, makes the target,
// reading since before it, report 1..5 lost, once. Control: the same on a
// shared partition.
func TestInboxFirstMessagesLostDataFirst(t *testing.T) {
	for _, inbox := range []bool{true, false} {
		t.Run(fmt.Sprint("inbox=", inbox), func(t *testing.T) {
			synctestRun(t, func(t *testing.T) {
				const shared, inboxes = 2, 8
				hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
				ids := inboxIDs(t, shared, inboxes, 3)
				var gaps gapLog
				a := newBus(t, hub, Config{NodeID: ids[0], Retain: RetainConfig{Window: -1}})
				a.Receive(func(Message) {})
				c := newBus(t, hub, Config{NodeID: ids[2]})
				c.Receive(func(Message) {})
				release := make(chan struct{})
				r, sr, first := behindReceiver(t, hub, ids[1], &gaps, release)
				// The receiver counts as reading from its first frame: a's
				// and c's probes at 0 s (which it may start too late for)
				// or 1 s; a's first message comes more than the 1 s
				// baseline margin after that.
				time.Sleep(3 * time.Second)
				synctestWait()
				if err := c.PublishTo(t.Context(), ids[1], []byte("x")); err != nil {
					t.Fatal(err)
				}
				<-first
				sendOn(t, a, inbox, ids[1], ids[0], 1, 5)
				time.Sleep(3 * time.Second) // a announces last=5
				synctestWait()
				hub.lose()
				sendOn(t, a, inbox, ids[1], ids[0], 6, 10)
				synctestWait()
				close(release)
				time.Sleep(10 * time.Second)
				synctestWait()
				p := r.PartitionOf("k")
				if inbox {
					p = r.InboxOf(ids[1])
				}
				want := Gap{Origin: ids[0], Partition: p, After: 0, Next: 6, Missing: 5}
				if g := originGaps(&gaps, ids[0]); len(g) != 1 || g[0] != want {
					t.Fatalf("gaps of a %+v, want %+v", g, want)
				}
				var seqs []uint64
				for _, m := range sr.all() {
					if m.Origin == ids[0] {
						seqs = append(seqs, m.Seq)
					}
				}
				if !slices.Equal(seqs, []uint64{6, 7, 8, 9, 10}) {
					t.Fatalf("a's messages applied: seqs %v, want 6..10", seqs)
				}
				if s := r.Stats(); s.Gaps != 1 || s.GapMessages != 5 || s.Duplicates != 0 || s.Received != 6 {
					t.Fatalf("receiver stats %+v", s)
				}
			})
		})
	}
}

// TestInboxBaselineReaderStartedLater: a node sends 10 messages to another
// node's inbox before that node reads it; the target, started later, sees
// only the sender's announcements there (last 10, first message before it
// read): it takes 10 as the baseline and reports nothing; the next message
// arrives as the next one. A receiver that was not reading then has no loss
// to report.
func TestInboxBaselineReaderStartedLater(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 2, 8
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 2)
		var gaps gapLog
		a := newBus(t, hub, Config{NodeID: ids[0]})
		a.Receive(func(Message) {})
		time.Sleep(2 * time.Second)
		synctestWait()
		publishTo(t, a, ids[1], ids[0], 1, 10)
		time.Sleep(500 * time.Millisecond) // within the 1 s margin
		synctestWait()
		r := newBus(t, hub, Config{NodeID: ids[1], OnGap: gaps.add})
		sr := newSink()
		r.Receive(sr.handle)
		time.Sleep(30 * time.Second) // announcements: every round, then periodic
		synctestWait()
		publishTo(t, a, ids[1], ids[0], 11, 11)
		msgs := sr.wait(t, 1, time.Minute)
		time.Sleep(3 * time.Second)
		synctestWait()
		if len(msgs) != 1 || msgs[0].Seq != 11 || len(gaps.all()) != 0 {
			t.Fatalf("got %+v, gaps %+v", msgs, gaps.all())
		}
		if s := r.Stats(); s.Gaps != 0 || s.Received != 1 {
			t.Fatalf("receiver stats %+v", s)
		}
	})
}

// TestInboxTrimmedTailReported: a target is behind while its inbox stream is
// trimmed (MaxLen) by another node's writes, well after the retain window
// of a sender's last write there: the sender's messages 2..5 and its
// announcements of them are trimmed, and it writes nothing more there. Its
// announcement every announceEvery rounds still makes the target report the
// 4 as a tail gap, once. Control: the same on a shared partition, where the
// sender's probes go every round.
func TestInboxTrimmedTailReported(t *testing.T) {
	for _, inbox := range []bool{true, false} {
		t.Run(fmt.Sprint("inbox=", inbox), func(t *testing.T) {
			synctestRun(t, func(t *testing.T) {
				const shared, inboxes = 2, 8
				hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes, MaxLen: 20})
				ids := inboxIDs(t, shared, inboxes, 3)
				var gaps gapLog
				a := newBus(t, hub, Config{NodeID: ids[0]})
				a.Receive(func(Message) {})
				c := newBus(t, hub, Config{NodeID: ids[2]})
				c.Receive(func(Message) {})
				release := make(chan struct{})
				r, sr, first := behindReceiver(t, hub, ids[1], &gaps, release)
				time.Sleep(2 * time.Second)
				synctestWait()
				sendOn(t, a, inbox, ids[1], ids[0], 1, 1)
				<-first
				sendOn(t, a, inbox, ids[1], ids[0], 2, 5)
				time.Sleep(15 * time.Second) // past the retain window: a announces last=5 no more every round
				synctestWait()
				sendOn(t, c, inbox, ids[1], ids[2], 1, 60) // trims a's 2..5 and its announcements
				synctestWait()
				p := r.PartitionOf("k")
				if inbox {
					p = r.InboxOf(ids[1])
				}
				if n := hub.kept(p); n > 20+20/4 { // trimmed in chunks of a quarter
					close(release)
					t.Fatalf("partition %d keeps %d frames", p, n)
				}
				close(release)
				time.Sleep(30 * time.Second)
				synctestWait()
				want := Gap{Origin: ids[0], Partition: p, After: 1, Next: 6, Missing: 4, Tail: true}
				if g := originGaps(&gaps, ids[0]); len(g) != 1 || g[0] != want {
					t.Fatalf("gaps of a %+v, want %+v", g, want)
				}
				if s := r.Stats(); s.GapMessages < 4 || s.Duplicates != 0 {
					t.Fatalf("receiver stats %+v", s)
				}
				if n := sr.len(); n < 1 {
					t.Fatalf("receiver applied %d", n)
				}
			})
		})
	}
}

// inboxCut is a cutTransport (a node's own link to the hub, which the test
// can cut) over a hub with inboxes.
type inboxCut struct {
	*cutTransport
	ib Inboxer
}

func newInboxCut(hub *MemoryHub) *inboxCut {
	mt := hub.Transport()
	return &inboxCut{cutTransport: &cutTransport{Transport: mt, cut: make(chan struct{})}, ib: mt.(Inboxer)}
}

func (c *inboxCut) Inboxes() int               { return c.ib.Inboxes() }
func (c *inboxCut) ReadPartitions(parts []int) { c.ib.ReadPartitions(parts) }

// TestInboxBaselineAfterForgetting: a node writes 5 messages to another
// node's inbox, which applies them; then the writer is cut off alone for
// longer than receivers remember a silent run, and the target forgets it.
// Back, the writer announces again, with the time of its first message
// there: the target has been reading since before it, but forgot the run
// since, so it takes the announcement as the baseline and reports no gap
// for messages it had applied.
func TestInboxBaselineAfterForgetting(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 2, 8
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 2)
		var gaps gapLog
		ta := newInboxCut(hub)
		a := newBusOn(t, ta, Config{NodeID: ids[0]})
		t.Cleanup(func() { ta.setDown(false) })
		a.Receive(func(Message) {})
		r := newBus(t, hub, Config{NodeID: ids[1], OnGap: gaps.add})
		sr := newSink()
		r.Receive(sr.handle)
		time.Sleep(2 * time.Second)
		synctestWait()
		publishTo(t, a, ids[1], ids[0], 1, 5)
		sr.wait(t, 5, time.Minute)
		time.Sleep(1500 * time.Millisecond) // an announcement, with its promise
		synctestWait()
		ta.setDown(true)
		time.Sleep(r.pruneAfter() + 10*time.Minute)
		synctestWait()
		if s := r.Stats(); s.NodesGoneSilent != 1 || slices.Contains(r.Status().Nodes, ids[0]) {
			t.Fatalf("target stats %+v, nodes %v", s, r.Status().Nodes)
		}
		r.recv.mu.Lock()
		_, known := r.recv.nodes[ids[0]]
		r.recv.mu.Unlock()
		if known {
			t.Fatal("the target still knows the writer's run")
		}
		ta.setDown(false)
		time.Sleep(time.Minute)
		synctestWait()
		// Back, the writer announced once on the target's inbox (after its
		// broken connection), and nothing more: it wrote nothing since.
		r.recv.mu.Lock()
		_, known = r.recv.nodes[ids[0]]
		r.recv.mu.Unlock()
		if !known {
			t.Fatal("the writer is not heard again")
		}
		if g := gaps.all(); len(g) != 0 {
			t.Fatalf("gaps %+v for messages the target applied", g)
		}
		if s := r.Stats(); s.Received != 5 || s.Gaps != 0 {
			t.Fatalf("target stats %+v", s)
		}
	})
}
