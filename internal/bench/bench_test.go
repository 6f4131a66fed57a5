package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func testCommon(t testing.TB) Common {
	return Common{Logf: t.Logf}
}

// TestSmoke runs every scenario end to end with small numbers and checks the
// counts: nothing lost, duplicated or reordered. Timing is for the benchmarks.
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("broadcast", func(t *testing.T) {
		rs, err := Broadcast(ctx, BroadcastConfig{Common: testCommon(t), Transports: []string{TransportLocal, "streams", "pubsub"},
			Rates: []float64{200, 400}, Duration: 500 * time.Millisecond, Subscribers: 3, Publishers: 2, PayloadSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 6 {
			t.Fatalf("%d results, want 6", len(rs))
		}
		for _, r := range rs {
			if r.Sent != int(r.TargetRate/2) || r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 || r.Rejected != 0 {
				t.Errorf("%s at %.0f/s: sent %d, lost %d, duplicated %d, reordered %d, rejected %d",
					r.Transport, r.TargetRate, r.Sent, r.Lost, r.Duplicated, r.Reordered, r.Rejected)
			}
		}
	})
	t.Run("rooms", func(t *testing.T) {
		// durasock and the Node peer (socket.io + both Redis adapters) with the
		// same clients, in the same run.
		rs, sum, err := Rooms(ctx, RoomsConfig{Common: testCommon(t),
			Runs:  []string{ServerRelay + ":streams", ServerRelay + ":pubsub", ServerNode + ":pubsub", ServerNode + ":streams"},
			Rates: []float64{200}, Duration: 500 * time.Millisecond, Subscribers: 4, Publishers: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 4 || len(sum) != 4 {
			t.Fatalf("%d results, %d summaries, want 4 each", len(rs), len(sum))
		}
		for _, r := range rs {
			if r.Sent != 100 || r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 || r.Rejected != 0 {
				t.Errorf("%s %s: sent %d, lost %d, duplicated %d, reordered %d, rejected %d",
					r.Server, r.Transport, r.Sent, r.Lost, r.Duplicated, r.Reordered, r.Rejected)
			}
		}
	})
	t.Run("scale", func(t *testing.T) {
		rs, err := Scale(ctx, ScaleConfig{Common: testCommon(t), Nodes: []int{1, 3}, Rate: 300,
			Duration: 500 * time.Millisecond, Subscribers: 6, Rooms: 4})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 2 {
			t.Fatalf("%d results, want 2", len(rs))
		}
		for _, r := range rs {
			// Each publisher sends 150/nodes events over 4 rooms; rooms 0 and 1
			// have two subscribers, rooms 2 and 3 one.
			var want int64
			for range r.Nodes {
				for sub := range 6 {
					want += roomWant(150/r.Nodes, sub%4, 4)
				}
			}
			if r.Sent != 150 || r.Delivered != want || r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 {
				t.Errorf("%d nodes: sent %d, delivered %d (want %d), lost %d, duplicated %d, reordered %d",
					r.Nodes, r.Sent, r.Delivered, want, r.Lost, r.Duplicated, r.Reordered)
			}
		}
	})
	// The redis-kill smoke tests run Redis with its default appendfsync
	// everysec: Redis postpones its AOF write while a background fsync is in
	// progress (up to 2 s) yet answers the writes meanwhile, so a SIGKILL can
	// lose entries the bus was told were written. The bus keeps what Redis
	// acknowledged last and publishes it again after the reconnect
	// (bus.RetainConfig): no gap, nothing lost.
	t.Run("redis-kill", func(t *testing.T) {
		rs, err := RedisKill(ctx, RedisKillConfig{Common: testCommon(t), Transports: []string{"streams"}, Clients: 4,
			Rate: 100, Before: 500 * time.Millisecond, Outage: time.Second, After: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		r := rs[0]
		if r.Sent != 200 || r.Expected != 4*200 || r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 || r.SentDuringOutage == 0 || r.ClientsCut != 0 || r.GapMessages != 0 {
			t.Errorf("sent %d (outage %d), expected %d, lost %d, duplicated %d, reordered %d, clients cut %d, bus gap messages %d",
				r.Sent, r.SentDuringOutage, r.Expected, r.Lost, r.Duplicated, r.Reordered, r.ClientsCut, r.GapMessages)
		}
	})
	t.Run("redis-kill-backlog", func(t *testing.T) {
		// The backlog of the outage (about 200 events) reaches node 1's clients at
		// once, many times their send queue of 16: they take it at their pace.
		// Node 0, the publisher's, keeps the default queue: its own emits never
		// wait, and 16 is 80 ms of them, less than a stall of a loaded machine.
		common := testCommon(t)
		common.SendQueue = 16
		common.SendQueueFrom = 1
		rs, err := RedisKill(ctx, RedisKillConfig{Common: common, Transports: []string{"streams"}, Clients: 4, Publishers: 1,
			Rate: 200, Before: 500 * time.Millisecond, Outage: time.Second, After: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		r := rs[0]
		if r.Sent != 400 || r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 || r.ClientsCut != 0 || r.GapMessages != 0 || r.RefusedAtNode != 0 {
			t.Errorf("sent %d (outage %d), expected %d, lost %d, duplicated %d, reordered %d, clients cut %d (nodes: send queue full %d, slow %d), bus gap messages %d, refused at node %d",
				r.Sent, r.SentDuringOutage, r.Expected, r.Lost, r.Duplicated, r.Reordered, r.ClientsCut, r.ServerCutQueueFull, r.ServerCutSlow, r.GapMessages, r.RefusedAtNode)
		}
	})
	t.Run("idle-memory", func(t *testing.T) {
		common := testCommon(t)
		common.PingInterval = 500 * time.Millisecond
		rs, err := Idle(ctx, IdleConfig{Common: common, Conns: []int{30, 50}, Settle: 100 * time.Millisecond, SourceAddrs: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 2 {
			t.Fatalf("%d results, want one per step: %+v", len(rs), rs)
		}
		for i, want := range []int{30, 50} {
			r := rs[i]
			if r.Conns != want || r.After == nil || r.After.Clients != want || r.RSSAfter == 0 || r.HeartbeatsPerSec != float64(want)*2 {
				t.Errorf("step %d: result %+v", i, r)
			}
		}
	})
}

// TestIdleFileLimit checks that the idle scenario measures the steps that
// fit in the open-file limit and names the limit of the first that does not:
// 2^31 connections exceed every Linux's ceiling (fs.nr_open).
func TestIdleFileLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs, err := Idle(ctx, IdleConfig{Common: testCommon(t), Conns: []int{10, 1 << 31}, Settle: 10 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "2147483904 open files") {
		t.Errorf("error %v, want the open files 2^31 connections need", err)
	}
	if len(rs) != 1 || rs[0].Conns != 10 || rs[0].After == nil || rs[0].After.Clients != 10 {
		t.Errorf("results %+v, want the first step's", rs)
	}
}

// TestSourceAddrClients checks that the idle scenario's clients dial from
// the loopback addresses they are given, as the server sees them.
func TestSourceAddrClients(t *testing.T) {
	seen := make(chan string, 3)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		seen <- host
	}))
	defer hs.Close()
	for i, c := range sourceAddrClients(3) {
		res, err := c.Get(hs.URL)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close() // empty
		if got, want := <-seen, fmt.Sprintf("127.0.0.%d", i+1); got != want {
			t.Errorf("client %d dialed from %s, want %s", i, got, want)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for v := uint64(1); v <= 100000; v++ {
		h.Record(v)
	}
	for _, c := range []struct {
		q    float64
		want uint64
	}{{0.5, 50000}, {0.99, 99000}, {1, 100000}} {
		got := h.Quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.04 {
			t.Errorf("Quantile(%v) = %d, want %d within 4%%", c.q, got, c.want)
		}
	}
	if h.Count() != 100000 || h.Max() != 100000 {
		t.Errorf("count %d max %d", h.Count(), h.Max())
	}
	for i := range histBuckets - 1 {
		if bucketOf(bucketTop(i)) != i || bucketOf(bucketTop(i)+1) != i+1 {
			t.Fatalf("bucket %d: top %d maps to %d, top+1 to %d", i, bucketTop(i), bucketOf(bucketTop(i)), bucketOf(bucketTop(i)+1))
		}
	}
}

func TestPayload(t *testing.T) {
	for _, size := range []int{0, 10, 200} {
		b := appendPayload(nil, 7, 123456, 987654321, size)
		if size > 0 && len(b) < size-2 {
			t.Errorf("size %d: payload %d bytes", size, len(b))
		}
		data := append(append([]byte(`["ev",`), b...), ']')
		p, s, ts, ok := parsePayload(data)
		if !ok || p != 7 || s != 123456 || ts != 987654321 {
			t.Errorf("parse %s = %d %d %d %v", data, p, s, ts, ok)
		}
	}
	for _, bad := range []string{`["ev"]`, `["ev",[1,2]]`, `["ev",[a,1,2]]`, `["ev",[1,,2]]`} {
		if _, _, _, ok := parsePayload([]byte(bad)); ok {
			t.Errorf("parse %s accepted", bad)
		}
	}
}

// BenchmarkCrossNodeBroadcast publishes b.N events at 12 000 events/s through
// node A to 20 subscribers on node B, per transport, and reports deliveries per
// second per subscriber, p99 latency and losses. Run it with -benchtime=120000x
// for a 10 s measurement.
func BenchmarkCrossNodeBroadcast(b *testing.B) {
	for _, tr := range []string{TransportLocal, "streams", "pubsub"} {
		b.Run(tr, func(b *testing.B) {
			const rate = 12000
			dur := time.Duration(float64(b.N) / rate * float64(time.Second))
			if dur < 100*time.Millisecond {
				dur = 100 * time.Millisecond
			}
			rs, err := Broadcast(context.Background(), BroadcastConfig{Common: testCommon(b), Transports: []string{tr},
				Rates: []float64{rate}, Duration: dur})
			if err != nil {
				b.Fatal(err)
			}
			r := rs[0]
			b.ReportMetric(r.PerSubscriber, "events/s/sub")
			b.ReportMetric(r.Deliveries, "deliveries/s")
			b.ReportMetric(r.P50ms, "p50-ms")
			b.ReportMetric(r.P99ms, "p99-ms")
			b.ReportMetric(r.Maxms, "max-ms")
			b.ReportMetric(float64(r.Lost), "lost")
			b.ReportMetric(float64(r.Duplicated+r.Reordered), "dup+reord")
		})
	}
}

// BenchmarkRedisKill runs the Redis crash scenario once per iteration (use
// -benchtime=1x): 10 s outage, 200 events/s.
func BenchmarkRedisKill(b *testing.B) {
	for _, tr := range []string{"streams", "pubsub"} {
		b.Run(tr, func(b *testing.B) {
			for range b.N {
				rs, err := RedisKill(context.Background(), RedisKillConfig{Common: Common{Logf: b.Logf, SendQueue: 4096}, Transports: []string{tr}})
				if err != nil {
					b.Fatal(err)
				}
				r := rs[0]
				b.ReportMetric(float64(r.Lost), "lost")
				b.ReportMetric(float64(r.Duplicated), "dup")
				b.ReportMetric(float64(r.Reordered), "reord")
				b.ReportMetric(r.SameNodeMaxGapMs, "same-node-gap-ms")
				b.ReportMetric(r.RemoteCatchUpMs, "catch-up-ms")
			}
		})
	}
}

// BenchmarkIdleMemory opens 10 000 idle connections once per iteration (use
// -benchtime=1x) and reports the node's memory per connection.
func BenchmarkIdleMemory(b *testing.B) {
	for range b.N {
		rs, err := Idle(context.Background(), IdleConfig{Common: testCommon(b), Conns: []int{10000}})
		if err != nil {
			b.Fatal(err)
		}
		r := rs[0]
		b.ReportMetric(r.HeapStackPerConn, "heap+stack-B/conn")
		b.ReportMetric(r.RSSPerConn, "rss-B/conn")
	}
}
