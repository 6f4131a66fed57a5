package bus

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/testwait"
)

// TestMessageIDIsTheTransportPosition checks that a delivered message carries the
// transport's position of its frame (MemoryHub: increasing per partition).
func TestMessageIDIsTheTransportPosition(t *testing.T) {
	hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 1})
	a := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1})
	b := newBus(t, hub, Config{NodeID: "b", ProbeInterval: -1})
	s := newSink()
	b.Receive(s.handle)
	for i := 1; i <= 3; i++ {
		if err := a.Publish(t.Context(), "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	msgs := s.wait(t, 3, 10*time.Second)
	for i, m := range msgs {
		if want := memoryID(uint64(i)); m.ID != want {
			t.Fatalf("message %d: ID %q, want %q", i+1, m.ID, want)
		}
	}
}

// TestTwoProcessesOneNodeID: two live processes with one node id (a rolling
// deploy with a fixed id). Each detects the conflict and still delivers the
// other's messages; a third node, whose reader sees the two runs interleaved and
// replayed, delivers every message of both exactly once.
func TestTwoProcessesOneNodeID(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 2})
		logs := newLogCounter()
		a1 := newBus(t, hub, Config{NodeID: "a", Logger: slogNew(logs)})
		a2 := newBus(t, hub, Config{NodeID: "a"})
		r := newBus(t, hub, Config{NodeID: "r"})
		s1, s2, sr := newSink(), newSink(), newSink()
		a1.Receive(s1.handle)
		a2.Receive(s2.handle)
		r.Receive(sr.handle)
		const n = 200
		for i := 1; i <= n; i++ {
			if i == n/2 {
				hub.failNextWrites(6) // replays: each run publishes some frames twice
			}
			if err := a1.Publish(t.Context(), "k", []byte(fmt.Sprintf("one/%d", i))); err != nil {
				t.Fatal(err)
			}
			if err := a2.Publish(t.Context(), "k", []byte(fmt.Sprintf("two/%d", i))); err != nil {
				t.Fatal(err)
			}
			if i%10 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		sr.wait(t, 2*n, time.Minute)
		s1.wait(t, n, time.Minute)
		s2.wait(t, n, time.Minute)
		time.Sleep(5 * time.Second)
		synctestWait()
		check := func(name string, msgs []Message, want ...string) {
			t.Helper()
			next := map[string]int{}
			for _, w := range want {
				next[w] = 1
			}
			for _, m := range msgs {
				var run string
				var i int
				if _, err := fmt.Sscanf(strings.Replace(string(m.Payload), "/", " ", 1), "%s %d", &run, &i); err != nil {
					t.Fatalf("%s: payload %q: %v", name, m.Payload, err)
				}
				if next[run] != i {
					t.Fatalf("%s: %s/%d after %s/%d (duplicate, reorder or loss)", name, run, i, run, next[run]-1)
				}
				next[run]++
			}
			for _, w := range want {
				if next[w] != n+1 {
					t.Fatalf("%s: %d messages of %s, want %d", name, next[w]-1, w, n)
				}
			}
			if len(msgs) != n*len(want) {
				t.Fatalf("%s: %d messages, want %d", name, len(msgs), n*len(want))
			}
		}
		check("r", sr.all(), "one", "two")
		check("a1", s1.all(), "two")
		check("a2", s2.all(), "one")
		if s := r.Stats(); s.Gaps != 0 || s.NodeIDConflicts != 0 || s.Duplicates == 0 {
			t.Fatalf("r: %+v", s)
		}
		for _, b := range []*Reliable{a1, a2} {
			st, s := b.Status(), b.Stats()
			if !st.NodeIDConflict || st.ConflictInstance == 0 || s.NodeIDConflicts == 0 || s.Gaps != 0 {
				t.Fatalf("%s: status %+v stats %+v", b.NodeID(), st, s)
			}
		}
		if n := logs.count("bus: another process uses this node id; node ids must be unique among running processes " +
			"(its broadcasts are delivered here as another node's, its requests and replies are dropped)"); n != 1 {
			t.Fatalf("%d conflict lines in 5 s: %q", n, logs.all())
		}
		if err := a2.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(conflictWindow + time.Second)
		synctestWait()
		if st := a1.Status(); st.NodeIDConflict {
			t.Fatalf("conflict still reported a minute after the other process stopped: %+v", st)
		}
	})
}

// TestEarlierRunIsNoConflict: frames an earlier run of this node id wrote before
// this process started are history, not another live process: not delivered
// (this node's clients had them from that run) and not reported.
func TestEarlierRunIsNoConflict(t *testing.T) {
	hub := NewMemoryHub()
	tr := hub.Transport() // its reading starts before the earlier run publishes
	old := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1})
	for i := 1; i <= 3; i++ {
		if err := old.Publish(t.Context(), "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	b, err := New(tr, &Config{NodeID: "a", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	s := newSink()
	b.Receive(s.handle)
	waitState(t, b, Connected, 10*time.Second)
	testwait.For(t, 10*time.Second, "a probe round", func() bool { return b.Stats().ProbesSent >= 2 })
	if n, st := s.len(), b.Stats(); n != 0 || st.NodeIDConflicts != 0 || b.Status().NodeIDConflict {
		t.Fatalf("%d delivered, stats %+v", n, st)
	}
}
