package bus

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestBackoffCeilingsAndJitter(t *testing.T) {
	b := newBackoff(BackoffConfig{Base: 100 * time.Millisecond, Cap: 10 * time.Second})
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000}
	for i, w := range want {
		if got := b.ceiling(i + 1); got != w*time.Millisecond {
			t.Fatalf("ceiling(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := b.ceiling(1000); got != 10*time.Second {
		t.Fatalf("ceiling(1000) = %v", got)
	}
	// Full jitter: uniform in [0, ceiling]; both halves are hit.
	for attempt := 1; attempt <= 12; attempt++ {
		c := b.ceiling(attempt)
		low, high := 0, 0
		for range 2000 {
			d := b.delay(attempt)
			if d < 0 || d > c {
				t.Fatalf("delay(%d) = %v outside [0, %v]", attempt, d, c)
			}
			if d < c/2 {
				low++
			} else {
				high++
			}
		}
		if low < 700 || high < 700 {
			t.Fatalf("attempt %d: %d low, %d high of 2000: not uniform", attempt, low, high)
		}
	}
}

// statusLog records OnStateChange calls.
type statusLog struct {
	mu sync.Mutex
	s  []Status
}

func (l *statusLog) hook(s Status) {
	l.mu.Lock()
	l.s = append(l.s, s)
	l.mu.Unlock()
}

func (l *statusLog) states() []State {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []State
	for _, s := range l.s {
		out = append(out, s.State)
	}
	return out
}

// TestBackoffSequenceToFailed follows the sender's attempts in fake time: waits
// 100, 200, 400, 800 ms, then Failed at the 5th attempt, still retrying at the
// cap and still accepting into the outbox, then Connected when the broker is back.
func TestBackoffSequenceToFailed(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		hub.setDown(true)
		logs := newLogCounter()
		states := &statusLog{}
		a := newBusJitter(t, hub, Config{NodeID: "a", ProbeInterval: -1, Logger: slogNew(logs), OnStateChange: states.hook,
			Backoff: BackoffConfig{Base: 100 * time.Millisecond, Cap: time.Second, MaxAttempts: 5}}, maxJitter)
		if st := a.Status(); st.State != Connected {
			t.Fatalf("initial state %v with probes disabled, want connected", st.State)
		}
		changed := a.StateChanged()
		if err := a.Publish(context.Background(), "k", []byte("m")); err != nil {
			t.Fatal(err)
		}
		synctestWait()
		select {
		case <-changed:
		default:
			t.Fatal("StateChanged not closed after a change")
		}
		waits := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
		for i, w := range waits {
			w *= time.Millisecond
			st := a.Status()
			wantState := Reconnecting
			if i+1 >= 5 {
				wantState = Failed
			}
			if st.State != wantState || st.Attempt != i+1 || st.NextRetry != w || st.LastError != errHubDown.Error() {
				t.Fatalf("after attempt %d: %+v, want %v with next retry %v", i+1, st, wantState, w)
			}
			// Nothing happens before the wait is over.
			time.Sleep(w - time.Nanosecond)
			synctestWait()
			if got := a.Status().Attempt; got != i+1 {
				t.Fatalf("attempt %d started %v early", got, time.Nanosecond)
			}
			time.Sleep(time.Nanosecond)
			synctestWait()
		}
		// Failed still buffers.
		if err := a.Publish(context.Background(), "k", []byte("m2")); err != nil {
			t.Fatalf("Publish while Failed: %v", err)
		}
		if st := a.Status(); st.OutboxLen != 2 {
			t.Fatalf("outbox %d while Failed, want 2", st.OutboxLen)
		}
		hub.setDown(false)
		time.Sleep(time.Second)
		synctestWait()
		if st := a.Status(); st.State != Connected || st.OutboxLen != 0 || st.Attempt != 0 || st.LastError != "" {
			t.Fatalf("after recovery: %+v", st)
		}
		want := []State{Reconnecting, Failed, Connected}
		if got := states.states(); !equalStates(got, want) {
			t.Fatalf("OnStateChange saw %v, want %v", got, want)
		}
		for msg, n := range map[string]int{"bus reconnecting": 1, "bus connected": 1,
			"bus failed: reconnect attempts exhausted; still buffering within the outbox bounds and retrying at the backoff cap": 1} {
			if got := logs.count(msg); got != n {
				t.Fatalf("%d lines %q, want %d: %q", got, msg, n, logs.all())
			}
		}
		if s := a.Stats(); s.Published != 2 || s.Replayed != 8 || s.Reconnects != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func equalStates(a, b []State) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStartWhileBrokerDown: a bus created while the broker is down accepts
// Publish, fails Send fast, and connects and delivers when the broker appears.
func TestStartWhileBrokerDown(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		hub.setDown(true)
		r := newBus(t, hub, Config{NodeID: "r"})
		sr := newSink()
		r.Receive(sr.handle)
		a := newBus(t, hub, Config{NodeID: "a"})
		if err := a.Publish(context.Background(), "k", payload("a", 1)); err != nil {
			t.Fatal(err)
		}
		if err := a.Send(context.Background(), "r", []byte("x")); !errors.Is(err, ErrNotConnected) {
			t.Fatalf("Send while down = %v, want ErrNotConnected", err)
		}
		time.Sleep(30 * time.Second)
		synctestWait()
		if st := a.Status(); st.State != Reconnecting || st.OutboxLen != 1 {
			t.Fatalf("status while down: %+v", st)
		}
		hub.setDown(false)
		time.Sleep(15 * time.Second) // at most one backoff cap (10 s) plus probes
		synctestWait()
		for _, b := range []*Reliable{a, r} {
			if st := b.Status(); st.State != Connected {
				t.Fatalf("%s after the broker appeared: %+v", b.NodeID(), st)
			}
		}
		checkStreams(t, sr.all(), map[string]int{"a": 1})
		if err := a.Send(context.Background(), "r", []byte("x")); err != nil {
			t.Fatalf("Send when connected: %v", err)
		}
		time.Sleep(time.Millisecond)
		synctestWait()
		if n := sr.len(); n != 2 {
			t.Fatalf("r has %d messages, want 2", n)
		}
	})
}

// TestProbeRebuildsDeadSubscription: a subscription that silently stops
// delivering is found by the probe within ProbeInterval+ProbeTimeout and rebuilt;
// nothing is lost.
func TestProbeRebuildsDeadSubscription(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		logs := newLogCounter()
		a := newBus(t, hub, Config{NodeID: "a"})
		r := newBus(t, hub, Config{NodeID: "r", Logger: slogNew(logs)})
		sr := newSink()
		r.Receive(sr.handle)
		time.Sleep(2 * time.Second)
		synctestWait()
		if st := r.Status(); st.State != Connected || r.Stats().ProbesSent < 2 || r.Stats().ProbeFailures != 0 {
			t.Fatalf("healthy: %+v %+v", st, r.Stats())
		}
		if nodes := r.Status().Nodes; len(nodes) != 0 {
			t.Fatalf("nodes %v before a receives", nodes)
		}
		hub.breakSubscriptions()
		start := time.Now()
		for i := 1; i <= 50; i++ {
			if err := a.Publish(context.Background(), "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		// Probe round at most ProbeInterval later, missed ProbeTimeout after that.
		time.Sleep(DefaultProbeInterval + DefaultProbeTimeout)
		synctestWait()
		s := r.Stats()
		if s.ProbeFailures != 1 || s.Reconnects != 1 {
			t.Fatalf("%v after the break: stats %+v", time.Since(start), s)
		}
		checkStreams(t, sr.all(), map[string]int{"a": 50})
		time.Sleep(2 * time.Second)
		synctestWait()
		if st := r.Status(); st.State != Connected || r.Stats().ProbeFailures != 1 {
			t.Fatalf("after rebuild: %+v %+v", st, r.Stats())
		}
		for msg, n := range map[string]int{"bus liveness probe missed; rebuilding the subscription": 1, "bus reconnecting": 1, "bus connected": 2} {
			if got := logs.count(msg); got != n {
				t.Fatalf("%d lines %q, want %d: %q", got, msg, n, logs.all())
			}
		}
	})
}

// TestSubscribeRecoversWithoutProbes: with probes disabled, a subscription that
// runs without error for a second after an outage counts as established even
// when no message arrives.
func TestSubscribeRecoversWithoutProbes(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		r := newBusJitter(t, hub, Config{NodeID: "r", ProbeInterval: -1}, maxJitter)
		r.Receive(func(Message) {})
		hub.setDown(true)
		time.Sleep(time.Millisecond)
		synctestWait()
		if st := r.Status(); st.State != Reconnecting || st.Attempt != 1 {
			t.Fatalf("while down: %+v", st)
		}
		hub.setDown(false)
		time.Sleep(DefaultBackoffBase + subscribeSettle)
		synctestWait()
		if st := r.Status(); st.State != Connected {
			t.Fatalf("after the outage: %+v", st)
		}
	})
}

// TestNodesAndPrune: Status.Nodes lists the other nodes heard from recently; a
// node gone for long is forgotten with its sequence state.
func TestNodesAndPrune(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		r := newBus(t, hub, Config{NodeID: "r"})
		r.Receive(func(Message) {})
		var others []*Reliable
		for _, id := range []string{"b", "a"} {
			b, err := New(hub.Transport(), &Config{NodeID: id, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			b.Receive(func(Message) {})
			if err := b.Publish(context.Background(), "k", []byte("x")); err != nil {
				t.Fatal(err)
			}
			others = append(others, b)
		}
		time.Sleep(2 * time.Second)
		synctestWait()
		if got := r.Status().Nodes; len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Fatalf("Nodes = %v, want [a b]", got)
		}
		for _, b := range others {
			if err := b.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(4 * time.Second) // past the liveness window (3 probe intervals)
		synctestWait()
		if got := r.Status().Nodes; len(got) != 0 {
			t.Fatalf("Nodes = %v after the others closed", got)
		}
		r.recv.mu.Lock()
		n, seen := len(r.recv.streams), len(r.recv.nodes)
		r.recv.mu.Unlock()
		if n != 2*DefaultMemoryPartitions || seen != 2 {
			t.Fatalf("%d streams, %d nodes known before pruning, want %d, 2", n, seen, 2*DefaultMemoryPartitions)
		}
		idle := r.pruneAfter() + r.pruneAfter()/10 + time.Minute // pruned at most idle/10 late
		time.Sleep(idle)
		synctestWait()
		r.recv.mu.Lock()
		n, seen = len(r.recv.streams), len(r.recv.nodes)
		r.recv.mu.Unlock()
		if n != 0 || seen != 0 {
			t.Fatalf("%d streams, %d nodes known after %v idle", n, seen, idle)
		}
	})
}

func TestReceiveTwiceAndNil(t *testing.T) {
	hub := NewMemoryHub()
	logs := newLogCounter()
	a := newBus(t, hub, Config{NodeID: "a", ProbeInterval: -1})
	r := newBus(t, hub, Config{NodeID: "r", ProbeInterval: -1, Logger: slogNew(logs)})
	r.Receive(nil)
	first, second := newSink(), newSink()
	r.Receive(first.handle)
	r.Receive(second.handle)
	if err := a.Publish(context.Background(), "k", payload("a", 1)); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 1, 10*time.Second)
	if second.len() != 0 {
		t.Fatal("the second handler received")
	}
	if logs.count("bus: Receive with a nil handler ignored") != 1 || logs.count("bus: Receive called again; the first handler stays") != 1 {
		t.Fatalf("log %q", logs.all())
	}
	if r.Partitions() != DefaultMemoryPartitions {
		t.Fatalf("Partitions = %d", r.Partitions())
	}
	if kindData.String() != "data" || kindProbe.String() != "probe" || kindDirect.String() != "direct" || frameKind(9).String() != "kind(9)" {
		t.Fatal("Kind.String")
	}
}

// TestProbeToleratesBusyHandler: a handler that blocks longer than
// ProbeTimeout (a cluster node waiting for room in a slow client's send queue)
// does not make the probe declare the subscription dead.
func TestProbeToleratesBusyHandler(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		a := newBus(t, hub, Config{NodeID: "a"})
		r := newBus(t, hub, Config{NodeID: "r"})
		release := make(chan struct{})
		sr := newSink()
		r.Receive(func(m Message) {
			if string(m.Payload) == string(payload("a", 1)) {
				<-release
			}
			sr.handle(m)
		})
		time.Sleep(2 * time.Second)
		synctestWait()
		for i := 1; i <= 3; i++ {
			if err := a.Publish(context.Background(), "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Second) // the handler holds the first message
		synctestWait()
		if st, s := r.Status(), r.Stats(); st.State != Connected || s.ProbeFailures != 0 {
			t.Fatalf("while the handler waits: state %v, stats %+v", st.State, s)
		}
		close(release)
		time.Sleep(time.Second)
		synctestWait()
		checkStreams(t, sr.all(), map[string]int{"a": 3})
		if st, s := r.Status(), r.Stats(); st.State != Connected || s.ProbeFailures != 0 {
			t.Fatalf("after: state %v, stats %+v", st.State, s)
		}
	})
}
