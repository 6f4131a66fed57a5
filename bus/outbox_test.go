package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/testwait"
)

// dropLog records OnDrop calls.
type dropLog struct {
	mu    sync.Mutex
	drops []Drop
}

func (d *dropLog) hook(x Drop) {
	d.mu.Lock()
	d.drops = append(d.drops, x)
	d.mu.Unlock()
}

func (d *dropLog) total(reason DropReason) (count int, seqs []SeqRange) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, x := range d.drops {
		if x.Reason == reason {
			count += x.Count
			seqs = append(seqs, x.Seqs...)
		}
	}
	return count, seqs
}

// envelopeSize is the encoded size of a data envelope of node with payload.
func envelopeSize(t *testing.T, node string, partition int, payload []byte) int64 {
	t.Helper()
	b, err := appendEnvelope(nil, &envelope{Kind: kindData, Origin: node, Partition: partition, Seq: 1, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(b))
}

func TestOutboxRejectNewCount(t *testing.T) {
	hub := NewMemoryHub()
	hub.setDown(true)
	b := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1, Outbox: OutboxConfig{MaxMessages: 10}})
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		if err := b.Publish(ctx, "k", payload("a", i)); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	for range 3 {
		start := time.Now()
		if err := b.Publish(ctx, "k", payload("a", 11)); !errors.Is(err, ErrOutboxFull) {
			t.Fatalf("Publish beyond MaxMessages = %v, want ErrOutboxFull", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("rejected Publish took %v", d)
		}
	}
	waitState(t, b, Reconnecting, 10*time.Second)
	st := b.Status()
	if st.OutboxLen != 10 || st.Attempt < 1 || st.LastError == "" {
		t.Fatalf("status %+v", st)
	}
	if s := b.Stats(); s.Accepted != 10 || s.Rejected != 3 || s.DroppedOverflow != 0 {
		t.Fatalf("stats %+v", s)
	}
	// Back up: the 10 accepted leave, in order, and reach a receiver.
	r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
	sr := newSink()
	r.Receive(sr.handle)
	hub.setDown(false)
	checkStreams(t, sr.wait(t, 10, 10*time.Second), map[string]int{"a": 10})
}

func TestOutboxRejectNewBytes(t *testing.T) {
	hub := NewMemoryHub()
	hub.setDown(true)
	p := []byte("0123456789")
	size := envelopeSize(t, "a", 0, p)
	b := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1, Outbox: OutboxConfig{MaxBytes: 6*size - 5}})
	ctx := context.Background()
	for i := range 5 {
		if err := b.Publish(ctx, "", p); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	if err := b.Publish(ctx, "", p); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("Publish beyond MaxBytes = %v, want ErrOutboxFull", err)
	}
	// A smaller message still fits.
	if err := b.Publish(ctx, "", nil); err != nil {
		t.Fatalf("small Publish: %v", err)
	}
	if st := b.Status(); st.OutboxBytes > 6*size-5 || st.OutboxLen != 6 {
		t.Fatalf("status %+v, bound %d", st, 6*size-5)
	}
	if err := b.Publish(ctx, "", make([]byte, 6*size)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Publish of a message above MaxBytes = %v, want ErrTooLarge", err)
	}
	hub.setDown(false)
}

func TestOutboxDropOldest(t *testing.T) {
	for _, bound := range []string{"count", "bytes"} {
		t.Run(bound, func(t *testing.T) {
			hub := NewMemoryHub()
			drops := &dropLog{}
			cfg := Config{NodeID: "a", ProbeInterval: -1, OnDrop: drops.hook,
				Backoff: BackoffConfig{Base: 5 * time.Millisecond, Cap: 20 * time.Millisecond}}
			cfg.Outbox.Overflow = DropOldest
			size := envelopeSize(t, "a", 0, payload("a", 10))
			if bound == "count" {
				cfg.Outbox.MaxMessages = 10
			} else {
				cfg.Outbox.MaxBytes = 10 * size
			}
			logs := newLogCounter()
			cfg.Logger = slogNew(logs)
			a := newBus(t, hub, cfg)
			r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
			sr := newSink()
			r.Receive(sr.handle)
			ctx := context.Background()
			// Message 1 while up, so that the receiver has a baseline.
			if err := a.Publish(ctx, "k", payload("a", 1)); err != nil {
				t.Fatal(err)
			}
			sr.wait(t, 1, 10*time.Second)
			testwait.For(t, 10*time.Second, "outbox to empty", func() bool { return a.Status().OutboxLen == 0 })
			hub.setDown(true)
			for i := 2; i <= 40; i++ { // payloads 10..40 have the same size
				if err := a.Publish(ctx, "k", payload("a", i)); err != nil {
					t.Fatalf("Publish %d under drop-oldest: %v", i, err)
				}
				if st := a.Status(); st.OutboxLen > 10 || (bound == "bytes" && st.OutboxBytes > 10*size) {
					t.Fatalf("outbox beyond its bound: %+v", st)
				}
			}
			st := a.Stats()
			dropped := int(st.DroppedOverflow)
			if dropped < 29 || st.Accepted != 40 {
				t.Fatalf("stats %+v", st)
			}
			count, seqs := drops.total(DropOverflow)
			if count != dropped {
				t.Fatalf("hook saw %d drops, stats %d", count, dropped)
			}
			// The dropped seqs are 2..dropped+1 of the key's partition, contiguous.
			want := uint64(2)
			for _, s := range seqs {
				if s.Partition != a.PartitionOf("k") || s.First != want {
					t.Fatalf("drop ranges %+v", seqs)
				}
				want = s.Last + 1
			}
			if want != uint64(dropped)+2 {
				t.Fatalf("drop ranges %+v end at %d, want %d", seqs, want-1, dropped+1)
			}
			if n := logs.count("bus outbox full, dropping the oldest messages"); n != 1 {
				t.Fatalf("%d drop log lines, want 1 per episode: %q", n, logs.all())
			}
			hub.setDown(false)
			kept := uint64(dropped) + 2 // the first seq the outbox kept
			sr.wait(t, 1+40-1-dropped, 10*time.Second)
			testwait.For(t, 10*time.Second, "the last message", func() bool {
				m := sr.all()
				return m[len(m)-1].Seq == 40
			})
			got := sr.all()
			// A batch the sender had taken before the drops can still go out
			// when the broker comes back (Drop: "whose delivery is unknown"):
			// such seqs come first, in order; then every kept one.
			inFlight := 0
			for _, m := range got[1:] {
				if m.Seq < kept {
					inFlight++
				}
			}
			var after []uint64
			for _, m := range got[1+inFlight:] {
				after = append(after, m.Seq)
			}
			if len(after) != 40-int(kept)+1 || after[0] != kept {
				t.Fatalf("after the outage the receiver got %v (%d from an in-flight batch first), want %d..40", after, inFlight, kept)
			}
			testwait.For(t, 10*time.Second, "gap report", func() bool { return r.Stats().Gaps >= 1 })
			if s := r.Stats(); s.GapMessages != uint64(dropped-inFlight) {
				t.Fatalf("receiver stats %+v, want %d missing (%d dropped, %d delivered from an in-flight batch)", s, dropped-inFlight, dropped, inFlight)
			}
			testwait.For(t, 10*time.Second, "episode end log", func() bool { return logs.count("bus outbox drop episode over") == 1 })
		})
	}
}

func TestOutboxMaxAgeSynctest(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		hub.setDown(true)
		drops := &dropLog{}
		logs := newLogCounter()
		a := newBusJitter(t, hub, Config{NodeID: "a", ProbeInterval: -1, OnDrop: drops.hook, Logger: slogNew(logs),
			Outbox: OutboxConfig{MaxAge: time.Second}}, maxJitter)
		ctx := context.Background()
		for i := 1; i <= 10; i++ {
			if err := a.Publish(ctx, "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(500 * time.Millisecond)
		for i := 11; i <= 15; i++ {
			if err := a.Publish(ctx, "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(499 * time.Millisecond)
		synctestWait()
		if s := a.Stats(); s.DroppedMaxAge != 0 {
			t.Fatalf("dropped %d before the max age", s.DroppedMaxAge)
		}
		time.Sleep(time.Millisecond)
		synctestWait()
		if s, st := a.Stats(), a.Status(); s.DroppedMaxAge != 10 || st.OutboxLen != 5 {
			t.Fatalf("at 1s: dropped %d, outbox %d; want 10, 5", s.DroppedMaxAge, st.OutboxLen)
		}
		time.Sleep(500 * time.Millisecond)
		synctestWait()
		if s, st := a.Stats(), a.Status(); s.DroppedMaxAge != 15 || st.OutboxLen != 0 {
			t.Fatalf("at 1.5s: dropped %d, outbox %d; want 15, 0", s.DroppedMaxAge, st.OutboxLen)
		}
		count, seqs := drops.total(DropMaxAge)
		if count != 15 || len(seqs) != 2 || seqs[0].First != 1 || seqs[0].Last != 10 || seqs[1].First != 11 || seqs[1].Last != 15 {
			t.Fatalf("hook: %d drops, ranges %+v", count, seqs)
		}
		if n := logs.count("bus outbox dropping messages older than the max age"); n != 1 {
			t.Fatalf("%d max-age log lines, want 1: %q", n, logs.all())
		}
		// Messages younger than the max age survive the outage. The sender found
		// its outbox empty at 1.5 s and waits for the next message: bring the
		// broker back first, or that publish fails and the message expires
		// before the next attempt.
		r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
		sr := newSink()
		r.Receive(sr.handle)
		hub.setDown(false)
		if err := a.Publish(ctx, "k", payload("a", 16)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Second)
		synctestWait()
		if got := sr.all(); len(got) != 1 || got[0].Seq != 16 {
			t.Fatalf("received %+v, want seq 16 only", got)
		}
	})
}

// TestReplayAfterOutage: three nodes publish while the broker is down; when it is
// back every node has every message of the others exactly once, in order.
func TestReplayAfterOutage(t *testing.T) {
	hub := NewMemoryHub()
	nodes := []string{"a", "b", "c"}
	buses := make(map[string]*Reliable)
	sinks := make(map[string]*sink)
	logs := make(map[string]*logCounter)
	for _, n := range nodes {
		logs[n] = newLogCounter()
		buses[n] = newBus(t, hub, Config{NodeID: n, Logger: slogNew(logs[n]),
			ProbeInterval: 20 * time.Millisecond, ProbeTimeout: time.Second,
			Backoff: BackoffConfig{Base: 5 * time.Millisecond, Cap: 50 * time.Millisecond}, BatchSize: 64})
		sinks[n] = newSink()
		buses[n].Receive(sinks[n].handle)
	}
	for _, n := range nodes {
		waitState(t, buses[n], Connected, 10*time.Second)
	}
	ctx := context.Background()
	const before, during, after = 100, 2000, 100
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			for _, n := range nodes {
				if err := buses[n].Publish(ctx, fmt.Sprint("room", i%5), payload(n, i)); err != nil {
					t.Fatalf("%s Publish %d: %v", n, i, err)
				}
			}
		}
	}
	publish(1, before)
	hub.setDown(true)
	for _, n := range nodes {
		waitState(t, buses[n], Reconnecting, 10*time.Second)
	}
	publish(before+1, before+during)
	for _, n := range nodes {
		if st := buses[n].Status(); st.OutboxLen < during || st.State == Connected {
			t.Fatalf("%s during the outage: %+v", n, st)
		}
		if err := buses[n].Send(ctx, "", []byte("x")); !errors.Is(err, ErrNotConnected) {
			t.Fatalf("%s Send while down = %v, want ErrNotConnected", n, err)
		}
	}
	hub.setDown(false)
	publish(before+during+1, before+during+after)
	total := before + during + after
	for _, n := range nodes {
		want := make(map[string]int)
		for _, o := range nodes {
			if o != n {
				want[o] = total
			}
		}
		checkStreams(t, sinks[n].wait(t, 2*total, 20*time.Second), want)
		waitState(t, buses[n], Connected, 10*time.Second)
	}
	for _, n := range nodes {
		s := buses[n].Stats()
		if s.Gaps != 0 || s.DecodeErrors != 0 || s.Published != uint64(total) || s.Reconnects == 0 {
			t.Fatalf("%s stats %+v", n, s)
		}
		if c := logs[n].count("bus reconnecting"); c != 1 {
			t.Fatalf("%s: %d reconnecting log lines for one outage, want 1: %q", n, c, logs[n].all())
		}
		if st := buses[n].Status(); len(st.Nodes) != 2 {
			t.Fatalf("%s sees nodes %v, want the 2 others", n, st.Nodes)
		}
	}
}

// TestDuplicatesDropped: a publish whose frames were stored but that returned an
// error is retried; receivers drop the second copies.
func TestDuplicatesDropped(t *testing.T) {
	hub := NewMemoryHub()
	a := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1,
		Backoff: BackoffConfig{Base: time.Millisecond, Cap: 5 * time.Millisecond}, BatchSize: 16})
	r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
	sr := newSink()
	r.Receive(sr.handle)
	hub.failNextWrites(5)
	const n = 300
	for i := 1; i <= n; i++ {
		if err := a.Publish(context.Background(), fmt.Sprint(i%3), payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	checkStreams(t, sr.wait(t, n, 10*time.Second), map[string]int{"a": n})
	replayed := a.Stats().Replayed
	if replayed < 5 {
		t.Fatalf("replayed %d frames after 5 failed publishes", replayed)
	}
	// Every republished frame reached the receiver twice; it dropped one copy.
	testwait.For(t, 10*time.Second, "duplicates", func() bool { return r.Stats().Duplicates == replayed })
	if got := sr.len(); got != n {
		t.Fatalf("received %d, want %d", got, n)
	}
}

// TestGapAfterBrokerLoss: the broker forgets messages a receiver had not read yet
// (a restart without persistence); the receiver reports the gap and continues.
func TestGapAfterBrokerLoss(t *testing.T) {
	hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 1})
	a := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1})
	var gapMu sync.Mutex
	var gaps []Gap
	logs := newLogCounter()
	r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1, Logger: slogNew(logs), OnGap: func(g Gap) {
		gapMu.Lock()
		gaps = append(gaps, g)
		gapMu.Unlock()
	}})
	sr := newSink()
	r.Receive(sr.handle)
	ctx := context.Background()
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if err := a.Publish(ctx, "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		testwait.For(t, 10*time.Second, "outbox to empty", func() bool { return a.Status().OutboxLen == 0 })
	}
	publish(1, 10)
	sr.wait(t, 10, 10*time.Second)
	hub.breakSubscriptions() // r stops reading, silently
	publish(11, 20)
	hub.lose() // 11..20 are gone before r read them
	publish(21, 30)
	r.recv.rebuildSubscription()
	got := sr.wait(t, 20, 10*time.Second)
	if got[10].Seq != 21 || got[19].Seq != 30 {
		t.Fatalf("after the loss got seqs %d..%d, want 21..30", got[10].Seq, got[19].Seq)
	}
	gapMu.Lock()
	defer gapMu.Unlock()
	if len(gaps) != 1 || gaps[0] != (Gap{Origin: "a", Partition: 0, After: 10, Next: 21, Missing: 10}) {
		t.Fatalf("gaps %+v", gaps)
	}
	if s := r.Stats(); s.Gaps != 1 || s.GapMessages != 10 || s.Received != 20 {
		t.Fatalf("stats %+v", s)
	}
	if n := logs.count("bus sequence gap: messages of another node were lost"); n != 1 {
		t.Fatalf("%d gap log lines, want 1", n)
	}
}

// TestLongOutageStaysBounded: ten minutes (fake time) of publishing into a down
// broker. The outbox never exceeds its bounds, and every accepted message is
// accounted for: published, dropped with a reason, or still waiting. When the
// broker is back, the receiver gets what was kept, and reports the rest as gaps.
func TestLongOutageStaysBounded(t *testing.T) {
	for _, policy := range []OverflowPolicy{RejectNew, DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			synctestRun(t, func(t *testing.T) {
				hub := NewMemoryHub()
				const maxMessages = 1000
				size := envelopeSize(t, "a", 0, payload("a", 10000))
				maxBytes := 800 * size
				a := newBus(t, hub, Config{NodeID: "a", Outbox: OutboxConfig{MaxMessages: maxMessages, MaxBytes: maxBytes,
					MaxAge: time.Minute, Overflow: policy}})
				r := newBus(t, hub, Config{NodeID: "r"})
				sr := newSink()
				r.Receive(sr.handle)
				ctx := context.Background()
				if err := a.Publish(ctx, "k", payload("a", 10000)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Second)
				synctestWait()
				sr.wait(t, 1, time.Second) // baseline
				hub.setDown(true)
				i, rejected := 10001, 0
				for tick := 0; tick < 6000; tick++ { // 10 minutes, 50 messages a second
					for range 5 {
						err := a.Publish(ctx, "k", payload("a", i))
						switch {
						case err == nil:
							i++
						case errors.Is(err, ErrOutboxFull) && policy == RejectNew:
							rejected++
						default:
							t.Fatalf("Publish: %v", err)
						}
					}
					time.Sleep(100 * time.Millisecond)
					synctestWait()
					st, s := a.Status(), a.Stats()
					if st.OutboxLen > maxMessages || st.OutboxBytes > maxBytes {
						t.Fatalf("outbox beyond its bounds: %+v", st)
					}
					if st.OutboxOldest > time.Minute {
						t.Fatalf("outbox holds a message of age %v", st.OutboxOldest)
					}
					if s.Accepted != s.Published+s.DroppedMaxAge+s.DroppedOverflow+uint64(st.OutboxLen) {
						t.Fatalf("unaccounted messages: %+v, outbox %d", s, st.OutboxLen)
					}
				}
				s := a.Stats()
				// Reject-new fills up and then only ages out; drop-oldest turns over
				// faster than the max age.
				if (policy == DropOldest && s.DroppedOverflow == 0) || (policy == RejectNew && (rejected == 0 || s.DroppedMaxAge == 0 || s.DroppedOverflow != 0)) {
					t.Fatalf("stats after the outage %+v, %d rejected", s, rejected)
				}
				if a.Status().State != Reconnecting {
					t.Fatalf("state %v during the outage", a.Status().State)
				}
				hub.setDown(false)
				time.Sleep(15 * time.Second) // the backoff cap, and then some
				synctestWait()
				// What aged out while the sender waited for its next attempt is
				// dropped too; everything else arrives.
				s = a.Stats()
				if st := a.Status(); st.OutboxLen != 0 || st.State != Connected {
					t.Fatalf("after the outage: %+v", st)
				}
				if got := sr.len(); uint64(got) != s.Published {
					t.Fatalf("receiver has %d messages, sender published %d", got, s.Published)
				}
				rs := r.Stats()
				if rs.Gaps == 0 || rs.GapMessages != s.DroppedMaxAge+s.DroppedOverflow {
					t.Fatalf("receiver stats %+v, sender dropped %d", rs, s.DroppedMaxAge+s.DroppedOverflow)
				}
			})
		})
	}
}
