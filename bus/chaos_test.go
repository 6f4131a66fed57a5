package bus

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/testwait"
)

// TestConcurrentPublishers: many goroutines of one node publish at once; every
// receiver gets each message once, and per partition in seq order without holes.
func TestConcurrentPublishers(t *testing.T) {
	hub := NewMemoryHub()
	a := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1})
	r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
	sr := newSink()
	r.Receive(sr.handle)
	const workers, per = 8, 250
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= per; i++ {
				if err := a.Publish(context.Background(), fmt.Sprint("key", i%7), payload("a", w*per+i)); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := sr.wait(t, workers*per, 10*time.Second)
	next := make(map[int]uint64)
	seen := make(map[string]bool)
	for _, m := range got {
		if m.Seq != next[m.Partition]+1 {
			t.Fatalf("partition %d: seq %d after %d", m.Partition, m.Seq, next[m.Partition])
		}
		next[m.Partition] = m.Seq
		if seen[string(m.Payload)] {
			t.Fatalf("payload %q twice", m.Payload)
		}
		seen[string(m.Payload)] = true
	}
	if s := r.Stats(); s.Duplicates != 0 || s.Gaps != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestChaos: three nodes publish continuously while the broker goes down and up,
// fails publishes after writing, and silently kills subscriptions, at random.
// Afterwards every node has every message of the others exactly once, in order.
// With lose, the broker also forgets its log now and then: then what arrives is
// still in order and never doubled, and every message is either delivered or
// reported missing in a gap.
func TestChaos(t *testing.T) {
	for _, lose := range []bool{false, true} {
		t.Run(fmt.Sprint("lose=", lose), func(t *testing.T) { chaos(t, lose) })
	}
}

func chaos(t *testing.T, lose bool) {
	hub := NewMemoryHub()
	nodes := []string{"a", "b", "c"}
	buses := make(map[string]*Reliable)
	sinks := make(map[string]*sink)
	var gapMu sync.Mutex
	missing := make(map[[2]string]uint64) // receiver, origin -> missing messages
	for _, n := range nodes {
		sinks[n] = newSink()
		buses[n] = newBus(t, hub, Config{NodeID: n, ProbeInterval: 20 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond,
			Backoff: BackoffConfig{Base: time.Millisecond, Cap: 20 * time.Millisecond}, BatchSize: 32,
			OnGap: func(g Gap) {
				gapMu.Lock()
				missing[[2]string{n, g.Origin}] += g.Missing
				gapMu.Unlock()
			}})
		buses[n].Receive(sinks[n].handle)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	// A first message from everyone on every key before the chaos: a receiver
	// needs a baseline per stream to see a loss as a gap.
	const keys = 4
	published := make(map[string]int)
	for _, n := range nodes {
		for i := 1; i <= keys; i++ {
			if err := buses[n].Publish(context.Background(), fmt.Sprint("room", i%keys), payload(n, i)); err != nil {
				t.Fatal(err)
			}
		}
		published[n] = keys
	}
	for _, n := range nodes {
		sinks[n].wait(t, keys*(len(nodes)-1), 10*time.Second)
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var pubMu sync.Mutex
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(200 * time.Microsecond)
			defer tick.Stop()
			for i := keys + 1; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if err := buses[n].Publish(context.Background(), fmt.Sprint("room", i%keys), payload(n, i)); err != nil {
					t.Errorf("%s Publish %d: %v", n, i, err)
					return
				}
				pubMu.Lock()
				published[n] = i
				pubMu.Unlock()
			}
		}()
	}
	faults := 0
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		switch k := rng.IntN(4); {
		case k == 0:
			hub.setDown(true)
			time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
			hub.setDown(false)
		case k == 1:
			hub.failNextWrites(1 + rng.IntN(3))
		case k == 2:
			hub.breakSubscriptions()
		case k == 3 && lose:
			hub.lose()
		}
		faults++
		time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
	}
	hub.setDown(false)
	hub.failNextWrites(0)
	// A tail after the chaos, so that losses at the end show up as gaps too.
	time.Sleep(50 * time.Millisecond)
	stop()
	wg.Wait()
	for _, n := range nodes {
		for i := published[n] + 1; i <= published[n]+10; i++ {
			if err := buses[n].Publish(context.Background(), fmt.Sprint("room", i%keys), payload(n, i)); err != nil {
				t.Fatal(err)
			}
		}
		published[n] += 10
	}
	t.Logf("%d faults; published %v", faults, published)

	for _, n := range nodes {
		want := make(map[string]int)
		total := 0
		for _, o := range nodes {
			if o != n {
				want[o] = published[o]
				total += published[o]
			}
		}
		if !lose {
			checkStreams(t, sinks[n].wait(t, total, 30*time.Second), want)
			continue
		}
		// Delivered plus reported missing covers everything, in order, no doubles.
		testwait.For(t, 30*time.Second, n+" to account for every message", func() bool {
			gapMu.Lock()
			defer gapMu.Unlock()
			got := uint64(sinks[n].len())
			for o := range want {
				got += missing[[2]string{n, o}]
			}
			return got >= uint64(total)
		})
		msgs := sinks[n].all()
		lastSeq := make(map[[2]string]uint64)
		count := make(map[string]uint64)
		for _, m := range msgs {
			k := [2]string{m.Origin, fmt.Sprint(m.Partition)}
			if m.Seq <= lastSeq[k] {
				t.Fatalf("%s: %s partition %d seq %d after %d", n, m.Origin, m.Partition, m.Seq, lastSeq[k])
			}
			lastSeq[k] = m.Seq
			count[m.Origin]++
		}
		gapMu.Lock()
		for o, w := range want {
			if got := count[o] + missing[[2]string{n, o}]; got != uint64(w) {
				t.Errorf("%s from %s: %d delivered + %d missing = %d, want %d", n, o, count[o], missing[[2]string{n, o}], got, w)
			}
		}
		gapMu.Unlock()
	}
	for _, n := range nodes {
		s := buses[n].Stats()
		t.Logf("%s: %+v", n, s)
		if s.DroppedMaxAge+s.DroppedOverflow != 0 {
			t.Fatalf("%s dropped messages within its bounds: %+v", n, s)
		}
	}
}
