package bus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
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
	return newBusOn(t, hub.Transport(), cfg)
}

// newBusOn is newBus on any transport.
func newBusOn(t testing.TB, tr Transport, cfg Config) *Reliable {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	b, err := New(tr, &cfg)
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

// pairOn starts node "a" on tr (cfg, with NodeID "a"; it receives nothing
// itself) and node "r" on hub, whose messages go to the returned sink, and
// lets two probe intervals pass, in a synctest bubble.
func pairOn(t *testing.T, hub *MemoryHub, tr Transport, cfg Config) (a, r *Reliable, sr *sink) {
	t.Helper()
	cfg.NodeID = "a"
	a = newBusOn(t, tr, cfg)
	a.Receive(func(Message) {})
	r = newBus(t, hub, Config{NodeID: "r"})
	sr = newSink()
	r.Receive(sr.handle)
	time.Sleep(2 * time.Second)
	synctestWait()
	return a, r, sr
}

// checkInOrder checks that msgs hold, per origin and partition, the payloads
// "<origin>/<partition>/<i>" exactly once and in order, from 1 to per[origin].
func payload(origin string, i int) []byte { return fmt.Appendf(nil, "%s/%d", origin, i) }

// maxJitter makes backoff waits deterministic: always the ceiling.
func maxJitter(n int64) int64 { return n }

// newBusJitter is newBus with a backoff jitter function.
func newBusJitter(t testing.TB, hub *MemoryHub, cfg Config, jitter func(int64) int64) *Reliable {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	b, err := newReliable(hub.Transport(), cfg, jitter)
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

// logCounter is a slog.Handler counting records by message.
type logCounter struct {
	mu     sync.Mutex
	counts map[string]int
	lines  []string
}

func newLogCounter() *logCounter { return &logCounter{counts: make(map[string]int)} }

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Level >= slog.LevelInfo {
		l.counts[r.Message]++
		l.lines = append(l.lines, r.Level.String()+" "+r.Message)
	}
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }

func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[msg]
}

func (l *logCounter) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// checkStreams checks that msgs hold, for every origin in want, the payloads
// payload(origin, 1..want[origin]) exactly once each, in publish order per
// partition with increasing seqs, and nothing else.
func checkStreams(t testing.TB, msgs []Message, want map[string]int) {
	t.Helper()
	type stream struct {
		origin    string
		partition int
	}
	lastSeq := make(map[stream]uint64)
	lastIdx := make(map[stream]int)
	seen := make(map[string]map[int]bool)
	for _, m := range msgs {
		n, ok := want[m.Origin]
		if !ok {
			t.Fatalf("message from unexpected origin %q", m.Origin)
		}
		var i int
		if _, err := fmt.Sscanf(string(m.Payload), m.Origin+"/%d", &i); err != nil {
			t.Fatalf("payload %q: %v", m.Payload, err)
		}
		if i < 1 || i > n {
			t.Fatalf("payload %q out of range 1..%d", m.Payload, n)
		}
		if seen[m.Origin] == nil {
			seen[m.Origin] = make(map[int]bool)
		}
		if seen[m.Origin][i] {
			t.Fatalf("payload %q delivered twice", m.Payload)
		}
		seen[m.Origin][i] = true
		k := stream{m.Origin, m.Partition}
		if m.Seq <= lastSeq[k] || i <= lastIdx[k] {
			t.Fatalf("origin %s partition %d: seq %d (payload %d) after seq %d (payload %d): reordered", m.Origin, m.Partition, m.Seq, i, lastSeq[k], lastIdx[k])
		}
		lastSeq[k], lastIdx[k] = m.Seq, i
	}
	for origin, n := range want {
		if len(seen[origin]) != n {
			t.Fatalf("origin %s: %d messages, want %d", origin, len(seen[origin]), n)
		}
	}
}

func slogNew(h slog.Handler) *slog.Logger { return slog.New(h) }

// synctestRun runs f in a synctest bubble: fake time, so that timer logic runs
// in microseconds and exactly.
func synctestRun(t *testing.T, f func(t *testing.T)) { synctest.Test(t, f) }

func synctestWait() { synctest.Wait() }

// wholeWindow hides a transport's SurvivorFinder: the bus then publishes
// everything it retained again after a break, not knowing what the broker
// kept.
type wholeWindow struct{ Transport }
