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

// kill makes t's live subscription silently dead, as a pub/sub connection
// that stays open while Redis no longer sends to it: what is published from
// now on is lost for it.
func (t *pubsubTransport) kill() {
	t.net.mu.Lock()
	t.net.subs[t] = false
	t.net.mu.Unlock()
}

// slowPing answers pings after a millisecond (a round trip to Redis), so that
// the prober's next round begins after the receiver subscribed again.
type slowPing struct{ *pubsubTransport }

func (s slowPing) Ping(ctx context.Context) error {
	time.Sleep(time.Millisecond)
	return s.pubsubTransport.Ping(ctx)
}

// TestNoFalseGoneAfterRebuildOnPubSub: r's pub/sub subscription dies
// silently; its prober finds that and rebuilds it. Node a probed all along:
// the silence r counted while its subscription was dead is not a's, and a is
// not reported gone when the first round under the new subscription comes
// back (before any probe of a could reach it), with a new subscription that
// goes live at once or after a while.
func TestNoFalseGoneAfterRebuildOnPubSub(t *testing.T) {
	for _, delay := range []time.Duration{0, 10 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			synctestRun(t, func(t *testing.T) {
				net := newPubSubNet(NewMemoryHub())
				a := newBusOn(t, net.transport(0), Config{NodeID: "a"})
				a.Receive(func(Message) {})
				logs := newLogCounter()
				rt := net.transport(delay)
				r := newBusOn(t, slowPing{rt}, Config{NodeID: "r", Logger: slogNew(logs)})
				r.Receive(func(Message) {})
				time.Sleep(5500 * time.Millisecond)
				synctestWait()
				if st := r.Status(); st.State != Connected || len(st.Nodes) != 1 {
					t.Fatalf("before: %+v", st)
				}
				rt.kill()
				time.Sleep(10 * time.Second)
				synctestWait()
				s := r.Stats()
				if s.ProbeFailures == 0 {
					t.Fatalf("the dead subscription was not found: %+v", s)
				}
				if s.NodesGoneSilent != 0 {
					t.Errorf("a reported gone %d times although it probed all along; logs %q", s.NodesGoneSilent, logs.all())
				}
			})
		})
	}
}

// TestConnectedSoonAfterRebuild: a lone pub/sub node whose subscription died
// silently is rebuilt by its prober; the round after the rebuild is a
// warm-up whichever subscription it finds, so the node is Connected again
// within a few warm-up rounds (virtual time), not after another ProbeTimeout.
func TestConnectedSoonAfterRebuild(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		net := newPubSubNet(NewMemoryHub())
		rt := net.transport(10 * time.Millisecond)
		r := newBusOn(t, rt, Config{NodeID: "r"})
		r.Receive(func(Message) {})
		time.Sleep(2 * time.Second)
		synctestWait()
		if st := r.Status(); st.State != Connected {
			t.Fatalf("before: %+v", st)
		}
		rt.kill()
		for r.Stats().ProbeFailures == 0 {
			time.Sleep(time.Millisecond)
		}
		rebuilt := time.Now()
		for r.Status().State != Connected {
			time.Sleep(time.Millisecond)
		}
		if d := time.Since(rebuilt); d > 500*time.Millisecond {
			t.Errorf("Connected %v after the rebuild (virtual time), want a few warm-up rounds", d)
		}
	})
}
