package bus_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

// TestRedisRestartLosesTailReported: a real Redis without persistence is killed
// and restarted, with retention off, while a receiver has not read a node's last nine messages yet;
// the node publishes nothing more. Its probes announce what it published, so the
// receiver reports exactly those nine as a tail gap within seconds.
func TestRedisRestartLosesTailReported(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithoutPersistence())
	open := func(id string, cfg bus.Config) *bus.Reliable { return openRedisBus(t, srv.URL(), id, cfg) }
	var mu sync.Mutex
	var gaps []bus.Gap
	// a does not retain what Redis acknowledged: it would publish the lost
	// messages again (TestRedisLostAcknowledgedWritesRepublished); this test
	// is about reporting a loss nothing repairs.
	a := open("a", bus.Config{Retain: bus.RetainConfig{Window: -1}})
	a.Receive(func(bus.Message) {})
	r := open("r", bus.Config{OnGap: func(g bus.Gap) {
		mu.Lock()
		gaps = append(gaps, g)
		mu.Unlock()
	}})
	first, block := make(chan struct{}), make(chan struct{})
	var once sync.Once
	received := make(chan bus.Message, 16)
	r.Receive(func(m bus.Message) {
		once.Do(func() {
			close(first)
			<-block // r is behind while Redis loses a's last messages
		})
		received <- m
	})
	waitConnected(t, a)
	waitConnected(t, r)
	ctx := t.Context()
	if err := a.Publish(ctx, "k", []byte("m1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first:
	case <-time.After(30 * time.Second):
		t.Fatal("r did not receive the first message")
	}
	for i := 2; i <= 10; i++ {
		if err := a.Publish(ctx, "k", []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, "a's outbox to empty", func() bool { return a.Stats().Published == 10 })
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	close(block)
	back := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for r.Stats().GapMessages < 9 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.Stats().GapMessages < 9 {
		t.Fatalf("no tail gap reported within 30 s:\nr %+v\na %+v", r.Stats(), a.Stats())
	}
	t.Logf("tail gap reported %v after Redis was back", time.Since(back).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // a few more probes: nothing is reported twice
	s := r.Stats()
	if s.Gaps != 1 || s.TailGaps != 1 || s.GapMessages != 9 || s.Received != 1 {
		t.Fatalf("receiver stats %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(gaps) != 1 || !gaps[0].Tail || gaps[0].Origin != "a" || gaps[0].After != 1 || gaps[0].Missing != 9 {
		t.Fatalf("OnGap got %+v", gaps)
	}
}

// openRedisBus opens a bus with node id id over a streams transport of 2
// partitions on the Redis at url, and closes it at cleanup.
func openRedisBus(t *testing.T, url, id string, cfg bus.Config) *bus.Reliable {
	t.Helper()
	return openRedisBusWith(t, &redisbus.Options{URL: url, Partitions: 2}, id, cfg)
}

// openRedisBusWith is openRedisBus on a transport of its own options.
func openRedisBusWith(t *testing.T, o *redisbus.Options, id string, cfg bus.Config) *bus.Reliable {
	t.Helper()
	tr, err := redisbus.NewTransport(o)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NodeID, cfg.Logger = id, slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := bus.New(tr, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close %s: %v", id, err)
		}
	})
	return b
}

func waitConnected(t *testing.T, b *bus.Reliable) {
	t.Helper()
	poll(t, b.NodeID()+" connected", func() bool { return b.Status().State == bus.Connected })
}

// poll waits for cond with a generous deadline.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
