package redisbus

import (
	"context"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

const benchPayload = 256

// BenchmarkPublish measures Transport.Publish throughput through a real
// redis-server: one op is one frame; batches are pipelined.
func BenchmarkPublish(b *testing.B) {
	srv := redistest.Standalone(b)
	for _, kind := range bothKinds {
		for _, batch := range []int{1, 64, 256} {
			b.Run(kind.String()+"/batch="+strconv.Itoa(batch), func(b *testing.B) {
				o := Options{Kind: kind, Prefix: "bench-" + kind.String(), StreamMaxLen: 10_000}
				tr := newTransport(b, srv.URL(), o)
				frames := make([]bus.Frame, batch)
				for i := range frames {
					frames[i] = bus.Frame{Partition: i % tr.Partitions(), Data: make([]byte, benchPayload)}
				}
				ctx := context.Background()
				if err := tr.Ping(ctx); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.SetBytes(benchPayload)
				b.ResetTimer()
				start := time.Now()
				for done := 0; done < b.N; done += batch {
					n := min(batch, b.N-done)
					if err := tr.Publish(ctx, frames[:n]); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
			})
		}
	}
}

// BenchmarkPublishCluster is BenchmarkPublish (streams) on a Redis Cluster,
// where every batch's pipelines are pinned to the node serving each slot.
func BenchmarkPublishCluster(b *testing.B) {
	cs := redistest.Cluster(b)
	for _, batch := range []int{1, 64, 256} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			o := Options{Kind: Streams, Prefix: "bench-cluster", StreamMaxLen: 10_000}
			tr := newTransport(b, cs.URL(), o)
			frames := make([]bus.Frame, batch)
			for i := range frames {
				frames[i] = bus.Frame{Partition: i % tr.Partitions(), Data: make([]byte, benchPayload)}
			}
			ctx := context.Background()
			if err := tr.Ping(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(benchPayload)
			b.ResetTimer()
			start := time.Now()
			for done := 0; done < b.N; done += batch {
				n := min(batch, b.N-done)
				if err := tr.Publish(ctx, frames[:n]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
		})
	}
}

// BenchmarkRoundTrip measures the time from Publish to delivery by Subscribe
// of another transport, one frame at a time.
func BenchmarkRoundTrip(b *testing.B) {
	srv := redistest.Standalone(b)
	for _, kind := range bothKinds {
		b.Run(kind.String(), func(b *testing.B) {
			o := Options{Kind: kind, Prefix: "rtt-" + kind.String(), StreamMaxLen: 10_000}
			pub, subT := newTransport(b, srv.URL(), o), newTransport(b, srv.URL(), o)
			got := make(chan int64, 1)
			var want atomic.Int64
			want.Store(-1)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- subT.Subscribe(ctx, "s", func(f bus.Frame) {
					if len(f.Data) >= 8 && f.Partition >= 0 {
						if seq := int64(binary.BigEndian.Uint64(f.Data)); seq == want.Load() {
							select {
							case got <- seq:
							default:
							}
						}
					}
				})
			}()
			defer func() {
				cancel()
				<-done
			}()
			data := make([]byte, benchPayload)
			roundTrip := func(seq int64) bool {
				want.Store(seq)
				binary.BigEndian.PutUint64(data, uint64(seq))
				if err := pub.Publish(ctx, []bus.Frame{{Partition: 0, Data: data}}); err != nil {
					b.Fatal(err)
				}
				select {
				case <-got:
					return true
				case err := <-done:
					b.Fatalf("Subscribe ended: %v", err)
				case <-time.After(200 * time.Millisecond):
				}
				return false
			}
			// Until the subscription is live.
			warm := int64(1 << 40)
			for tries := 0; !roundTrip(warm); tries++ {
				if tries > 100 {
					b.Fatal("subscription not live")
				}
				warm++
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if !roundTrip(int64(i)) {
					b.Fatalf("frame %d not delivered within 200ms", i)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkThroughput measures frames carried end to end (Publish in batches of
// 256 on one transport, delivered by Subscribe on another): one op is one frame.
// streams/position-check reads as on Sentinel and Cluster, where each read
// also checks that the server holds the reader's position.
func BenchmarkThroughput(b *testing.B) {
	srv := redistest.Standalone(b)
	cases := []struct {
		name  string
		kind  Kind
		check bool
	}{{"streams", Streams, false}, {"streams/position-check", Streams, true}, {"pubsub", PubSub, false}}
	for _, tc := range cases {
		kind := tc.kind
		b.Run(tc.name, func(b *testing.B) {
			o := Options{Kind: kind, Prefix: "tput-" + tc.name, StreamMaxLen: -1}
			pub, subT := newTransport(b, srv.URL(), o), newTransport(b, srv.URL(), o)
			if tc.check {
				st := subT.(*streams)
				st.recent, st.recentPos = make([][]seenEntry, st.opts.Partitions), make([]int, st.opts.Partitions)
			}
			var got, target atomic.Int64
			target.Store(-1)
			all := make(chan struct{})
			live := make(chan struct{})
			var liveOnce sync.Once
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- subT.Subscribe(ctx, "s", func(f bus.Frame) {
					if f.Partition == -1 {
						liveOnce.Do(func() { close(live) })
						return
					}
					if got.Add(1) == target.Load() {
						close(all)
					}
				})
			}()
			defer func() {
				cancel()
				<-done
			}()
			// Live when a direct frame comes through (Subscribe records the
			// stream positions before it listens on the direct channel).
			resend := time.NewTicker(20 * time.Millisecond)
			defer resend.Stop()
			giveUp := time.After(waitLong)
		wait:
			for {
				if err := pub.Send(ctx, "s", []byte("x")); err != nil {
					b.Fatal(err)
				}
				select {
				case <-live:
					break wait
				case <-resend.C:
				case <-giveUp:
					b.Fatal("subscription not live")
				}
			}
			const batch = 256
			frames := make([]bus.Frame, batch)
			for i := range frames {
				frames[i] = bus.Frame{Partition: i % pub.Partitions(), Data: make([]byte, benchPayload)}
			}
			target.Store(int64(b.N))
			b.SetBytes(benchPayload)
			b.ResetTimer()
			start := time.Now()
			for sent := 0; sent < b.N; sent += batch {
				if err := pub.Publish(ctx, frames[:min(batch, b.N-sent)]); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-all:
			case <-time.After(time.Minute):
				b.Fatalf("delivered %d of %d frames", got.Load(), b.N)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
		})
	}
}

// BenchmarkDirectPlaneCluster sends direct frames between 4 nodes on a Redis
// Cluster of 3 primaries, round robin over the pairs, as nodes of the earlier
// version (every node channel in the slot of {P}) and of this one (a slot per
// node channel), and reports the SPUBLISH each primary ran per frame
// (primary0..2) and the share of the busiest: 1 when one shard carries every
// answer, 0.33 when three share them evenly. One op is one frame sent and
// received.
func BenchmarkDirectPlaneCluster(b *testing.B) {
	cs := redistest.Cluster(b)
	const nodes = 4
	o := Options{Kind: Streams, Prefix: "direct-spread", Partitions: 1}
	newT := func(t testing.TB) bus.Transport { return newTransport(t, cs.URL(), o) }
	primaries, err := cs.Primaries(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name   string
		legacy bool
	}{{"earlier-version", true}, {"this-version", false}} {
		b.Run(v.name, func(b *testing.B) {
			m := newDirectMesh(b, newT, nodes, v.legacy)
			received := func() int {
				n := 0
				for _, c := range m.recv {
					n += len(directFrames(c.snapshot(), "bench-"))
				}
				return n
			}
			ctx := context.Background()
			payload := "bench-" + strings.Repeat("x", benchPayload)
			before := spublishCalls(b, primaries)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				from := i % nodes
				to := (from + 1 + (i/nodes)%(nodes-1)) % nodes
				if err := m.send[from](ctx, m.ids[to], payload); err != nil {
					b.Fatal(err)
				}
			}
			testwait.Every(b, 10*time.Millisecond, time.Minute, "every frame received", func() bool { return received() >= b.N })
			b.StopTimer()
			after := spublishCalls(b, primaries)
			var total, busiest int64
			for i := range after {
				d := after[i] - before[i]
				total += d
				busiest = max(busiest, d)
				b.ReportMetric(float64(d)/float64(b.N), "primary"+strconv.Itoa(i)+"-spublish/op")
			}
			if total > 0 {
				b.ReportMetric(float64(busiest)/float64(total), "busiest-shard-share")
			}
			b.ReportMetric(float64(received())/float64(b.N), "delivered/op")
		})
	}
}
