package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// replTransport is a Transport over a memory hub whose replicas can fall
// behind: while short, a Publish that waits for replicas writes its frames and
// returns ErrNotReplicated, and AwaitReplicas returns ErrNotReplicated.
type replTransport struct {
	Transport
	mu         sync.Mutex
	short      bool
	failAwait  int            // AwaitReplicas calls left to fail with a broker error
	writes     map[uint64]int // data seq -> times written
	waited     int            // publishes that waited for replicas
	probesWait int            // probe frames without NoWait
	// refuse is the number of publishes with data frames left to refuse with
	// ErrPrimaryChanged (nothing written); order is the data seqs written
	// after the last refusal, in order.
	refuse  int
	refused int
	order   []uint64
	// refuseProbe is the number of probe publishes left to refuse with
	// ErrPrimaryChanged. Like redisbus, the transport then forgets the
	// writes that waited for replicas (forgot): its next AwaitReplicas says
	// so (ErrPrimaryChanged), then it has nothing left to compare and
	// confirms.
	refuseProbe int
	forgot      bool
	reported    bool
}

var errBrokerGone = errors.New("broker gone")

func newReplTransport(hub *MemoryHub) *replTransport {
	return &replTransport{Transport: hub.Transport(), writes: map[uint64]int{}}
}

func (t *replTransport) Publish(ctx context.Context, frames []Frame) error {
	t.mu.Lock()
	if t.refuseProbe > 0 && frames[0].Probe {
		t.refuseProbe--
		t.refused++
		t.order = nil
		t.forgot = true
		t.mu.Unlock()
		return fmt.Errorf("test: the slot moved: %w", ErrPrimaryChanged)
	}
	if t.refuse > 0 && !frames[0].Probe {
		t.refuse--
		t.refused++
		t.order = nil
		t.mu.Unlock()
		return fmt.Errorf("test: the kept writes are not on this primary: %w", ErrPrimaryChanged)
	}
	t.mu.Unlock()
	if err := t.Transport.Publish(ctx, frames); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	wait := false
	for _, f := range frames {
		e, err := decodeEnvelope(f.Data, nil)
		if err != nil {
			return err
		}
		switch e.Kind {
		case kindData:
			t.writes[e.Seq]++
			t.order = append(t.order, e.Seq)
		case kindProbe:
			if !f.NoWait {
				t.probesWait++
			}
		}
		wait = wait || !f.NoWait
	}
	if wait {
		t.waited++
	}
	if wait && t.short {
		return fmt.Errorf("test: 0 of 1 replicas: %w", ErrNotReplicated)
	}
	return nil
}

func (t *replTransport) AwaitReplicas(ctx context.Context, partitions []int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failAwait > 0 {
		t.failAwait--
		return errBrokerGone
	}
	if t.forgot {
		if !t.reported {
			t.reported = true
			return fmt.Errorf("test: writes forgotten at a primary change: %w", ErrPrimaryChanged)
		}
		return nil
	}
	if t.short {
		return fmt.Errorf("test: 0 of 1 replicas: %w", ErrNotReplicated)
	}
	return nil
}

func (t *replTransport) set(f func(t *replTransport)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f(t)
}

// timesWritten returns how many seqs were written once, and how many more
// than once.
func (t *replTransport) timesWritten() (once, again int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.writes {
		if n == 1 {
			once++
		} else {
			again++
		}
	}
	return once, again
}

// TestUnderReplicationKeepsAndRewaits (fake time): while replicas fall short,
// accepted messages are written once, delivered, kept in the outbox past
// their max age without being dropped, and the bus stays Connected with
// UnderReplicated set; when the replicas catch up the outbox empties.
func TestUnderReplicationKeepsAndRewaits(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		tr := newReplTransport(hub)
		tr.set(func(t *replTransport) { t.short = true })
		cfg := Config{NodeID: "a", Logger: quietLogger(), Outbox: OutboxConfig{MaxAge: time.Second}}
		a, err := New(tr, &cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close(context.Background())
		r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
		in := newSink()
		r.Receive(in.handle)
		a.Receive(func(Message) {})
		const n = 100
		for i := range n {
			if err := a.Publish(context.Background(), "k", payload("a", i+1)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(5 * time.Second) // five max ages, many probe rounds
		synctestWait()
		if got := in.len(); got != n {
			t.Fatalf("receiver got %d of %d", got, n)
		}
		st, s := a.Status(), a.Stats()
		if st.State != Connected || !st.UnderReplicated || st.OutboxLen != n {
			t.Errorf("status %+v: want connected, under-replicated, %d messages kept", st, n)
		}
		if s.DroppedMaxAge != 0 || s.Published != 0 || s.ReplicaWaits == 0 || s.UnderReplicated != 1 {
			t.Errorf("stats %+v", s)
		}
		if once, again := tr.timesWritten(); once != n || again != 0 {
			t.Errorf("%d seqs written once, %d more than once; want %d and 0", once, again, n)
		}
		tr.mu.Lock()
		probesWait := tr.probesWait
		tr.mu.Unlock()
		if probesWait != 0 || a.Stats().ProbesSent == 0 {
			t.Errorf("%d probe frames waited for replicas (of %d rounds), want 0", probesWait, a.Stats().ProbesSent)
		}

		tr.set(func(t *replTransport) { t.short = false })
		time.Sleep(time.Second)
		synctestWait()
		st, s = a.Status(), a.Stats()
		if st.OutboxLen != 0 || st.UnderReplicated || s.Published != n || s.DroppedMaxAge != 0 {
			t.Errorf("after the replicas caught up: status %+v, stats %+v", st, s)
		}
		// Later batches wait for replicas again.
		waited := func() int {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			return tr.waited
		}
		before := waited()
		if err := a.Publish(context.Background(), "k", payload("a", n+1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		synctestWait()
		if after := waited(); after == before || a.Status().OutboxLen != 0 {
			t.Errorf("a batch after recovery did not wait for replicas (waited %d -> %d) or stayed", before, after)
		}
	})
}

// TestUnderReplicationBrokerErrorRepublishes (fake time): when asking for
// replicas fails (the broker failed over and may have lost the unreplicated
// writes), the kept messages are written again; the receiver drops the
// duplicates.
func TestUnderReplicationBrokerErrorRepublishes(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		tr := newReplTransport(hub)
		tr.set(func(t *replTransport) { t.short, t.failAwait = true, 1 })
		a, err := New(tr, &Config{NodeID: "a", Logger: quietLogger(), ProbeInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close(context.Background())
		r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
		in := newSink()
		r.Receive(in.handle)
		const n = 10
		for i := range n {
			if err := a.Publish(context.Background(), "k", payload("a", i+1)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(2 * time.Second)
		synctestWait()
		if once, again := tr.timesWritten(); once+again != n || again == 0 {
			t.Errorf("%d seqs written once, %d again; want the kept ones written again after the broker error", once, again)
		}
		tr.set(func(t *replTransport) { t.short = false })
		time.Sleep(2 * time.Second)
		synctestWait()
		if got, s := in.len(), r.Stats(); got != n || s.Duplicates == 0 {
			t.Errorf("receiver: %d messages, %d duplicates dropped; want %d and some", got, s.Duplicates, n)
		}
		if st := a.Status(); st.OutboxLen != 0 || st.UnderReplicated {
			t.Errorf("status %+v", st)
		}
	})
}

// TestPrimaryChangedRewritesFirst (fake time): when the transport refuses a
// batch because the messages written without replicas are not on the primary
// serving now (a failover), the bus writes those again at once, before the
// refused batch and anything newer, without backing off or leaving
// Connected; the receiver gets every message once, in order, with no gap.
func TestPrimaryChangedRewritesFirst(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		tr := newReplTransport(hub)
		tr.set(func(t *replTransport) { t.short = true })
		a, err := New(tr, &Config{NodeID: "a", Logger: quietLogger(), ProbeInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close(context.Background())
		r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1})
		in := newSink()
		r.Receive(in.handle)
		const n = 10
		for i := range n / 2 {
			if err := a.Publish(context.Background(), "k", payload("a", i+1)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		synctestWait()
		if st := a.Status(); !st.UnderReplicated || st.OutboxLen != n/2 {
			t.Fatalf("status %+v: want under-replicated with %d kept", st, n/2)
		}
		// The primary changes: the next batch is refused, once.
		tr.set(func(t *replTransport) { t.refuse = 1 })
		for i := n / 2; i < n; i++ {
			if err := a.Publish(context.Background(), "k", payload("a", i+1)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		synctestWait()
		tr.mu.Lock()
		order, refused := append([]uint64(nil), tr.order...), tr.refused
		tr.mu.Unlock()
		if refused != 1 || len(order) < n || order[0] != 1 {
			t.Fatalf("%d refusals; data written after it %v: want every seq from 1 on", refused, order)
		}
		for i, seq := range order[:n] {
			if seq != uint64(i+1) {
				t.Fatalf("data written after the refusal %v: want 1..%d in order first", order, n)
			}
		}
		if s := a.Stats(); s.PrimaryChanges != 1 || s.Reconnects != 0 {
			t.Errorf("stats %+v: want 1 primary change and no reconnect", s)
		}
		if st := a.Status(); st.State != Connected {
			t.Errorf("state %v, want connected", st.State)
		}
		tr.set(func(t *replTransport) { t.short = false })
		time.Sleep(2 * time.Second)
		synctestWait()
		if got, s := in.len(), r.Stats(); got != n || s.Gaps != 0 {
			t.Errorf("receiver: %d messages, %d gaps; want %d and none", got, s.Gaps, n)
		}
		if st := a.Status(); st.OutboxLen != 0 || st.UnderReplicated {
			t.Errorf("status %+v", st)
		}
	})
}

// TestProbeMeetsPrimaryChange (fake time): messages written while replicas
// fell short wait in the outbox; then the primary changes and a probe is the
// first write to meet it (a Redis Cluster takeover answered with MOVED). The
// transport forgets the unconfirmed writes as it refuses the probe, so the
// bus must write them again to the new primary before it trusts a
// confirmation: every seq is written again after the refusal, in order, and
// the receiver gets every message once with no gap.
func TestProbeMeetsPrimaryChange(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		tr := newReplTransport(hub)
		tr.set(func(t *replTransport) { t.short = true })
		a, err := New(tr, &Config{NodeID: "a", Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			a.Close(ctx)
		}()
		a.Receive(func(Message) {}) // starts the prober
		r := newBus(t, hub, Config{NodeID: "r"})
		in := newSink()
		r.Receive(in.handle)
		const n = 5
		for i := range n {
			if err := a.Publish(context.Background(), "k", payload("a", i+1)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Millisecond)
		synctestWait()
		if st := a.Status(); !st.UnderReplicated || st.OutboxLen != n {
			t.Fatalf("status %+v: want under-replicated with %d kept", st, n)
		}
		tr.set(func(t *replTransport) { t.refuseProbe = 1 })
		time.Sleep(5 * time.Second)
		synctestWait()
		tr.mu.Lock()
		order, refused := append([]uint64(nil), tr.order...), tr.refused
		tr.mu.Unlock()
		if refused != 1 {
			t.Fatalf("%d probes refused, want 1", refused)
		}
		if len(order) < n {
			t.Fatalf("data written after the probe met the new primary: %v; want 1..%d again (the new primary may lack them)", order, n)
		}
		for i, seq := range order[:n] {
			if seq != uint64(i+1) {
				t.Fatalf("data written after the refusal %v: want 1..%d in order first", order, n)
			}
		}
		if got, s := in.len(), r.Stats(); got != n || s.Gaps != 0 {
			t.Errorf("receiver: %d messages, %d gaps; want %d and none", got, s.Gaps, n)
		}
		if st := a.Status(); st.OutboxLen != 0 {
			t.Errorf("status %+v: want the outbox empty once confirmed", st)
		}
	})
}
