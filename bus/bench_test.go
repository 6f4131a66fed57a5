package bus

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

var benchPayload = make([]byte, 100)

// The publish benchmarks use a hub trimmed at 8192 frames per partition, so that
// they measure the publish path and not the growth of the hub's log.

func benchConfig() Config {
	return Config{NodeID: "bench", Logger: quietLogger(), ProbeInterval: -1,
		Outbox: OutboxConfig{MaxMessages: -1, MaxBytes: -1}}
}

// BenchmarkPublishReliable: Publish through the reliability layer (encode,
// sequence, outbox, pipelined batches) until the memory hub acknowledged all.
func BenchmarkPublishReliable(b *testing.B) {
	hub := NewMemoryHubConfig(MemoryHubConfig{MaxLen: 8192})
	bus, err := New(hub.Transport(), new(benchConfig()))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	b.ResetTimer()
	for b.Loop() {
		if err := bus.Publish(ctx, "room", benchPayload); err != nil {
			b.Fatal(err)
		}
	}
	for bus.Status().OutboxLen > 0 {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	if err := bus.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublishBare: one Transport.Publish per message, no reliability layer
// (what a bus without an outbox does).
func BenchmarkPublishBare(b *testing.B) {
	hub := NewMemoryHubConfig(MemoryHubConfig{MaxLen: 8192})
	t := hub.Transport()
	defer t.Close()
	ctx := context.Background()
	frame := []Frame{{Partition: 0, Data: benchPayload}}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		if err := t.Publish(ctx, frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishReceiveReliable: end to end, Publish on one node to the handler
// of another, through sequencing and de-duplication.
func BenchmarkPublishReceiveReliable(b *testing.B) {
	hub := NewMemoryHubConfig(MemoryHubConfig{MaxLen: 1 << 24}) // untrimmed: the receiver may fall behind
	cfg := benchConfig()
	pub, err := New(hub.Transport(), &cfg)
	if err != nil {
		b.Fatal(err)
	}
	cfg.NodeID = "recv"
	recv, err := New(hub.Transport(), &cfg)
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{}, 1)
	var want atomic.Int64
	want.Store(-1)
	recv.Receive(func(Message) {
		if got.Add(1) == want.Load() {
			done <- struct{}{}
		}
	})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	n := int64(0)
	for b.Loop() {
		if err := pub.Publish(ctx, "room", benchPayload); err != nil {
			b.Fatal(err)
		}
		n++
	}
	want.Store(n)
	if got.Load() < n {
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatalf("received %d of %d", got.Load(), n)
		}
	}
	b.StopTimer()
	for _, x := range []*Reliable{pub, recv} {
		if err := x.Close(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishReceiveBare: end to end without the layer: one
// Transport.Publish per message, frames counted by a bare Subscribe.
func BenchmarkPublishReceiveBare(b *testing.B) {
	hub := NewMemoryHubConfig(MemoryHubConfig{MaxLen: 1 << 24}) // untrimmed: the receiver may fall behind
	pub, sub := hub.Transport(), hub.Transport()
	defer pub.Close()
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Int64
	var want atomic.Int64
	want.Store(-1)
	done := make(chan struct{}, 1)
	subDone := make(chan error, 1)
	go func() {
		subDone <- sub.Subscribe(ctx, "sub", func(Frame) {
			if got.Add(1) == want.Load() {
				done <- struct{}{}
			}
		})
	}()
	frame := []Frame{{Partition: 0, Data: benchPayload}}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	n := int64(0)
	for b.Loop() {
		if err := pub.Publish(context.Background(), frame); err != nil {
			b.Fatal(err)
		}
		n++
	}
	want.Store(n)
	if got.Load() < n {
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatalf("received %d of %d", got.Load(), n)
		}
	}
	b.StopTimer()
	cancel()
	<-subDone
}

func BenchmarkDecodeEnvelope(b *testing.B) {
	data, err := appendEnvelope(nil, &envelope{Kind: kindData, Origin: "0123456789abcdef", Instance: 1, Partition: 3, Seq: 12345, Time: 1, Payload: benchPayload})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeEnvelope(data, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishAccept: the cost Publish adds to the caller (encode, sequence,
// enqueue), with the broker down so that the sender stays out of the way.
func BenchmarkPublishAccept(b *testing.B) {
	hub := NewMemoryHub()
	hub.setDown(true)
	cfg := benchConfig()
	cfg.Backoff = BackoffConfig{Base: time.Millisecond, Cap: 10 * time.Millisecond}
	bus, err := New(hub.Transport(), &cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		if err := bus.Publish(ctx, "room", benchPayload); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	hub.setDown(false)
	if err := bus.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDeliverFrame: the receive path of one frame read from the broker,
// for this node's own data frames (every node reads its own messages back
// from the shared streams) and, as the peer measured in the same run, another
// node's.
func BenchmarkDeliverFrame(b *testing.B) {
	hub := NewMemoryHub()
	r, err := New(hub.Transport(), new(benchConfig()))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(context.Background())
	var handled atomic.Int64
	r.Receive(func(Message) { handled.Add(1) })
	frame := func(origin string, instance, seq uint64) Frame {
		data, err := appendEnvelope(nil, &envelope{Kind: kindData, Origin: origin, Instance: instance, Seq: seq, Time: 1, Payload: benchPayload})
		if err != nil {
			b.Fatal(err)
		}
		return Frame{Partition: 0, Data: data}
	}
	b.Run("own", func(b *testing.B) {
		f := frame(r.nodeID, r.instance, 1)
		b.ReportAllocs()
		for b.Loop() {
			r.deliver(f)
		}
		if handled.Load() != 0 {
			b.Fatal("own frame handled")
		}
	})
	b.Run("other", func(b *testing.B) {
		frames := make([]Frame, 1024)
		seq := uint64(0)
		b.ReportAllocs()
		for b.Loop() {
			i := int(seq % uint64(len(frames)))
			if i == 0 {
				b.StopTimer()
				for j := range frames {
					frames[j] = frame("other", 7, seq+uint64(j)+1)
				}
				b.StartTimer()
			}
			seq++
			r.deliver(frames[i])
		}
	})
}
