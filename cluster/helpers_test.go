package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/testwait"
)

// waitTimeout bounds every wait for a condition in these tests. Tests never
// assert speed: a condition only has to hold by then.
const waitTimeout = 30 * time.Second

// quietLogger drops the log lines of the nodes of a test.
var quietLogger = slog.New(slog.DiscardHandler)

// memoryBus returns the reliable bus of node id on hub.
func memoryBus(t testing.TB, hub *bus.MemoryHub, id string) bus.Bus {
	t.Helper()
	b, err := bus.New(hub.Transport(), bus.Config{NodeID: id, Logger: quietLogger})
	if err != nil {
		t.Fatalf("bus.New: %v", err)
	}
	return b
}

// startNodes starts n Clusters, each on its own bus from newBus, waits until
// every node knows every other, and closes them all at the end of the test.
func startNodes(t testing.TB, n int, opts *Options, newBus func(id string) bus.Bus) []*Cluster {
	t.Helper()
	cs := make([]*Cluster, n)
	for i := range cs {
		b := newBus(fmt.Sprintf("node-%d", i))
		o := Options{Logger: quietLogger}
		if opts != nil {
			o = *opts
			if o.Logger == nil {
				o.Logger = quietLogger
			}
		}
		c, err := New(b, &o)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		cs[i] = c
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := c.Close(ctx); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := b.Close(ctx); err != nil {
				t.Errorf("bus Close: %v", err)
			}
		})
	}
	waitMesh(t, cs)
	return cs
}

// waitMesh waits until every cluster of cs knows every other one.
func waitMesh(t testing.TB, cs []*Cluster) {
	t.Helper()
	testwait.For(t, waitTimeout, "every node to know every other", func() bool {
		for _, c := range cs {
			for _, o := range cs {
				if o != c && !slices.Contains(c.Nodes(), o.NodeID()) {
					return false
				}
			}
		}
		return true
	})
}

// memoryNodes starts n nodes on a fresh MemoryHub.
func memoryNodes(t testing.TB, n int, opts *Options) (*bus.MemoryHub, []*Cluster) {
	hub := bus.NewMemoryHub()
	return hub, startNodes(t, n, opts, func(id string) bus.Bus { return memoryBus(t, hub, id) })
}

// node is one Cluster with a namespace double bound to its adapter.
type node struct {
	c  *Cluster
	ns *adaptertest.Namespace
	a  adapter.Adapter
}

// bind makes the adapter of namespace name on every cluster.
func bind(t testing.TB, cs []*Cluster, name string) []*node {
	t.Helper()
	out := make([]*node, len(cs))
	for i, c := range cs {
		ns := adaptertest.NewNamespace(name)
		a, err := c.Adapter(ns)
		if err != nil {
			t.Fatalf("Adapter: %v", err)
		}
		ns.Bind(a)
		t.Cleanup(func() {
			if err := a.Close(); err != nil {
				t.Errorf("adapter Close: %v", err)
			}
			ns.Wait()
		})
		out[i] = &node{c: c, ns: ns, a: a}
	}
	return out
}

func connect(n *node, id string, rooms ...string) *adaptertest.Socket {
	return n.ns.Connect(id, adaptertest.SocketOptions{
		Rooms: rooms, Ack: adaptertest.ReplyID,
		Data: []byte(`{"id":"` + id + `"}`),
	})
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}
