package bus

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// Sync answers only once the broker holds what was accepted before it.
func TestSyncWaitsForTheBroker(t *testing.T) {
	hub := NewMemoryHub()
	b := newBus(t, hub, Config{NodeID: "a", Backoff: BackoffConfig{Base: 10 * time.Millisecond, Cap: 20 * time.Millisecond}})
	waitState(t, b, Connected, 10*time.Second)
	ctx := context.Background()

	// Nothing accepted: nothing to wait for.
	if err := b.Sync(ctx); err != nil {
		t.Fatalf("Sync of an empty outbox: %v", err)
	}

	hub.setDown(true)
	for i := range 10 {
		if err := b.Publish(ctx, "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := b.Sync(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync while the broker is down = %v, want the context's deadline", err)
	}
	if got := hub.kept(b.PartitionOf("k")); got != 0 {
		t.Fatalf("broker holds %d frames while down", got)
	}

	done := make(chan error, 1)
	go func() { done <- b.Sync(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("Sync returned %v while the broker is down", err)
	case <-time.After(100 * time.Millisecond):
	}
	hub.setDown(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Sync did not return after the broker came back")
	}
	// When Sync returns, the broker holds every frame accepted before it.
	if got := hub.kept(b.PartitionOf("k")); got < 10 {
		t.Fatalf("Sync returned with %d of 10 frames in the broker", got)
	}
	if n, _, _ := b.ob.snapshot(time.Now()); n != 0 {
		t.Fatalf("outbox holds %d after Sync", n)
	}
}

// Messages that a bound drops make Sync fail with ErrDropped, counting them.
func TestSyncReportsDrops(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		hub.setDown(true)
		b := newBus(t, hub, Config{NodeID: "a", Outbox: OutboxConfig{MaxAge: time.Minute}})
		ctx := context.Background()
		for i := range 3 {
			if err := b.Publish(ctx, "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		err := b.Sync(ctx) // returns when the max age drops them
		if !errors.Is(err, ErrDropped) {
			t.Fatalf("Sync = %v, want ErrDropped", err)
		}
		if got, want := err.Error(), "3 of 3"; !strings.Contains(got, want) {
			t.Fatalf("Sync error %q does not say %q", got, want)
		}
		if got := b.Stats().DroppedMaxAge; got != 3 {
			t.Fatalf("DroppedMaxAge = %d, want 3", got)
		}
		hub.setDown(false)
	})
}

// A Sync whose context ended leaves no waiter behind.
func TestSyncCancelForgetsTheWaiter(t *testing.T) {
	hub := NewMemoryHub()
	hub.setDown(true)
	b := newBus(t, hub, Config{NodeID: "a"})
	if err := b.Publish(context.Background(), "k", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Sync(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v", err)
	}
	b.ob.mu.Lock()
	n := len(b.ob.waiters)
	b.ob.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d waiters left", n)
	}
	hub.setDown(false)
}
