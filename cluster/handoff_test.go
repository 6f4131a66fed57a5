package cluster

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/socketio"
)

// A client of a routed namespace moves from node a to node b while all three
// nodes emit to its room without pause (b and d have sockets in it too, so
// that they apply events while the session is restored): it gets every
// node's events exactly once and in order, none lost — after its connection
// broke (a still running), and after a drained (its server shut down, its
// node said goodbye) with a's publisher stopping at the drain.
func TestRecoveryRoutedHandoff(t *testing.T) {
	redis := redistest.Standalone(t)
	for _, drain := range []bool{false, true} {
		name := "connection broke"
		if drain {
			name = "node drained"
		}
		t.Run(name, func(t *testing.T) {
			testRoutedHandoff(t, redis.URL(), drain)
		})
	}
}

func testRoutedHandoff(t *testing.T, url string, drain bool) {
	ctx := testCtx(t)
	nodes := recoveryNodesN(t, 3, recoveryBuses(t, url, true), true, &socketio.RecoveryOptions{MaxMissedPackets: 100000})
	a, b, d := nodes[0], nodes[1], nodes[2]
	c := dialRecovering(t, a.url, "", "")
	a.routed(t)
	for _, n := range []recoveryNode{b, d} {
		w := dialRecovering(t, n.url, "", "")
		n.routed(t)
		go func() { // the watchers' events are read and dropped
			for {
				if _, _, err := w.c.Read(ctx); err != nil {
					return
				}
			}
		}()
	}

	// Each node emits 1, 2, 3, … (times 10^6 plus its index) until stop.
	const base = 1_000_000
	var stop atomic.Bool
	last := make([]atomic.Int64, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := int64(1); !stop.Load(); k++ {
				if err := n.srv.To("room").Emit(ctx, "e", int64(i)*base+k); err != nil {
					return // a node drained
				}
				last[i].Store(k)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	next := make([]int64, len(nodes)) // the next event expected of each node
	for i := range next {
		next[i] = 1
	}
	take := func(r *recoveringClient) {
		t.Helper()
		timer := time.AfterFunc(10*time.Second, func() {
			t.Logf("waiting: next of each node %v, last emitted %d %d %d", next, last[0].Load(), last[1].Load(), last[2].Load())
		})
		defer timer.Stop()
		v := int64(r.event())
		i, k := v/base, v%base
		if i < 0 || int(i) >= len(nodes) || k != next[i] {
			t.Fatalf("event %d of node %d, want %d (next of each node: %v)", k, i, next[max(0, min(int(i), len(nodes)-1))], next)
		}
		next[i]++
	}
	for next[0] < 100 || next[1] < 100 || next[2] < 100 {
		take(c)
	}

	c.c.CloseNow()
	if drain {
		sctx, cancel := context.WithTimeout(ctx, waitTimeout)
		if err := a.srv.Shutdown(sctx); err != nil {
			t.Fatal(err)
		}
		// The others learn a's interest once its server is gone (its
		// sockets left their rooms, its namespace closed), before it says
		// goodbye: the session's rooms are in it still.
		a.routed(t)
		if err := a.c.Close(sctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	testwait.For(t, waitTimeout, "events emitted while the client is away", func() bool {
		return last[1].Load() > next[1]+100 && last[2].Load() > next[2]+100
	})
	back := dialRecovering(t, b.url, c.pid, c.offset)
	if back.id != c.id {
		t.Fatalf("session not recovered\n%s", b.log.find("session"))
	}
	// Past what was emitted while it was away, then the rest once the
	// publishers stopped.
	l1, l2 := last[1].Load(), last[2].Load()
	for next[1] < l1+100 || next[2] < l2+100 {
		take(back)
	}
	stop.Store(true)
	wg.Wait()
	for i := range nodes {
		for next[i] <= last[i].Load() {
			take(back)
		}
	}
	t.Logf("%s: events of a, b, d: %d, %d, %d", map[bool]string{false: "broke", true: "drained"}[drain], last[0].Load(), last[1].Load(), last[2].Load())
}
