package bus

import (
	"context"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/testwait"
)

func TestPublishReceive(t *testing.T) {
	hub := NewMemoryHub()
	logs := newLogCounter()
	a := newBus(t, hub, Config{NodeID: "a", Logger: slogNew(logs)})
	defer func() {
		if t.Failed() {
			t.Logf("a's log: %q", logs.all())
		}
	}()
	b := newBus(t, hub, Config{NodeID: "b"})
	c := newBus(t, hub, Config{NodeID: "c"})
	sa, sb, sc := newSink(), newSink(), newSink()
	a.Receive(sa.handle)
	b.Receive(sb.handle)
	c.Receive(sc.handle)
	ctx := context.Background()
	const n = 500
	for i := 1; i <= n; i++ {
		if err := a.Publish(ctx, "room", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*sink{sb, sc} {
		got := s.wait(t, n, 10*time.Second)
		for i, m := range got {
			if m.Origin != "a" || m.Seq != uint64(i+1) || string(m.Payload) != string(payload("a", i+1)) {
				t.Fatalf("message %d = %+v", i, m)
			}
			if m.Partition != a.PartitionOf("room") {
				t.Fatalf("partition %d, want %d", m.Partition, a.PartitionOf("room"))
			}
		}
	}
	if sa.len() != 0 {
		t.Fatalf("a received %d of its own messages", sa.len())
	}
	waitState(t, a, Connected, 10*time.Second)
	testwait.For(t, 10*time.Second, "a's outbox to empty", func() bool { return a.Status().OutboxLen == 0 })
	if st := a.Stats(); st.Accepted != n || st.Published != n {
		t.Fatalf("stats %+v", st)
	}

	// Direct plane: best effort, it reaches the subscriptions active now.
	waitState(t, b, Connected, 10*time.Second)
	if err := waitSubs(hub, 3); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(ctx, "a", []byte("hello a")); err != nil {
		t.Fatal(err)
	}
	if m := sa.wait(t, 1, 10*time.Second)[0]; m.Origin != "b" || m.Seq != 0 || string(m.Payload) != "hello a" {
		t.Fatalf("direct message %+v", m)
	}
	if err := b.Send(ctx, "", []byte("all")); err != nil {
		t.Fatal(err)
	}
	sc.wait(t, n+1, 10*time.Second)
	sa.wait(t, 2, 10*time.Second)
	if got := sc.all()[n]; string(got.Payload) != "all" {
		t.Fatalf("broadcast direct = %+v", got)
	}
	if err := b.Send(ctx, "b", nil); err != ErrSelf {
		t.Fatalf("Send to self = %v", err)
	}
}

func TestHandlerPanicRecovered(t *testing.T) {
	hub := NewMemoryHub()
	a := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1})
	logs := newLogCounter()
	r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1, Logger: slogNew(logs)})
	sr := newSink()
	r.Receive(func(m Message) {
		if string(m.Payload) == "a/2" {
			panic("bad message")
		}
		sr.handle(m)
	})
	for i := 1; i <= 3; i++ {
		if err := a.Publish(context.Background(), "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	got := sr.wait(t, 2, 10*time.Second)
	if got[0].Seq != 1 || got[1].Seq != 3 {
		t.Fatalf("got %+v", got)
	}
	if s := r.Stats(); s.HandlerPanics != 1 {
		t.Fatalf("stats %+v", s)
	}
	if n := logs.count("bus handler panicked; message skipped"); n != 1 {
		t.Fatalf("%d panic log lines", n)
	}
}
