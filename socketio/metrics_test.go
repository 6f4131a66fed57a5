package socketio

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/parser"
)

// TestMetricsSentParsesPackets: the namespace and type of a written packet are
// read from its encoded text, binary packets included.
func TestMetricsSentParsesPackets(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := NewServer(&Options{Options: engineio.Options{Registerer: reg}})
	defer srv.Close()
	m := srv.metrics
	enc := func(p *parser.Packet) *parser.Encoded { return parser.Encode(p) }
	ev, err := parser.EventPacket("/chat", "x", 1)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := parser.EventPacket("/chat", "x", []byte{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	main, err := parser.EventPacket("/", "x", "a,b")
	if err != nil {
		t.Fatal(err)
	}
	ack, err := parser.AckPacket("/chat", 7, "ok")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*parser.Encoded{enc(ev), enc(bin), enc(main), enc(ack),
		enc(&parser.Packet{Type: parser.ConnectError, Namespace: "/admin", Data: []byte(`{"message":"no"}`)})} {
		m.sent(e)
	}
	c := m.counters("/chat")
	if c.eventsOut.Load() != 2 || c.acksOut.Load() != 1 {
		t.Errorf("/chat: events %d acks %d, want 2 and 1", c.eventsOut.Load(), c.acksOut.Load())
	}
	if got := m.counters("/").eventsOut.Load(); got != 1 {
		t.Errorf("/: events %d, want 1", got)
	}
	if got := m.counters("/admin").connectErrors.Load(); got != 1 {
		t.Errorf("/admin: connect errors %d, want 1", got)
	}
	// The label values stay bounded.
	for i := range 2 * maxMetricNamespaces {
		m.counters("/n" + string(rune('a'+i%26)) + string(rune('a'+i/26)))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "durasock_socketio_events_sent_total" && len(f.GetMetric()) > maxMetricNamespaces+1 {
			t.Errorf("%d namespace series, want at most %d", len(f.GetMetric()), maxMetricNamespaces+1)
		}
	}
}

// BenchmarkBroadcast10kMetrics is BenchmarkBroadcast10k with the metrics on:
// compare the two for the cost of counting every written packet.
func BenchmarkBroadcast10kMetrics(b *testing.B) {
	const n = 10_000
	srv := NewServer(&Options{Options: engineio.Options{Registerer: prometheus.NewRegistry()}})
	inProcessSockets(b, srv, n)
	msg := map[string]any{"user": "alice", "text": "hello everybody", "ts": 1712345678901}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := srv.Emit(ctx, "news", msg); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/recipient")
}

// BenchmarkMetricsSent is the cost the metrics add to each packet written.
func BenchmarkMetricsSent(b *testing.B) {
	srv := NewServer(&Options{Options: engineio.Options{Registerer: prometheus.NewRegistry()}})
	defer srv.Close()
	p, err := parser.EventPacket("/chat", "news", map[string]string{"text": "hello"})
	if err != nil {
		b.Fatal(err)
	}
	e := parser.Encode(p)
	b.ReportAllocs()
	for b.Loop() {
		srv.metrics.sent(e)
	}
}
