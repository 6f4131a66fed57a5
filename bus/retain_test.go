package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// truncate makes the hub lose every frame of partition p from offset end on,
// like a Redis restarted from a snapshot taken at end. The lost frames stay as
// holes that readers pass over, so what is appended later lands beyond every
// reader's position, as entries Redis adds after a restart get ids above the
// lost ones (stream ids follow the clock): a reader that had read the lost
// frames reads the copies, whether or not it was subscribed at the loss.
func (h *MemoryHub) truncate(p int, end uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := &h.logs[p]
	clear(l.entries[end-l.first:])
	h.broadcastLocked()
}

// outage takes the hub down for down, losing partition p's frames from offset
// saved on (p < 0: losing nothing), then brings it back and lets up pass, in
// a synctest bubble.
func outage(hub *MemoryHub, p int, saved uint64, down, up time.Duration) {
	hub.setDown(true)
	if p >= 0 {
		hub.truncate(p, saved)
	}
	time.Sleep(down)
	synctestWait()
	hub.setDown(false)
	time.Sleep(up)
	synctestWait()
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
// read them and another has. After the outage the publisher publishes again,
// before anything new, the retained messages the broker lacks (all it
// retained over a transport that cannot tell, "whole window"), so both
// receivers get every message once, in order, with no gap; with retention
// disabled the receiver that was behind reports the m as lost.
func TestRepublishFillsLostWrites(t *testing.T) {
	const n, m, k = 20, 12, 8
	for _, tc := range []struct {
		name   string
		retain RetainConfig
		whole  bool
		// republished, and the duplicates current and behind skip.
		republished, dupCurrent, dupBehind uint64
	}{
		{"retained", RetainConfig{}, false, m, m, 0},
		{"whole window", RetainConfig{}, true, n + m, n + m, n},
		{"disabled", RetainConfig{Window: -1}, false, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctestRun(t, func(t *testing.T) {
				hub := NewMemoryHub()
				var tr Transport = hub.Transport()
				if tc.whole {
					tr = wholeWindow{tr}
				}
				a := newBusOn(t, tr, Config{NodeID: "a", Retain: tc.retain})
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
				if d := current.Stats().Duplicates; d != tc.dupCurrent {
					t.Fatalf("current skipped %d duplicates, want %d", d, tc.dupCurrent)
				}
				if d := behind.Stats().Duplicates; d != tc.dupBehind {
					t.Fatalf("behind skipped %d duplicates, want %d", d, tc.dupBehind)
				}
				if s := a.Stats(); s.Republished != tc.republished || s.Republishes != 1 {
					t.Fatalf("publisher %+v, want %d republished once", s, tc.republished)
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
		a, r, s := pairOn(t, hub, wholeWindow{hub.Transport()}, Config{})
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
		a, r, s := pairOn(t, hub, wholeWindow{hub.Transport()}, Config{Retain: RetainConfig{MaxMessages: 3}})
		publishRange(t, a, "k", "a", 1, 10)
		s.wait(t, 10, time.Minute)
		synctestWait()
		if st := a.Stats(); st.RetainEvicted != 7 {
			t.Fatalf("evicted %d, want 7", st.RetainEvicted)
		}
		if n, _ := a.kept.snapshot(); n != 3 {
			t.Fatalf("retained %d, want 3", n)
		}
		outage(hub, -1, 0, 3*time.Second, 3*time.Second)
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
		a, r, s := pairOn(t, hub, wholeWindow{hub.Transport()}, Config{Retain: RetainConfig{Window: 5 * time.Second}})
		publishRange(t, a, "k", "a", 1, 5)
		time.Sleep(10 * time.Second) // healthy: these leave the window
		synctestWait()
		if n, _ := a.kept.snapshot(); n != 0 {
			t.Fatalf("retained %d after the window, want 0", n)
		}
		publishRange(t, a, "k", "a", 6, 8)
		synctestWait()
		outage(hub, -1, 0, time.Minute, 3*time.Second)
		if st := a.Stats(); st.Republished != 3 {
			t.Fatalf("republished %d, want 3 (6..8)", st.Republished)
		}
		checkStreams(t, s.all(), map[string]int{"a": 8})
		if st := r.Stats(); st.Duplicates != 3 || st.Gaps != 0 {
			t.Fatalf("receiver %+v", st)
		}
	})
}

// failOnce fails, once armed, the next non-probe Publish after holding it for
// hold (the bus's pings go through meanwhile).
type failOnce struct {
	Transport
	arm   atomic.Bool
	hold  time.Duration
	fails atomic.Int64
}

func (f *failOnce) Publish(ctx context.Context, frames []Frame) error {
	if len(frames) > 0 && !frames[0].Probe && f.arm.Swap(false) {
		select {
		case <-time.After(f.hold):
		case <-ctx.Done():
		}
		f.fails.Add(1)
		return errors.New("test: publish failed after a while")
	}
	return f.Transport.Publish(ctx, frames)
}

// lostBehind sets up a publisher a and a receiver behind that holds its first
// delivery until release is closed; a publishes n messages, then m more that
// the hub loses at the next outage (truncate to saved). It returns the
// partition and the end of the log before the m.
func lostBehind(t *testing.T, hub *MemoryHub, a *Reliable, n, m int) (behind *Reliable, sb *sink, release chan struct{}, p int, saved uint64) {
	behind = newBus(t, hub, Config{NodeID: "behind"})
	sb = newSink()
	first := make(chan struct{})
	release = make(chan struct{})
	var once sync.Once
	behind.Receive(func(msg Message) {
		sb.handle(msg)
		once.Do(func() {
			close(first)
			<-release
		})
	})
	time.Sleep(2 * time.Second)
	synctestWait()
	p = a.PartitionOf("k")
	publishRange(t, a, "k", "a", 1, n)
	<-first
	synctestWait()
	saved = hub.end(p)
	publishRange(t, a, "k", "a", n+1, n+m)
	time.Sleep(time.Second)
	synctestWait()
	return behind, sb, release, p, saved
}

// TestRepublishFailingPartWayForgetsNothing: the broker loses m acknowledged
// messages in an outage longer than the retention window; the first publish
// after it (the republish) hangs and fails while pings succeed. Nothing
// retained is forgotten meanwhile: the next attempt republishes it, and the
// receiver that had not read the m gets every message once, with no gap.
func TestRepublishFailingPartWayForgetsNothing(t *testing.T) {
	const n, m, k = 20, 12, 8
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		f := &failOnce{Transport: hub.Transport(), hold: 2500 * time.Millisecond}
		a := newBusOn(t, f, Config{NodeID: "a"})
		a.Receive(func(Message) {})
		behind, sb, release, p, saved := lostBehind(t, hub, a, n, m)
		hub.setDown(true)
		hub.truncate(p, saved)
		time.Sleep(10 * time.Second)
		synctestWait()
		publishRange(t, a, "k", "a", n+m+1, n+m+1) // waits in the outbox: the sender republishes first
		synctestWait()
		f.arm.Store(true)
		hub.setDown(false)
		time.Sleep(10 * time.Second)
		synctestWait()
		close(release)
		publishRange(t, a, "k", "a", n+m+2, n+m+k)
		time.Sleep(5 * time.Second)
		synctestWait()
		if f.fails.Load() != 1 {
			t.Fatalf("%d publishes failed, want 1", f.fails.Load())
		}
		checkStreams(t, sb.all(), map[string]int{"a": n + m + k})
		if s := behind.Stats(); s.Gaps != 0 || s.GapMessages != 0 || s.Received != n+m+k {
			t.Fatalf("behind: %+v, want every message once and no gap", s)
		}
		// One successful republish of all n+m; the failed attempt counts
		// neither as republished nor as replayed.
		if s := a.Stats(); s.Republished != n+m || s.Republishes != 1 || s.RetainEvicted != 0 || s.Replayed != 0 {
			t.Fatalf("publisher: republished %d in %d, evicted %d, replayed %d; want %d in 1, 0, 0",
				s.Republished, s.Republishes, s.RetainEvicted, s.Replayed, n+m)
		}
	})
}

// TestRepublishedRetainedAgain: two outages, the first longer than the window,
// each losing what was written last. The copies republished after the first
// (of the m the broker lost) are acknowledged again and retained for a window
// from then, so the second outage, seconds later, loses nothing either.
func TestRepublishedRetainedAgain(t *testing.T) {
	const n, m, k = 20, 12, 8
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		a := newBus(t, hub, Config{NodeID: "a"})
		a.Receive(func(Message) {})
		behind, sb, release, p, saved := lostBehind(t, hub, a, n, m)
		outage(hub, p, saved, 10*time.Second, 3*time.Second)
		if s := a.Stats(); s.Republished != m || s.Republishes != 1 {
			t.Fatalf("after the first outage: republished %d in %d, want %d in 1", s.Republished, s.Republishes, m)
		}
		// The second outage loses the copies written a few seconds ago.
		outage(hub, p, saved, 2*time.Second, 3*time.Second)
		close(release)
		publishRange(t, a, "k", "a", n+m+1, n+m+k)
		time.Sleep(5 * time.Second)
		synctestWait()
		checkStreams(t, sb.all(), map[string]int{"a": n + m + k})
		if s := behind.Stats(); s.Gaps != 0 || s.GapMessages != 0 || s.Received != n+m+k {
			t.Fatalf("behind: %+v, want every message once and no gap", s)
		}
		if s := a.Stats(); s.Republished != 2*m || s.Republishes != 2 || s.RetainEvicted != 0 {
			t.Fatalf("publisher: republished %d in %d, evicted %d; want %d in 2, 0", s.Republished, s.Republishes, s.RetainEvicted, 2*m)
		}
	})
}

const notRepublishedWarning = "bus: retained messages not published again: older than the outbox max age (receivers may take them for new), or published again twice already (a message that breaks the connection itself, e.g. larger than Redis' client output buffer limit, or a connection that keeps breaking)"

// TestRepublishCopiesBounded: a message is published again at most maxCopies
// times. A third break within the window (a connection that keeps breaking,
// or a message that breaks every reader itself) republishes nothing of it:
// it is counted as evicted and logged, and a receiver that lacks it reports
// it as a gap instead of the bus republishing it after every break for ever.
func TestRepublishCopiesBounded(t *testing.T) {
	const n, m, k = 20, 12, 8
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		logs := newLogCounter()
		a := newBus(t, hub, Config{NodeID: "a", Logger: slogNew(logs)})
		a.Receive(func(Message) {})
		behind, _, release, p, saved := lostBehind(t, hub, a, n, m)
		for range maxCopies + 1 {
			outage(hub, p, saved, 2*time.Second, 2*time.Second)
		}
		close(release)
		publishRange(t, a, "k", "a", n+m+1, n+m+k)
		time.Sleep(5 * time.Second)
		synctestWait()
		// The n the broker kept are never published again, so never run out
		// of copies.
		if s := a.Stats(); s.Republished != maxCopies*m || s.Republishes != maxCopies || s.RetainEvicted != m {
			t.Fatalf("publisher: republished %d in %d, evicted %d; want %d in %d, %d", s.Republished, s.Republishes, s.RetainEvicted, maxCopies*m, maxCopies, m)
		}
		if c := logs.count(notRepublishedWarning); c != 1 {
			t.Fatalf("%d warnings, want 1: %v", c, logs.all())
		}
		if s := behind.Stats(); s.GapMessages != m || s.Received != n+k {
			t.Fatalf("behind: %+v, want the %d lost by the third break reported", s, m)
		}
	})
}

// TestRetainedOlderThanMaxAgeNotRepublished: after an outage longer than
// Outbox.MaxAge, retained messages accepted before it are not published
// again (receivers may have forgotten their run by then and would deliver
// them as new): they are counted as evicted and logged, and a receiver that
// had not read the lost ones reports them as a gap.
func TestRetainedOlderThanMaxAgeNotRepublished(t *testing.T) {
	const n, m, k = 20, 12, 8
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		logs := newLogCounter()
		a := newBus(t, hub, Config{NodeID: "a", Logger: slogNew(logs), Outbox: OutboxConfig{MaxAge: 20 * time.Second}})
		a.Receive(func(Message) {})
		behind, _, release, p, saved := lostBehind(t, hub, a, n, m)
		outage(hub, p, saved, 30*time.Second, 3*time.Second)
		close(release)
		publishRange(t, a, "k", "a", n+m+1, n+m+k)
		time.Sleep(5 * time.Second)
		synctestWait()
		if s := a.Stats(); s.Republished != 0 || s.RetainEvicted != n+m {
			t.Fatalf("publisher: republished %d, evicted %d; want 0, %d", s.Republished, s.RetainEvicted, n+m)
		}
		if c := logs.count(notRepublishedWarning); c != 1 {
			t.Fatalf("%d warnings, want 1: %v", c, logs.all())
		}
		if s := behind.Stats(); s.GapMessages != m || s.Received != n+k {
			t.Fatalf("behind: %+v, want %d reported lost", s, m)
		}
	})
}

// TestCloseWhileBrokenCountsRetained: a bus closed while a republish is due
// (the broker is down) forgets its retained messages: counted as evicted and
// logged.
func TestCloseWhileBrokenCountsRetained(t *testing.T) {
	const n = 15
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		logs := newLogCounter()
		a := newBus(t, hub, Config{NodeID: "a", Logger: slogNew(logs)})
		time.Sleep(2 * time.Second)
		synctestWait()
		publishRange(t, a, "k", "a", 1, n)
		synctestWait()
		if kept, _ := a.kept.snapshot(); kept != n {
			t.Fatalf("%d retained, want %d", kept, n)
		}
		hub.setDown(true)
		time.Sleep(3 * time.Second)
		synctestWait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := a.Close(ctx); err != nil {
			t.Fatalf("Close with an empty outbox: %v", err)
		}
		if s := a.Stats(); s.RetainEvicted != n {
			t.Fatalf("evicted %d at close, want %d", s.RetainEvicted, n)
		}
		if c := logs.count("bus: closing with acknowledged messages not yet published again after a broken connection; receivers may report them as a gap"); c != 1 {
			t.Fatalf("%d warnings, want 1: %v", c, logs.all())
		}
	})
}

// replicaRecorder is a ReplicaWaiter over the memory hub that records the
// republished frames written without NoWait and the partitions
// AwaitReplicas is asked about.
type replicaRecorder struct {
	Transport
	mu          sync.Mutex
	republished int
	waited      int // republished frames that would have waited for replicas
	awaited     map[int]int
}

func (rr *replicaRecorder) Publish(ctx context.Context, frames []Frame) error {
	rr.mu.Lock()
	for _, f := range frames {
		if !f.Probe && len(f.Data) > 1 && f.Data[1] == byte(kindRepublished) {
			rr.republished++
			if !f.NoWait {
				rr.waited++
			}
		}
	}
	rr.mu.Unlock()
	return rr.Transport.Publish(ctx, frames)
}

func (rr *replicaRecorder) AwaitReplicas(ctx context.Context, partitions []int) error {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	for _, p := range partitions {
		rr.awaited[p]++
	}
	return nil
}

// TestRepublishDoesNotWaitPerBatch: with a transport that waits for replicas,
// republished frames go out without waiting for them per batch (after a
// failover the replicas are behind, and thousands of retained messages would
// hold everything newer back), and the sender waits for their replicas
// afterwards, once per partition, so the transport stops guarding them.
func TestRepublishDoesNotWaitPerBatch(t *testing.T) {
	const n = 300 // several batches
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		rr := &replicaRecorder{Transport: hub.Transport(), awaited: make(map[int]int)}
		a := newBusOn(t, rr, Config{NodeID: "a", BatchSize: 64})
		time.Sleep(2 * time.Second)
		synctestWait()
		publishRange(t, a, "k", "a", 1, n)
		time.Sleep(time.Second)
		synctestWait()
		outage(hub, -1, 0, 3*time.Second, 3*time.Second)
		rr.mu.Lock()
		defer rr.mu.Unlock()
		if rr.republished != n || rr.waited != 0 {
			t.Fatalf("%d republished frames, %d of them waiting for replicas; want %d, 0", rr.republished, rr.waited, n)
		}
		if got := rr.awaited[a.PartitionOf("k")]; got != 1 {
			t.Fatalf("AwaitReplicas asked %d times about the republished partition, want 1 (%v)", got, rr.awaited)
		}
		if s := a.Stats(); s.Republished != n || s.Republishes != 1 {
			t.Fatalf("republished %d in %d, want %d in 1", s.Republished, s.Republishes, n)
		}
	})
}

// TestRepublishOnlyWhatBrokerLacks: over a transport that can tell what the
// broker holds (SurvivorFinder), an outage that loses nothing (a network cut)
// republishes nothing, and one that loses the last m messages of one
// partition republishes exactly those m, not the other partitions' retained
// messages nor the older ones of that partition. Receivers get every message
// once, in order, with no gap. Before SurvivorFinder the bus published the
// whole retention window again both times.
func TestRepublishOnlyWhatBrokerLacks(t *testing.T) {
	const keys, perRound, m = 7, 70, 6
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		logs := newLogCounter()
		a, r, s := pairOn(t, hub, hub.Transport(), Config{Logger: slogNew(logs)})
		n := 0
		publish := func(count int, key func(i int) string) {
			t.Helper()
			for range count {
				n++
				if err := a.Publish(t.Context(), key(n), payload("a", n)); err != nil {
					t.Fatal(err)
				}
			}
			s.wait(t, n, time.Minute)
			synctestWait()
		}
		spread := func(i int) string { return fmt.Sprint("key", i%keys) }
		publish(perRound, spread)
		outage(hub, -1, 0, 3*time.Second, 3*time.Second) // a network cut
		publish(perRound, spread)
		if st := a.Stats(); st.Republished != 0 || st.Reconnects == 0 {
			t.Fatalf("after a cut that lost nothing: republished %d, reconnects %d; want 0, > 0", st.Republished, st.Reconnects)
		}
		if c := logs.count(stillHeldLog); c != 1 {
			t.Fatalf("%d %q logs, want 1: %v", c, stillHeldLog, logs.all())
		}
		// The broker loses the last m messages of key0's partition.
		p := a.PartitionOf("key0")
		saved := hub.end(p)
		publish(m, func(int) string { return "key0" })
		outage(hub, p, saved, 3*time.Second, 3*time.Second)
		publish(perRound, spread)
		time.Sleep(3 * time.Second)
		synctestWait()
		if st := a.Stats(); st.Republished != m || st.Republishes != 1 {
			t.Fatalf("after losing %d: republished %d in %d, want %d in 1", m, st.Republished, st.Republishes, m)
		}
		checkStreams(t, s.all(), map[string]int{"a": n})
		if st := r.Stats(); st.Gaps != 0 || st.Duplicates != m || st.Received != uint64(n) {
			t.Fatalf("receiver %+v, want %d duplicates (it had read the lost ones), no gap", st, m)
		}
	})
}

// A broker that held everything through one break can still lose it in the
// next (a failover right after a restart): what it held is retained for a new
// window from the republish, although nothing was published again.
func TestHeldRetainedForANewWindow(t *testing.T) {
	const m = 6
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		a, r, s := pairOn(t, hub, hub.Transport(), Config{})
		p := a.PartitionOf("k")
		saved := hub.end(p)
		publishRange(t, a, "k", "a", 1, m)
		s.wait(t, m, time.Minute)
		// A cut longer than the window that loses nothing: nothing goes
		// out again.
		outage(hub, -1, 0, 2*DefaultRetainWindow, time.Second)
		if st := a.Stats(); st.Republished != 0 || st.Reconnects == 0 {
			t.Fatalf("after a cut that lost nothing: republished %d, reconnects %d; want 0, > 0", st.Republished, st.Reconnects)
		}
		// Then the broker loses them.
		outage(hub, p, saved, time.Second, 3*time.Second)
		if st := a.Stats(); st.Republished != m {
			t.Fatalf("after the broker lost the %d messages it held through the first break: republished %d", m, st.Republished)
		}
		if st := r.Stats(); st.Gaps != 0 {
			t.Fatalf("receiver reported %d gaps", st.Gaps)
		}
	})
}

// stalledSurvivor is a transport whose broker never answers which messages
// it still holds.
type stalledSurvivor struct{ Transport }

func (stalledSurvivor) FindSurvivor(ctx context.Context, _, _ int, _ func([]byte) int) (int, error) {
	<-ctx.Done()
	return -1, ctx.Err()
}

// A check of what the broker holds that runs out of time does not hold
// publishing up: the retained messages go out again whole, as without it.
func TestSurvivorCheckOutOfTime(t *testing.T) {
	const m = 6
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		a, _, s := pairOn(t, hub, stalledSurvivor{hub.Transport()}, Config{})
		publishRange(t, a, "k", "a", 1, m)
		s.wait(t, m, time.Minute)
		outage(hub, -1, 0, time.Second, time.Second)
		publishRange(t, a, "k", "a", m+1, m+1)
		s.wait(t, m+1, time.Minute)
		if st := a.Stats(); st.Republished != m {
			t.Fatalf("republished %d, want the %d retained", st.Republished, m)
		}
	})
}
