package bus

import (
	"context"
	"sync"
	"testing"
	"time"
)

// pubsubNet turns a MemoryHub into a pub/sub-like broker for the tests: a
// subscription exists only subscribeDelay after its Subscribe call started
// (the broker confirms SUBSCRIBE late on a loaded machine or a cluster of
// several shards), and what is published while a node's subscription does not
// exist is lost for that node, as on Redis pub/sub.
type pubsubNet struct {
	hub *MemoryHub

	mu   sync.Mutex
	subs map[*pubsubTransport]bool // live subscriptions
}

func newPubSubNet(hub *MemoryHub) *pubsubNet {
	return &pubsubNet{hub: hub, subs: make(map[*pubsubTransport]bool)}
}

type pubsubTransport struct {
	Transport
	net            *pubsubNet
	subscribeDelay time.Duration

	lost map[string]bool // frames published while this node's subscription did not exist; under net.mu
}

func (n *pubsubNet) transport(subscribeDelay time.Duration) *pubsubTransport {
	t := &pubsubTransport{Transport: n.hub.Transport(), net: n, subscribeDelay: subscribeDelay, lost: make(map[string]bool)}
	n.mu.Lock()
	n.subs[t] = false
	n.mu.Unlock()
	return t
}

func (t *pubsubTransport) Publish(ctx context.Context, frames []Frame) error {
	t.net.mu.Lock()
	for s, live := range t.net.subs {
		if !live {
			for _, f := range frames {
				s.lost[string(f.Data)] = true
			}
		}
	}
	t.net.mu.Unlock()
	return t.Transport.Publish(ctx, frames)
}

func (t *pubsubTransport) Subscribe(ctx context.Context, nodeID string, deliver func(Frame)) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(t.subscribeDelay):
	}
	t.net.mu.Lock()
	t.net.subs[t] = true
	t.net.mu.Unlock()
	defer func() {
		t.net.mu.Lock()
		t.net.subs[t] = false
		t.net.mu.Unlock()
	}()
	return t.Transport.Subscribe(ctx, nodeID, func(f Frame) {
		if f.Partition >= 0 {
			t.net.mu.Lock()
			lost := t.lost[string(f.Data)]
			t.net.mu.Unlock()
			if lost {
				return
			}
		}
		deliver(f)
	})
}

// TestProbeWarmUpOnPubSub: on a pub/sub-like broker, a node whose subscription
// exists only after its first probe round was published misses that round
// while other nodes' frames keep arriving. That is a warm-up, not a dead
// subscription: the node starts a new round at once and rebuilds nothing (a
// rebuild would lose what is published meanwhile).
func TestProbeWarmUpOnPubSub(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		net := newPubSubNet(NewMemoryHub())
		newPubSubBus := func(id string, delay time.Duration, logs *logCounter) *Reliable {
			cfg := Config{NodeID: id}
			if logs != nil {
				cfg.Logger = slogNew(logs)
			}
			return newBusOn(t, net.transport(delay), cfg)
		}
		a := newPubSubBus("a", 0, nil)
		a.Receive(func(Message) {}) // a probes every partition every second
		time.Sleep(2 * time.Second)
		synctestWait()

		logs := newLogCounter()
		r := newPubSubBus("r", 1500*time.Millisecond, logs)
		sr := newSink()
		r.Receive(sr.handle)
		time.Sleep(2 * time.Second) // r's subscription exists
		synctestWait()
		const n = 400
		for i := 1; i <= n; i++ { // 40 s of traffic
			if err := a.Publish(context.Background(), "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		synctestWait()
		if s := r.Stats(); s.ProbeFailures != 0 || s.Reconnects != 0 {
			t.Errorf("stats %+v; logs %q", s, logs.all())
		}
		if got := logs.count("bus liveness probe missed; rebuilding the subscription"); got != 0 {
			t.Errorf("%d rebuilds: %q", got, logs.all())
		}
		checkStreams(t, sr.all(), map[string]int{"a": n})
	})
}
