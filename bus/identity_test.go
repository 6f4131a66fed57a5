package bus

import (
	"testing"
	"time"
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
