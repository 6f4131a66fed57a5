//go:build long

package redisbus

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

// TestReplayAfterOutageAtLoad, a long load scenario built only with the tag
// long (go test -tags long -run TestReplayAfterOutageAtLoad ./bus/redisbus):
// three publishers at 12 000 events/s each on one namespace (one partition),
// Redis killed for 4 s and restarted from its AOF, a receiver whose handler costs 20 µs per message.
// The replay of the three outboxes must still be in the stream when the slow
// receiver reads it: every accepted message arrives, none is reported lost.
func TestReplayAfterOutageAtLoad(t *testing.T) {
	srv := redistest.Standalone(t, redistest.WithAOF())
	o := faultOpts(Streams)
	o.Prefix = "replay-load"
	pubs := []*bus.Reliable{openBus(t, srv.URL(), o, "p0"), openBus(t, srv.URL(), o, "p1"), openBus(t, srv.URL(), o, "p2")}
	recv := openBus(t, srv.URL(), o, "r")
	var mu sync.Mutex
	next := map[string]uint64{}
	var received, outOfOrder atomic.Int64
	recv.Receive(func(m bus.Message) {
		t0 := time.Now()
		for time.Since(t0) < 20*time.Microsecond {
		}
		mu.Lock()
		if m.Seq != next[m.Origin]+1 && next[m.Origin] != 0 {
			outOfOrder.Add(1)
		}
		next[m.Origin] = m.Seq
		mu.Unlock()
		if len(m.Payload) > 0 && m.Payload[0] == 'e' {
			received.Add(1)
		}
	})
	for _, p := range pubs {
		p.Receive(func(bus.Message) {})
	}
	// The receiver reads from when its bus first reached Redis: wait until it
	// has a message of every publisher.
	for _, p := range pubs {
		deadline := time.Now().Add(waitLong)
		for {
			if err := p.Publish(context.Background(), "ns", []byte("warm")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			seen := next[p.NodeID()] > 0
			mu.Unlock()
			if seen {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("receiver has nothing of %s", p.NodeID())
			}
		}
	}
	const rate, run = 12_000, 12 * time.Second
	ctx := context.Background()
	var accepted atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			i := 0
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				for range rate / 1000 {
					if err := p.Publish(ctx, "ns", []byte("e"+strconv.Itoa(i))); err == nil {
						accepted.Add(1)
					}
					i++
				}
			}
		}()
	}
	time.Sleep(3 * time.Second)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(run - 7*time.Second)
	close(stop)
	wg.Wait()
	deadline := time.Now().Add(time.Minute)
	for received.Load() < accepted.Load() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // duplicates or extras would show now
	s := recv.Stats()
	var dropped uint64
	for _, p := range pubs {
		ps := p.Stats()
		dropped += ps.DroppedMaxAge + ps.DroppedOverflow
	}
	for _, p := range pubs {
		t.Logf("%s: status %+v stats %+v", p.NodeID(), p.Status(), p.Stats())
	}
	mu.Lock()
	t.Logf("receiver last seqs %v; status %+v; stats %+v", next, recv.Status(), s)
	mu.Unlock()
	t.Logf("accepted %d, received %d, out of order %d, receiver gaps %d (%d messages), publishers dropped %d",
		accepted.Load(), received.Load(), outOfOrder.Load(), s.Gaps, s.GapMessages, dropped)
	if received.Load() != accepted.Load() || outOfOrder.Load() != 0 || s.GapMessages != 0 || dropped != 0 {
		t.Errorf("lost or reordered messages: accepted %d, received %d, out of order %d, gap messages %d, dropped %d",
			accepted.Load(), received.Load(), outOfOrder.Load(), s.GapMessages, dropped)
	}
}
