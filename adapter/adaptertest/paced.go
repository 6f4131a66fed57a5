package adaptertest

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/durasock/durasock/adapter"
)

// testBroadcastPaced: a delivery that may wait (BroadcastPaced, or a cluster
// node applying what another node broadcast) waits for a socket whose send
// queue is full (Socket.Hold) instead of overflowing it, ends when the socket
// takes it, the adapter closes or ctx ends, and keeps order; the node's own
// broadcasts never wait.
func testBroadcastPaced(t *testing.T, s *suite) {
	c := s.cluster(t, s.nodes())
	paced, direct := c.nodes[0].a.(adapter.PacedBroadcaster)
	if !direct && len(c.nodes) < 2 {
		t.Skip("a single-node adapter without adapter.PacedBroadcaster has no delivery that may wait")
	}
	// The receiving node: node 1 in a cluster, node 0 for a direct call.
	recvNode := 0
	if !direct {
		recvNode = 1
	}
	held := c.connect(recvNode, "held", "a")
	free := c.connect(recvNode, "free", "a")
	held.Hold()
	deliver := func(seq int) <-chan error {
		done := make(chan error, 1)
		p := packet(t, "paced", seq)
		go func() {
			if direct {
				_, err := paced.BroadcastPaced(c.ctx, p, adapter.Options{Rooms: []string{"a"}})
				done <- err
				return
			}
			done <- c.nodes[0].a.Broadcast(c.ctx, p, adapter.Options{Rooms: []string{"a"}})
		}()
		return done
	}
	first := deliver(0)
	if err := held.WaitState(c.ctx, func(so *Socket) bool { return so.Pacing() == 1 }); err != nil {
		t.Fatalf("the delivery does not wait for the held socket: %v", err)
	}
	// The node's own broadcast to the held socket does not wait.
	if err := c.nodes[recvNode].a.Broadcast(c.ctx, packet(t, "own"), adapter.Options{Rooms: []string{"a"}, Local: true}); err != nil {
		t.Fatalf("own broadcast while a delivery waits: %v", err)
	}
	if _, err := held.WaitFor(c.ctx, func(ms []Message) bool { return countEvent(ms, "own") == 1 }); err != nil {
		t.Fatalf("own broadcast did not reach the held socket while the delivery waits: %v", err)
	}
	want := 1
	if !direct {
		if err := <-first; err != nil { // accepted by the bus; the wait is on node 1
			t.Fatalf("Broadcast: %v", err)
		}
		first = nil
		if err := c.nodes[0].a.Broadcast(c.ctx, packet(t, "paced", 1), adapter.Options{Rooms: []string{"a"}}); err != nil {
			t.Fatalf("Broadcast: %v", err)
		}
		want = 2
	}
	if n := countEvent(held.Messages(), "paced"); n != 0 {
		t.Fatalf("held socket got %d paced events while held", n)
	}
	held.Release()
	if first != nil {
		if err := <-first; err != nil {
			t.Fatalf("BroadcastPaced after Release: %v", err)
		}
	}
	for _, so := range []*Socket{held, free} {
		got, err := so.WaitFor(c.ctx, func(ms []Message) bool { return countEvent(ms, "paced") == want })
		if err != nil {
			t.Fatalf("socket %s: %d of %d paced events: %v", so.ID(), countEvent(got, "paced"), want, err)
		}
		seq := 0
		for _, m := range got {
			if m.Event != "paced" {
				continue
			}
			if len(m.Args) != 1 || string(m.Args[0]) != strconv.Itoa(seq) {
				t.Errorf("socket %s: paced event %s, want %d", so.ID(), m.Args, seq)
			}
			seq++
		}
	}
	if !direct {
		return
	}

	// A wait ends with ctx, then with Close.
	held.Hold()
	ctx, cancel := context.WithCancel(c.ctx)
	done := make(chan error, 1)
	go func() {
		_, err := paced.BroadcastPaced(ctx, packet(t, "cancelled"), adapter.Options{Rooms: []string{"a"}})
		done <- err
	}()
	if err := held.WaitState(c.ctx, func(so *Socket) bool { return so.Pacing() == 1 }); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("BroadcastPaced after cancel = %v, want context.Canceled", err)
	}
	go func() {
		_, err := paced.BroadcastPaced(c.ctx, packet(t, "closed"), adapter.Options{Rooms: []string{"a"}})
		done <- err
	}()
	if err := held.WaitState(c.ctx, func(so *Socket) bool { return so.Pacing() == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[0].a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, adapter.ErrClosed) {
		t.Fatalf("BroadcastPaced after Close = %v, want ErrClosed", err)
	}
	if n := countEvent(held.Messages(), "closed") + countEvent(held.Messages(), "cancelled"); n != 0 {
		t.Errorf("held socket got %d events of interrupted deliveries", n)
	}
}

func countEvent(ms []Message, event string) int {
	n := 0
	for _, m := range ms {
		if m.Event == event {
			n++
		}
	}
	return n
}
