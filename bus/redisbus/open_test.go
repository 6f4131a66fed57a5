package redisbus

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// inbox collects the payloads a bus handler receives.
type inbox struct {
	mu     sync.Mutex
	msgs   []bus.Message
	notify chan struct{}
}

func newInbox() *inbox { return &inbox{notify: make(chan struct{})} }

func (in *inbox) handle(m bus.Message) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	close(in.notify)
	in.notify = make(chan struct{})
	in.mu.Unlock()
}

func (in *inbox) await(d time.Duration, cond func([]bus.Message) bool) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		in.mu.Lock()
		ok, ch := cond(in.msgs), in.notify
		in.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

func (in *inbox) snapshot() []bus.Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]bus.Message(nil), in.msgs...)
}

func testBusConfig(node string) bus.Config {
	return bus.Config{
		NodeID:        node,
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  time.Second,
		Backoff:       bus.BackoffConfig{Base: 20 * time.Millisecond, Cap: 200 * time.Millisecond},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// openBus opens a bus for node with the timings of testBusConfig and the
// Registerer and OnGap of o.Bus, closed when the test ends.
func openBus(t *testing.T, url string, o Options, node string) *bus.Reliable {
	t.Helper()
	cfg := testBusConfig(node)
	cfg.Registerer, cfg.OnGap = o.Bus.Registerer, o.Bus.OnGap
	o.Bus = cfg
	b, err := Open(context.Background(), url, &o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// busWarmUp publishes until the receiver has seen a message of pub: from then on
// the receiver's subscription is in place.
func busWarmUp(t *testing.T, pub *bus.Reliable, in *inbox) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for i := 0; ; i++ {
		if err := pub.Publish(context.Background(), "warm", []byte("warm")); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if in.await(200*time.Millisecond, func(ms []bus.Message) bool { return len(ms) > 0 }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message through the bus after %v (status %+v)", waitLong, pub.Status())
		}
	}
}

// checkEvents checks that in holds events "e<i>" 0..n-1 of origin, each once and
// in order, and reports lost, duplicated and reordered counts.
func checkEvents(t *testing.T, msgs []bus.Message, origin string, n int) {
	t.Helper()
	seen := make([]int, n)
	last := -1
	var reordered int
	for _, m := range msgs {
		s, ok := strings.CutPrefix(string(m.Payload), "e")
		if !ok || m.Origin != origin {
			continue
		}
		i, err := strconv.Atoi(s)
		if err != nil || i >= n {
			t.Errorf("unexpected payload %q", m.Payload)
			continue
		}
		seen[i]++
		if i < last {
			reordered++
		}
		last = i
	}
	var lost, dup int
	for _, c := range seen {
		if c == 0 {
			lost++
		}
		if c > 1 {
			dup += c - 1
		}
	}
	if lost+dup+reordered > 0 {
		t.Errorf("%d events: %d lost, %d duplicated, %d reordered", n, lost, dup, reordered)
	}
}

func countEvents(n int) func([]bus.Message) bool {
	return func(ms []bus.Message) bool {
		c := 0
		for _, m := range ms {
			if strings.HasPrefix(string(m.Payload), "e") {
				c++
			}
		}
		return c >= n
	}
}

func TestOpenBus(t *testing.T) {
	srv := redistest.Standalone(t)
	for _, kind := range []Kind{Streams, PubSub} {
		t.Run(kind.String(), func(t *testing.T) {
			o := faultOpts(kind)
			o.Prefix = "open-" + kind.String()
			a, b := openBus(t, srv.URL(), o, "a"), openBus(t, srv.URL(), o, "b")
			in := newInbox()
			b.Receive(in.handle)
			a.Receive(func(bus.Message) {})
			busWarmUp(t, a, in)
			const n = 1000
			for i := range n {
				// One key: one partition, so the order is defined.
				if err := a.Publish(context.Background(), "k", []byte("e"+strconv.Itoa(i))); err != nil {
					t.Fatalf("Publish %d: %v", i, err)
				}
			}
			if !in.await(waitLong, countEvents(n)) {
				t.Fatalf("received %d of %d events", len(in.snapshot()), n)
			}
			checkEvents(t, in.snapshot(), "a", n)
			if st := b.Status(); st.State != bus.Connected {
				t.Errorf("b state %v", st.State)
			}
		})
	}
}

// TestOpenBusSurvivesKill kills Redis (with AOF) while a node publishes at a
// steady rate and restarts it: every event arrives exactly once, in order.
func TestOpenBusSurvivesKill(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithAOF())
	o := faultOpts(Streams)
	a, b := openBus(t, srv.URL(), o, "a"), openBus(t, srv.URL(), o, "b")
	in := newInbox()
	b.Receive(in.handle)
	a.Receive(func(bus.Message) {})
	busWarmUp(t, a, in)

	const n = 600
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		if i == n/3 {
			if err := srv.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		if i == n/2 {
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Publish(context.Background(), "k", []byte("e"+strconv.Itoa(i))); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	if !in.await(waitLong, countEvents(n)) {
		t.Fatalf("received %d of %d events (a %+v, b %+v)", len(in.snapshot()), n, a.Status(), b.Status())
	}
	checkEvents(t, in.snapshot(), "a", n)
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Open(ctx, "", nil); !errors.Is(err, ErrBadURL) {
		t.Errorf("Open with no URL: %v, want ErrBadURL", err)
	}
	if _, err := Open(ctx, "http://x", nil); !errors.Is(err, ErrBadURL) {
		t.Errorf("Open with a bad URL: %v, want ErrBadURL", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Open(cctx, "redis://127.0.0.1:1", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a done ctx: %v", err)
	}
	o := &Options{Bus: bus.Config{BatchSize: -5}}
	if _, err := Open(ctx, "redis://127.0.0.1:1", o); err == nil {
		t.Error("Open with a bad bus config succeeded")
	}
}

// TestOpenBusSentinelFailover publishes at a steady rate with WaitReplicas 1
// while Sentinel fails the primary over (and the old primary comes back as a
// replica): every event arrives exactly once, in order.
func TestOpenBusSentinelFailover(t *testing.T) {
	t.Parallel()
	ss := redistest.Sentinel(t, redistest.WithAOF())
	o := faultOpts(Streams)
	o.WaitReplicas = 1
	a, b := openBus(t, ss.URL(), o, "a"), openBus(t, ss.URL(), o, "b")
	in := newInbox()
	b.Receive(in.handle)
	a.Receive(func(bus.Message) {})
	busWarmUp(t, a, in)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	failedOver := make(chan error, 1)
	const n = 400
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		if i == n/4 {
			old, err := ss.KillPrimary()
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				_, err := ss.WaitFailover(ctx)
				if err == nil {
					// Back as a replica, so WAIT 1 can succeed again.
					err = old.Start(ctx)
				}
				failedOver <- err
			}()
		}
		if err := a.Publish(context.Background(), "k", []byte("e"+strconv.Itoa(i))); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	if err := <-failedOver; err != nil {
		t.Fatal(err)
	}
	if !in.await(time.Minute, countEvents(n)) {
		t.Fatalf("received %d of %d events (a %+v, b %+v)", len(in.snapshot()), n, a.Status(), b.Status())
	}
	checkEvents(t, in.snapshot(), "a", n)
	// Receivers read entries before WAIT confirms them; the outbox keeps them
	// until the new primary has a replica again (Sentinel turns the old
	// primary into one within about 10 s of its return).
	deadline := time.Now().Add(time.Minute)
	for st := a.Status(); st.OutboxLen > 0; st = a.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d messages a minute after the failover (status %+v)", st.OutboxLen, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPubSubConnectedBeforeProbeTimeout: on pub/sub, the probes of the first
// round may leave before Redis has the subscription, and are lost. The bus
// begins warm-up rounds again after a short wait, so that it is Connected as
// soon as its subscription delivers, not after a whole ProbeTimeout (here a
// minute); no warm-up round counts as a probe failure.
func TestPubSubConnectedBeforeProbeTimeout(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t)
	for _, kind := range []Kind{PubSub, Streams} {
		t.Run(kind.String(), func(t *testing.T) {
			cfg := testBusConfig("n1")
			cfg.ProbeTimeout = time.Minute
			b, err := Open(context.Background(), srv.URL(), &Options{Kind: kind, Prefix: "warm-" + kind.String(), Bus: cfg})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := b.Close(ctx); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			b.Receive(func(bus.Message) {})
			testwait.For(t, 20*time.Second, "the bus to be Connected (ProbeTimeout is a minute)", func() bool {
				return b.Status().State == bus.Connected
			})
			if st := b.Stats(); st.ProbeFailures != 0 {
				t.Fatalf("probe failures during the warm-up: %d", st.ProbeFailures)
			}
		})
	}
}
