package bus

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// truncate makes the hub lose every frame of partition p from offset end on,
// like a Redis restarted from a snapshot taken at end, and moves readers past
// it back to it (a redisbus reader resets likewise).
func (h *MemoryHub) truncate(p int, end uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := &h.logs[p]
	l.entries = l.entries[:end-l.first]
	for s := range h.subs {
		s.t.cursor[p] = min(s.t.cursor[p], end)
	}
	h.broadcastLocked()
}

func (h *MemoryHub) end(p int) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.logs[p].end()
}

func publishRange(t *testing.T, b *Reliable, key, origin string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := b.Publish(t.Context(), key, payload(origin, i)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRepublishFillsLostWrites: the broker loses the last m messages it
// acknowledged (a restart from an older snapshot) while one receiver has not
// read them and another has. After the outage the publisher publishes its
// retained messages again before anything new, so both receivers get every
// message once, in order, with no gap; with retention disabled the receiver
// that was behind reports the m as lost.
func TestRepublishFillsLostWrites(t *testing.T) {
	const n, m, k = 20, 12, 8
	for _, tc := range []struct {
		name   string
		retain RetainConfig
	}{{"retained", RetainConfig{}}, {"disabled", RetainConfig{Window: -1}}} {
		t.Run(tc.name, func(t *testing.T) {
			synctestRun(t, func(t *testing.T) {
				hub := NewMemoryHub()
				a := newBus(t, hub, Config{NodeID: "a", Retain: tc.retain})
				a.Receive(func(Message) {})
				behind, current := newBus(t, hub, Config{NodeID: "behind"}), newBus(t, hub, Config{NodeID: "current"})
				sb, sc := newSink(), newSink()
				first, release := make(chan struct{}), make(chan struct{})
				var once sync.Once
				behind.Receive(func(msg Message) {
					sb.handle(msg)
					once.Do(func() {
						close(first)
						<-release
					})
				})
				current.Receive(sc.handle)
				time.Sleep(2 * time.Second)
				synctestWait()
				p := a.PartitionOf("k")
				publishRange(t, a, "k", "a", 1, n)
				<-first
				synctestWait()
				saved := hub.end(p)
				publishRange(t, a, "k", "a", n+1, n+m)
				sc.wait(t, n+m, time.Minute)
				hub.setDown(true)
				hub.truncate(p, saved)
				time.Sleep(5 * time.Second)
				synctestWait()
				hub.setDown(false)
				close(release)
				time.Sleep(3 * time.Second)
				synctestWait()
				publishRange(t, a, "k", "a", n+m+1, n+m+k)
				time.Sleep(5 * time.Second)
				synctestWait()
				if tc.retain.Window < 0 {
					if s := behind.Stats(); s.GapMessages != m || s.Received != n+k {
						t.Fatalf("without retention: behind %+v, want %d messages reported lost", s, m)
					}
					return
				}
				checkStreams(t, sb.all(), map[string]int{"a": n + m + k})
				checkStreams(t, sc.all(), map[string]int{"a": n + m + k})
				for _, r := range []*Reliable{behind, current} {
					if s := r.Stats(); s.Gaps != 0 || s.Received != n+m+k {
						t.Fatalf("%s: %+v", r.NodeID(), s)
					}
				}
				// current had everything; behind had the first n from the log.
				if d := current.Stats().Duplicates; d != n+m {
					t.Fatalf("current skipped %d duplicates, want %d", d, n+m)
				}
				if d := behind.Stats().Duplicates; d != n {
					t.Fatalf("behind skipped %d duplicates, want %d", d, n)
				}
				if s := a.Stats(); s.Republished != n+m || s.Republishes != 1 {
					t.Fatalf("publisher %+v, want %d republished once", s, n+m)
				}
			})
		})
	}
}

// TestRepublishOrderAcrossPartitions: an outage that loses nothing, with
// messages on every partition acknowledged before it and more accepted during
// it: the retained ones go out again first, then the outbox; receivers apply
// each message once and in order, and report no gap.
func TestRepublishOrderAcrossPartitions(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		a, r, s := pairOn(t, hub, hub.Transport(), Config{})
		const before, during = 40, 30
		for i := 1; i <= before+during; i++ {
			if i == before+1 {
				synctestWait()
				s.wait(t, before, time.Minute)
				hub.setDown(true)
			}
			if err := a.Publish(t.Context(), fmt.Sprint("key", i%7), payload("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(4 * time.Second)
		synctestWait()
		hub.setDown(false)
		s.wait(t, before+during, time.Minute)
		time.Sleep(3 * time.Second)
		synctestWait()
		checkStreams(t, s.all(), map[string]int{"a": before + during})
		if st := r.Stats(); st.Gaps != 0 || st.Duplicates != before || st.Received != before+during {
			t.Fatalf("receiver %+v", st)
		}
		if st := a.Stats(); st.Republished != before {
			t.Fatalf("publisher republished %d, want %d", st.Republished, before)
		}
	})
}

// TestRetainBounds: beyond Retain.MaxMessages the oldest acknowledged messages
// are forgotten and counted; only the rest go out again after an outage.
func TestRetainBounds(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		a, r, s := pairOn(t, hub, hub.Transport(), Config{Retain: RetainConfig{MaxMessages: 3}})
		publishRange(t, a, "k", "a", 1, 10)
		s.wait(t, 10, time.Minute)
		synctestWait()
		if st := a.Stats(); st.RetainEvicted != 7 {
			t.Fatalf("evicted %d, want 7", st.RetainEvicted)
		}
		if n, _ := a.kept.snapshot(); n != 3 {
			t.Fatalf("retained %d, want 3", n)
		}
		hub.setDown(true)
		time.Sleep(3 * time.Second)
		synctestWait()
		hub.setDown(false)
		time.Sleep(3 * time.Second)
		synctestWait()
		if st := a.Stats(); st.Republished != 3 {
			t.Fatalf("republished %d, want 3", st.Republished)
		}
		checkStreams(t, s.all(), map[string]int{"a": 10})
		if st := r.Stats(); st.Duplicates != 3 || st.Gaps != 0 {
			t.Fatalf("receiver %+v", st)
		}
	})
}

// TestRetainWindow: acknowledged messages older than the window, counted
// while the broker answers, are not published again; an outage longer than
// the window still republishes what was acknowledged in the window before it.
func TestRetainWindow(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		a, r, s := pairOn(t, hub, hub.Transport(), Config{Retain: RetainConfig{Window: 5 * time.Second}})
		publishRange(t, a, "k", "a", 1, 5)
		time.Sleep(10 * time.Second) // healthy: these leave the window
		synctestWait()
		if n, _ := a.kept.snapshot(); n != 0 {
			t.Fatalf("retained %d after the window, want 0", n)
		}
		publishRange(t, a, "k", "a", 6, 8)
		synctestWait()
		hub.setDown(true)
		time.Sleep(time.Minute)
		synctestWait()
		hub.setDown(false)
		time.Sleep(3 * time.Second)
		synctestWait()
		if st := a.Stats(); st.Republished != 3 {
			t.Fatalf("republished %d, want 3 (6..8)", st.Republished)
		}
		checkStreams(t, s.all(), map[string]int{"a": 8})
		if st := r.Stats(); st.Duplicates != 3 || st.Gaps != 0 {
			t.Fatalf("receiver %+v", st)
		}
	})
}
