package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
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
	return reliableBus(t, hub.Transport(), id)
}

// reliableBus returns the reliable bus of node id over tr.
func reliableBus(t testing.TB, tr bus.Transport, id string) bus.Bus {
	t.Helper()
	b, err := bus.New(tr, &bus.Config{NodeID: id, Logger: quietLogger})
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

// memoryNodes starts n nodes on a fresh MemoryHub, reached through a switch
// that can take the broker away from all of them.
func memoryNodes(t testing.TB, n int, opts *Options) (*brokerSwitch, []*Cluster) {
	return memoryNodesConfig(t, n, opts, bus.MemoryHubConfig{})
}

// memoryNodesConfig is memoryNodes on a hub configured by cfg.
func memoryNodesConfig(t testing.TB, n int, opts *Options, cfg bus.MemoryHubConfig) (*brokerSwitch, []*Cluster) {
	hub, sw := bus.NewMemoryHubConfig(cfg), new(brokerSwitch)
	return sw, startNodes(t, n, opts, func(id string) bus.Bus { return reliableBus(t, sw.wrap(hub.Transport()), id) })
}

// waitSettled waits, on clusters that route, until every node has applied
// every other's interest in namespace nsp as it is now (AwaitRouting): with
// interest routing a join counts on another node once announced there.
// Without routing it returns at once.
func waitSettled(t testing.TB, cs []*Cluster, nsp string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, c := range cs {
		if err := c.AwaitRouting(ctx, nsp); err != nil {
			t.Fatalf("%s: AwaitRouting(%q): %v", c.NodeID(), nsp, err)
		}
	}
}

// errBrokerDown is what a switched transport answers while its switch is down.
var errBrokerDown = errors.New("test: broker down")

// brokerSwitch takes the broker away from the transports it wraps and gives it
// back, as a network outage does: while it is down every call fails and the
// running subscriptions end; what the broker kept stays.
type brokerSwitch struct {
	mu   sync.Mutex
	down bool
	subs map[*context.CancelFunc]struct{} // of the running subscriptions
}

// setDown takes the broker away (true) or gives it back.
func (s *brokerSwitch) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
	if down {
		for cancel := range s.subs {
			(*cancel)()
		}
	}
}

func (s *brokerSwitch) isDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

func (s *brokerSwitch) wrap(t bus.Transport) bus.Transport { return &switchedTransport{t, s} }

// switchedTransport is a Transport behind a brokerSwitch.
type switchedTransport struct {
	bus.Transport
	sw *brokerSwitch
}

func (t *switchedTransport) Publish(ctx context.Context, frames []bus.Frame) error {
	if t.sw.isDown() {
		return errBrokerDown
	}
	return t.Transport.Publish(ctx, frames)
}

func (t *switchedTransport) Send(ctx context.Context, to string, data []byte) error {
	if t.sw.isDown() {
		return errBrokerDown
	}
	return t.Transport.Send(ctx, to, data)
}

func (t *switchedTransport) Ping(ctx context.Context) error {
	if t.sw.isDown() {
		return errBrokerDown
	}
	return t.Transport.Ping(ctx)
}

func (t *switchedTransport) Subscribe(ctx context.Context, nodeID string, deliver func(bus.Frame)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sw := t.sw
	sw.mu.Lock()
	if sw.down {
		sw.mu.Unlock()
		return errBrokerDown
	}
	if sw.subs == nil {
		sw.subs = make(map[*context.CancelFunc]struct{})
	}
	sw.subs[&cancel] = struct{}{}
	sw.mu.Unlock()
	err := t.Transport.Subscribe(ctx, nodeID, deliver)
	sw.mu.Lock()
	delete(sw.subs, &cancel)
	down := sw.down
	sw.mu.Unlock()
	if down && context.Cause(ctx) == context.Canceled {
		return errBrokerDown
	}
	return err
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

// Inboxes and ReadPartitions pass the inbox partitions of the switched
// transport through (bus.Inboxer).
func (t *switchedTransport) Inboxes() int {
	if ib, ok := t.Transport.(bus.Inboxer); ok {
		return ib.Inboxes()
	}
	return 0
}

func (t *switchedTransport) ReadPartitions(parts []int) {
	if ib, ok := t.Transport.(bus.Inboxer); ok {
		ib.ReadPartitions(parts)
	}
}
