package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/parser"
)

// dropHeartbeats drops the direct messages of node from that make it known
// (heartbeats, interest, peers): the node is heard by the bus, not by the
// cluster.
type dropHeartbeats struct {
	*bus.Reliable
	from string
}

func (b *dropHeartbeats) Receive(h bus.Handler) {
	b.Reliable.Receive(func(m bus.Message) {
		if m.Seq == 0 && m.Origin == b.from {
			if dm, err := decodeMessage(m.Payload); err == nil && (dm.kind == kindHeartbeat || dm.kind == kindInterest || dm.kind == kindPeers || dm.kind == kindInterestApplied) {
				return
			}
		}
		h(m)
	})
}

// A request (here a broadcast with acks) reaches a node the bus has heard and
// the cluster not yet, as a plain broadcast does: the node's socket gets the
// packet, and its reply is taken when it arrives while the request waits (it
// is not waited for: an emitter process is such a node, and never answers).
func TestRoutingRequestReachesBusHeardNode(t *testing.T) {
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	opts := routingOptions()
	opts.Logger = quietLogger
	mk := func(id string, wrap bool) *Cluster {
		b := reliableBus(t, hub.Transport(), id).(*bus.Reliable)
		var bb bus.Bus = b
		if wrap {
			bb = &dropHeartbeats{Reliable: b, from: "node-1"}
		}
		o := *opts
		c, err := New(bb, &o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			_ = c.Close(ctx)
			_ = b.Close(ctx)
		})
		return c
	}
	c0, c1 := mk("node-0", true), mk("node-1", false)
	ns := bind(t, []*Cluster{c0, c1}, "/")
	s := connect(ns[1], sid("b"), "r")
	testwait.For(t, waitTimeout, "node-0's bus to hear node-1", func() bool {
		return slices.Contains(c0.bus.Status().Nodes, "node-1")
	})
	if slices.Contains(c0.liveNodes(), "node-1") {
		t.Fatal("node-1 is live on node-0: the test proves nothing")
	}
	emit(t, ns[0].a, "plain", 0, "r")
	if _, err := s.WaitMessages(testCtx(t), 1); err != nil {
		t.Fatalf("plain broadcast did not reach node-1: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p := &parser.Packet{Type: parser.Event, Namespace: "/", Data: []byte(`["withack",0]`)}
	replies, err := ns[0].a.BroadcastWithAck(ctx, p, adapter.Options{Rooms: []string{"r"}})
	if err != nil || len(replies) > 1 {
		t.Errorf("broadcast with acks to room r: %d replies, err %v; want at most 1 (node-1 is not waited for), no error", len(replies), err)
	}
	msgs, err := s.WaitMessages(testCtx(t), 2)
	if err != nil {
		t.Fatalf("node-1's socket got %d of 2 packets (the plain broadcast reached it, the one with acks not): %v", len(s.Messages()), err)
	}
	if got := msgs[1].Event; got != "withack" {
		t.Errorf("node-1's second packet %s, want the broadcast with acks", got)
	}
}

// AwaitRouting waits for the nodes heard by heartbeat only: a bus client that
// is no cluster node (an emitter process), which never answers, does not hold
// it back.
func TestRoutingAwaitIgnoresEmitter(t *testing.T) {
	opts := routingOptions()
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	cs := startNodes(t, 2, opts, func(id string) bus.Bus { return reliableBus(t, hub.Transport(), id) })
	bind(t, cs, "/")
	other, err := bus.New(hub.Transport(), &bus.Config{NodeID: "emitter", Logger: quietLogger, ProbeInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	other.Receive(func(bus.Message) {})
	keepPublishing(t, other)
	testwait.For(t, waitTimeout, "node 0's bus to hear the emitter", func() bool {
		return slices.Contains(cs[0].bus.Status().Nodes, "emitter")
	})
	// Far below NodeTimeout, after which an emitter stops counting anyway.
	ctx, cancel := context.WithTimeout(context.Background(), cs[0].opts.NodeTimeout/2)
	defer cancel()
	if err := cs[0].AwaitRouting(ctx, "/"); err != nil {
		t.Errorf("AwaitRouting with node-1 live and an emitter on the bus: %v", err)
	}
}

// keepPublishing publishes from b every 50 ms until the test ends: a bus
// with inboxes is heard by the nodes it writes to (its round-trip probes go
// to its own inbox), as an emitter process is by the nodes reading what it
// emits.
func keepPublishing(t *testing.T, b *bus.Reliable) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = b.Publish(ctx, "k", []byte("x"))
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}
