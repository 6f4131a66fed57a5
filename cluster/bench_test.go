package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/parser"
)

// benchSubscribers is the number of sockets on the receiving node.
const benchSubscribers = 20

// benchNamespace is a namespace of counting sockets: the cheapest receiver, so
// that the benchmark measures the cluster and the bus.
type benchNamespace struct {
	sockets map[string]*benchSocket
}

func (n *benchNamespace) Name() string { return "/" }
func (n *benchNamespace) Socket(id string) adapter.Socket {
	if s, ok := n.sockets[id]; ok {
		return s
	}
	return nil
}
func (n *benchNamespace) NextAckID() uint64 { return 0 }
func (n *benchNamespace) HandleServerSideEmit(string, []json.RawMessage, func([]json.RawMessage)) {
}

// benchSocket counts packets; the first socket also records when each event
// arrived.
type benchSocket struct {
	id      string
	count   atomic.Int64
	arrived []atomic.Int64 // unix nanos by event sequence (first socket only)
	done    chan struct{}  // closed when count reaches want
	want    int64
}

func (s *benchSocket) ID() string { return s.id }
func (s *benchSocket) Write(e *parser.Encoded, _ bool) {
	n := s.count.Add(1)
	if s.arrived != nil {
		if seq, ok := eventSeq(e.Text); ok && seq < len(s.arrived) {
			s.arrived[seq].Store(time.Now().UnixNano())
		}
	}
	if n == s.want {
		close(s.done)
	}
}
func (s *benchSocket) ExpectAck(uint64, func([]json.RawMessage)) {}
func (s *benchSocket) ForgetAck(uint64)                          {}
func (s *benchSocket) Disconnect(bool)                           {}
func (s *benchSocket) Info() adapter.SocketInfo                  { return adapter.SocketInfo{ID: s.id} }

// eventSeq reads the number in `2["tick",<seq>]`.
func eventSeq(text []byte) (int, bool) {
	end := len(text) - 1
	if end < 0 || text[end] != ']' {
		return 0, false
	}
	start := end
	for start > 0 && text[start-1] >= '0' && text[start-1] <= '9' {
		start--
	}
	n, err := strconv.Atoi(string(text[start:end]))
	return n, err == nil
}

// BenchmarkCrossNodeBroadcast: node 0 broadcasts b.N events to a room of 20
// sockets on node 1, through one real Redis. "max" sends as fast as Broadcast
// accepts; "12k" paces 12 000 events/s. Reported: events/s from the first send to
// the last delivery, and the latency from Broadcast to delivery on node 1.
func BenchmarkCrossNodeBroadcast(b *testing.B) {
	srv := redistest.Standalone(b)
	for _, kind := range []redisbus.Kind{redisbus.Streams, redisbus.PubSub} {
		for _, rate := range []int{0, 12000} {
			name := kind.String() + "/max"
			if rate > 0 {
				name = kind.String() + "/" + strconv.Itoa(rate/1000) + "k"
			}
			b.Run(name, func(b *testing.B) { benchBroadcast(b, srv.URL(), kind, rate) })
		}
	}
}

func benchBroadcast(b *testing.B, url string, kind redisbus.Kind, rate int) {
	cs := startNodes(b, 2, nil, redisBuses(b, url, kind))
	ns := &benchNamespace{sockets: make(map[string]*benchSocket)}
	sender, err := cs[0].Adapter(&benchNamespace{})
	if err != nil {
		b.Fatal(err)
	}
	receiver, err := cs[1].Adapter(ns)
	if err != nil {
		b.Fatal(err)
	}
	n := b.N
	var first *benchSocket
	for i := range benchSubscribers {
		s := &benchSocket{id: "s" + strconv.Itoa(i), done: make(chan struct{}), want: int64(n)}
		if i == 0 {
			s.arrived = make([]atomic.Int64, n)
			first = s
		}
		ns.sockets[s.id] = s
		receiver.Join(s.id, "room")
	}
	packets := make([]*parser.Packet, n)
	for i := range packets {
		p, err := parser.EventPacket("/", "tick", i)
		if err != nil {
			b.Fatal(err)
		}
		packets[i] = p
	}
	sent := make([]int64, n)
	opts := adapter.Options{Rooms: []string{"room"}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	pace := time.NewTimer(0)
	defer pace.Stop()
	for i := 0; i < n; i++ {
		if rate > 0 && i%max(1, rate/1000) == 0 {
			// Send in steps of 1 ms worth of events, each step at its due time, so
			// the average rate is exact even when a wait overshoots.
			if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > 0 {
				pace.Reset(wait)
				<-pace.C
			}
		}
		sent[i] = time.Now().UnixNano()
		if err := broadcastRetry(ctx, sender, packets[i], opts); err != nil {
			b.Fatalf("Broadcast %d: %v", i, err)
		}
	}
	var wg sync.WaitGroup
	for _, s := range ns.sockets {
		wg.Go(func() {
			select {
			case <-s.done:
			case <-ctx.Done():
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if got := first.count.Load(); got != int64(n) {
		b.Fatalf("first socket got %d of %d events", got, n)
	}
	lat := make([]time.Duration, 0, n)
	for i := range n {
		if at := first.arrived[i].Load(); at > 0 {
			lat = append(lat, time.Duration(at-sent[i]))
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(n*benchSubscribers)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// broadcastRetry retries a broadcast the outbox refused because it is full, as a
// producer outrunning the broker would.
func broadcastRetry(ctx context.Context, a adapter.Adapter, p *parser.Packet, opts adapter.Options) error {
	for {
		err := a.Broadcast(ctx, p, opts)
		if !errors.Is(err, bus.ErrOutboxFull) {
			return err
		}
		t := time.NewTimer(time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// BenchmarkCrossNodeRequest: node 0 makes one request at a time to node 1
// through one real Redis (streams): FetchSockets of one socket, and
// BroadcastWithAck to one socket that acks at once. ns/op is the round trip.
func BenchmarkCrossNodeRequest(b *testing.B) {
	srv := redistest.Standalone(b)
	cs := startNodes(b, 2, nil, redisBuses(b, srv.URL(), redisbus.Streams))
	ns := bind(b, cs, "/")
	connect(ns[1], "there", "room")
	opts := adapter.Options{Rooms: []string{"room"}}
	p, err := parser.EventPacket("/", "ask", 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fetch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			infos, err := ns[0].a.FetchSockets(context.Background(), opts)
			if err != nil || len(infos) != 1 {
				b.Fatalf("FetchSockets: %d sockets, %v", len(infos), err)
			}
		}
	})
	b.Run("ack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			replies, err := ns[0].a.BroadcastWithAck(context.Background(), p, opts)
			if err != nil || len(replies) != 1 {
				b.Fatalf("BroadcastWithAck: %d replies, %v", len(replies), err)
			}
		}
	})
}
