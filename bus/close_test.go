package bus

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/durasock/durasock/internal/testwait"
)

func TestCloseDrains(t *testing.T) {
	hub := NewMemoryHub()
	r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
	sr := newSink()
	r.Receive(sr.handle)
	a, err := New(hub.Transport(), &Config{NodeID: "a", Logger: quietLogger(), BatchSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for i := 1; i <= n; i++ {
		if err := a.Publish(context.Background(), "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s := a.Stats(); s.Published != n || s.DroppedClosed != 0 {
		t.Fatalf("stats after Close %+v", s)
	}
	checkStreams(t, sr.wait(t, n, 10*time.Second), map[string]int{"a": n})
	if st := a.Status(); st.State != Closed {
		t.Fatalf("state after Close %v", st.State)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := a.Publish(ctx, "k", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close = %v", err)
	}
	if err := a.Send(ctx, "r", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close = %v", err)
	}
}

func TestCloseOutOfTime(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		hub.setDown(true)
		drops := &dropLog{}
		states := &statusLog{}
		a, err := New(hub.Transport(), &Config{NodeID: "a", Logger: quietLogger(), OnDrop: drops.hook, OnStateChange: states.hook})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 10; i++ {
			if err := a.Publish(context.Background(), "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		if err := a.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close with the broker down = %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Fatalf("Close took %v, want the 2s of its ctx", d)
		}
		if s := a.Stats(); s.DroppedClosed != 10 {
			t.Fatalf("stats %+v", s)
		}
		if n, seqs := drops.total(DropClosed); n != 10 || len(seqs) != 1 || seqs[0].First != 1 || seqs[0].Last != 10 {
			t.Fatalf("hook: %d, %+v", n, seqs)
		}
		if got := states.states(); len(got) == 0 || got[len(got)-1] != Closed {
			t.Fatalf("state hook saw %v, want ... closed", got)
		}
		// Idempotent, and quick.
		if err := a.Close(context.Background()); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestSendFailsFast(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		a := newBus(t, hub, Config{NodeID: "a"})
		time.Sleep(time.Millisecond)
		synctestWait()
		if a.Status().State != Connected {
			t.Fatalf("state %v", a.Status().State)
		}
		hub.setDown(true)
		// Before the bus notices, the transport error itself fails Send.
		if err := a.Send(context.Background(), "", []byte("x")); !errors.Is(err, ErrNotConnected) || !errors.Is(err, errHubDown) {
			t.Fatalf("Send = %v, want ErrNotConnected wrapping errHubDown", err)
		}
		time.Sleep(2 * time.Second)
		synctestWait()
		if err := a.Send(context.Background(), "", []byte("x")); !errors.Is(err, ErrNotConnected) {
			t.Fatalf("Send while Reconnecting = %v", err)
		}
		hub.setDown(false)
	})
}

func TestDecodeErrorsDropped(t *testing.T) {
	hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 1})
	logs := newLogCounter()
	r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1, Logger: slogNew(logs)})
	sr := newSink()
	r.Receive(sr.handle)
	a := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1})
	raw := hub.Transport()
	defer raw.Close()
	ctx := context.Background()
	for _, junk := range []string{"", "x", `{"uid":"emitter","type":1}`, strings.Repeat("\xff", 64), "\x01\x01\x00rest-of-it-is-long-enough-to-decode"} {
		if err := raw.Publish(ctx, []Frame{{Partition: 0, Data: []byte(junk)}}); err != nil {
			t.Fatal(err)
		}
		if err := raw.Send(ctx, "", []byte(junk)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Publish(ctx, "k", payload("a", 1)); err != nil {
		t.Fatal(err)
	}
	checkStreams(t, sr.wait(t, 1, 10*time.Second), map[string]int{"a": 1})
	testwait.For(t, 10*time.Second, "decode errors", func() bool { return r.Stats().DecodeErrors >= 4 })
	if n := logs.count("bus dropped an undecodable frame"); n != 1 {
		t.Fatalf("%d decode log lines, want 1 (rate-limited)", n)
	}
}

// TestRestartSameNodeID: a node restarted with the same id starts its sequences
// again at 1; receivers take them as a new stream, not as duplicates.
func TestRestartSameNodeID(t *testing.T) {
	hub := NewMemoryHub()
	r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
	sr := newSink()
	r.Receive(sr.handle)
	for run := 1; run <= 2; run++ {
		a, err := New(hub.Transport(), &Config{NodeID: "a", Logger: quietLogger(), ProbeInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 5; i++ {
			if err := a.Publish(context.Background(), "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got := sr.wait(t, 10, 10*time.Second)
	for i, m := range got {
		if m.Seq != uint64(i%5+1) {
			t.Fatalf("message %d has seq %d", i, m.Seq)
		}
	}
	if s := r.Stats(); s.Duplicates != 0 || s.Gaps != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMetrics(t *testing.T) {
	hub := NewMemoryHub()
	reg := prometheus.NewRegistry()
	a := newBus(t, hub, Config{NodeID: "a", Registerer: reg})
	if _, err := New(hub.Transport(), &Config{NodeID: "b", Registerer: reg, Logger: quietLogger()}); err == nil {
		t.Fatal("a second bus registered the same metrics without error")
	}
	r := newBus(t, hub, Config{NodeID: "r"})
	sr := newSink()
	r.Receive(sr.handle)
	for i := 1; i <= 10; i++ {
		if err := a.Publish(context.Background(), "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	sr.wait(t, 10, 10*time.Second)
	waitState(t, a, Connected, 10*time.Second)
	testwait.For(t, 10*time.Second, "outbox to empty", func() bool { return a.Status().OutboxLen == 0 })
	// The sender observes the latencies just after it empties the outbox.
	testwait.For(t, 10*time.Second, "10 latencies observed", func() bool { return a.m.latencyCount.Load() == 10 })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]*dto.MetricFamily)
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	for _, name := range []string{"durasock_bus_state", "durasock_outbox_messages", "durasock_outbox_bytes",
		"durasock_outbox_oldest_age_seconds", "durasock_bus_dropped_total", "durasock_bus_reconnects_total",
		"durasock_bus_replayed_total", "durasock_bus_duplicates_total", "durasock_bus_gaps_total",
		"durasock_bus_probe_failures_total", "durasock_bus_publish_latency_seconds", "durasock_bus_received_total",
		"durasock_bus_decode_errors_total", "durasock_bus_published_total"} {
		if got[name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	for _, m := range got["durasock_bus_state"].GetMetric() {
		want := 0.0
		if m.GetLabel()[0].GetValue() == "connected" {
			want = 1
		}
		if m.GetGauge().GetValue() != want {
			t.Errorf("bus_state %s = %v", m.GetLabel()[0].GetValue(), m.GetGauge().GetValue())
		}
	}
	if c := got["durasock_bus_published_total"].GetMetric()[0].GetCounter().GetValue(); c != 10 {
		t.Errorf("published_total = %v", c)
	}
	if h := got["durasock_bus_publish_latency_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleCount() != 10 {
		t.Errorf("latency count = %v", h.GetSampleCount())
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Close unregisters: a new bus can use the registry.
	b := newBus(t, hub, Config{NodeID: "b", Registerer: reg})
	_ = b
}

func TestConfigErrors(t *testing.T) {
	hub := NewMemoryHub()
	for name, cfg := range map[string]Config{
		"long node id":   {NodeID: strings.Repeat("n", 256)},
		"max messages":   {Outbox: OutboxConfig{MaxMessages: -2}},
		"max bytes":      {Outbox: OutboxConfig{MaxBytes: -5}},
		"max age":        {Outbox: OutboxConfig{MaxAge: -time.Second}},
		"overflow":       {Outbox: OutboxConfig{Overflow: 7}},
		"cap below base": {Backoff: BackoffConfig{Base: time.Second, Cap: time.Millisecond}},
		"attempts":       {Backoff: BackoffConfig{MaxAttempts: -1}},
		"batch":          {BatchSize: -1},
		"probe":          {ProbeInterval: -2},
		"probe timeout":  {ProbeTimeout: -1},
	} {
		tr := hub.Transport()
		if _, err := New(tr, &cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
		tr.Close()
	}
	if _, err := New(nil, &Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil transport: %v", err)
	}
	b := newBus(t, hub, Config{})
	if len(b.NodeID()) != 16 {
		t.Fatalf("default node id %q", b.NodeID())
	}
	c := newBus(t, hub, Config{})
	if b.NodeID() == c.NodeID() {
		t.Fatal("two default node ids are equal")
	}
}

// stuckTransport is a transport whose Publish ignores its ctx until released.
type stuckTransport struct {
	Transport
	release chan struct{}
}

func (s *stuckTransport) Publish(ctx context.Context, frames []Frame) error {
	<-s.release
	return s.Transport.Publish(ctx, frames)
}

// TestCloseWithStuckTransport: Close returns within its ctx plus a grace period
// even when the transport does not honour cancellation.
func TestCloseWithStuckTransport(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		tr := &stuckTransport{Transport: hub.Transport(), release: make(chan struct{})}
		logs := newLogCounter()
		a, err := New(tr, &Config{NodeID: "a", ProbeInterval: -1, Logger: slogNew(logs)})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Publish(context.Background(), "k", []byte("x")); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := a.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close = %v", err)
		}
		if d := time.Since(start); d != 100*time.Millisecond+closeGrace {
			t.Fatalf("Close took %v", d)
		}
		if s := a.Stats(); s.DroppedClosed != 1 {
			t.Fatalf("stats %+v", s)
		}
		if n := logs.count("bus: the transport's Publish did not return after cancellation; closing without it"); n != 1 {
			t.Fatalf("log %q", logs.all())
		}
		close(tr.release) // the sender goroutine ends
		synctestWait()
	})
}
