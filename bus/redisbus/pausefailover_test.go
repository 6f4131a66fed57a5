package redisbus

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

// lockedBuffer is a log sink several goroutines write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSentinelPauseFailover: with WaitReplicas 1, the primary is paused
// (CLIENT PAUSE ALL) long enough for Sentinel to promote the replica while a
// batch is on its way to the paused primary. That batch is written there when
// the pause ends, after the publisher already writes to the new primary; it
// must still reach every receiver, once and in order, with no gap reported.
func TestSentinelPauseFailover(t *testing.T) {
	t.Parallel()
	ss := redistest.Sentinel(t, redistest.WithAOF())
	o := faultOpts(Streams)
	o.Partitions = 1
	o.WaitReplicas = 1
	var logs lockedBuffer
	var gaps sync.Map
	open := func(node string) *bus.Reliable {
		o := o
		o.URL = ss.URL()
		o.Bus = testBusConfig(node)
		o.Bus.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		// The batch sent at the pause waits for the whole pause (and the
		// WAIT after it): it must not time out, which would make the bus
		// send it again on its own.
		o.Bus.PublishTimeout = time.Minute
		o.Bus.OnGap = func(g bus.Gap) { gaps.Store(g.Origin+":"+strconv.FormatUint(g.After, 10), g) }
		b, err := Open(context.Background(), "", &o)
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
	a, b := open("a"), open("b")
	in := newInbox()
	b.Receive(in.handle)
	a.Receive(func(bus.Message) {})
	busWarmUp(t, a, in)
	// The first warm-up messages may precede b's reader: b reports them as
	// lost, rightly, but the test is about what follows.
	warm := a.Stats().Accepted

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	old := ss.Primary()
	// Long enough for the sentinels (down after 3 s) to agree, promote the
	// replica and announce it, so that the publisher's client moves to the
	// new primary while the paused one still holds a batch.
	const pause = 9 * time.Second
	stop := make(chan struct{})
	published := make(chan int, 1)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		i := 0
		defer func() { published <- i }()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := a.Publish(context.Background(), "k", []byte("e"+strconv.Itoa(i))); err != nil {
				t.Errorf("Publish %d: %v", i, err)
				return
			}
			i++
		}
	}()
	if !in.await(waitLong, countEvents(50)) {
		t.Fatalf("no events before the pause")
	}
	if err := old.Pause(ctx, pause); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.WaitFailover(ctx); err != nil {
		t.Fatal(err)
	}
	// PING returns when the pause ends; then publish on until the receiver
	// has events written after it.
	if _, err := old.Do(ctx, "PING"); err != nil {
		t.Fatal(err)
	}
	after := int(a.Stats().Accepted) + 100
	if !in.await(time.Minute, countEvents(after)) {
		t.Logf("logs:\n%s", logs.String())
		t.Fatalf("received %d events, want %d (a %+v, b %+v)", len(in.snapshot()), after, a.Status(), b.Status())
	}
	close(stop)
	n := <-published
	if !in.await(time.Minute, countEvents(n)) {
		t.Logf("logs:\n%s", logs.String())
		t.Fatalf("received %d of %d events (a %+v, b %+v)", len(in.snapshot()), n, a.Status(), b.Status())
	}
	checkEvents(t, in.snapshot(), "a", n)
	// The new primary confirms them once Sentinel made the old one its
	// replica (about 10 s after its return).
	deadline := time.Now().Add(time.Minute)
	for st := a.Status(); st.OutboxLen > 0; st = a.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d messages a minute after the failover (status %+v)", st.OutboxLen, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("publisher: %+v", a.Stats())
	gaps.Range(func(k, v any) bool {
		if g := v.(bus.Gap); g.Origin == "a" && g.Next <= warm+1 {
			return true // warm-up messages only
		}
		t.Errorf("gap reported: %+v", v)
		return true
	})
	if t.Failed() {
		t.Logf("logs:\n%s", logs.String())
	}
}
