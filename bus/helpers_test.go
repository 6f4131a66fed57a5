package bus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// sink is a Handler that records messages.
type sink struct {
	mu   sync.Mutex
	msgs []Message
	more chan struct{} // cap 1, signalled on every message
}

func newSink() *sink { return &sink{more: make(chan struct{}, 1)} }

func (s *sink) handle(m Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
	select {
	case s.more <- struct{}{}:
	default:
	}
}

func (s *sink) all() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

func (s *sink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// wait waits until the sink holds at least n messages.
func (s *sink) wait(t testing.TB, n int, within time.Duration) []Message {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for s.len() < n {
		select {
		case <-s.more:
		case <-deadline.C:
			t.Fatalf("received %d messages, want %d", s.len(), n)
		}
	}
	return s.all()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newBus creates a bus on hub with test-friendly defaults and closes it at cleanup.
func newBus(t testing.TB, hub *MemoryHub, cfg Config) *Reliable {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	b, err := New(hub.Transport(), cfg)
	if err != nil {
		t.Fatal(err)
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

// waitState waits until b is in state s.
func waitState(t testing.TB, b Bus, s State, within time.Duration) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		ch := b.StateChanged()
		if got := b.Status().State; got == s {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("state %v, want %v (status %+v)", b.Status().State, s, b.Status())
		}
	}
}

// waitFor polls cond (a cheap read) until it holds.
func waitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkInOrder checks that msgs hold, per origin and partition, the payloads
// "<origin>/<partition>/<i>" exactly once and in order, from 1 to per[origin].
func payload(origin string, i int) []byte { return fmt.Appendf(nil, "%s/%d", origin, i) }
