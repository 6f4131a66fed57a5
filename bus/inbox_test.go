package bus

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

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

// TestPublishToReachesOnlyTarget: messages published with PublishTo reach
// their target only, in order, exactly once; a node never receives what it
// sent to others; Publish on the shared partitions reaches every node as
// without inboxes.
func TestPublishToReachesOnlyTarget(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 2, 8
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 3)
		var buses []*Reliable
		var sinks []*sink
		for _, id := range ids {
			b := newBus(t, hub, Config{NodeID: id})
			s := newSink()
			b.Receive(s.handle)
			buses, sinks = append(buses, b), append(sinks, s)
		}
		a, b, c := buses[0], buses[1], buses[2]
		if !a.Routing() || a.Partitions() != shared+inboxes || a.InboxOf(ids[1]) != InboxOf(ids[1], shared, inboxes) {
			t.Fatalf("routing %v partitions %d inbox %d", a.Routing(), a.Partitions(), a.InboxOf(ids[1]))
		}
		if p := a.PartitionOf("some key"); p < 0 || p >= shared {
			t.Fatalf("PartitionOf = %d, want a shared partition", p)
		}
		time.Sleep(2 * time.Second)
		synctestWait()
		for i := 1; i <= 100; i++ {
			if err := a.PublishTo(t.Context(), ids[1], payload(ids[0], i)); err != nil {
				t.Fatal(err)
			}
		}
		for i := 1; i <= 40; i++ {
			if err := c.PublishTo(t.Context(), ids[0], payload(ids[2], i)); err != nil {
				t.Fatal(err)
			}
		}
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
			if s := bus.Stats(); s.Gaps != 0 || s.Duplicates != 0 {
				t.Fatalf("node %s stats %+v", ids[i], s)
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
