package bus

import (
	"context"

	"sync"
	"testing"
	"time"
)

// timedSink records the fake time at which each message arrived.
type timedSink struct {
	mu sync.Mutex
	at map[string]time.Time // payload -> arrival
}

func (s *timedSink) handle(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = make(map[string]time.Time)
	}
	s.at[string(m.Payload)] = time.Now()
}

func (s *timedSink) arrival(p string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.at[p]
	return t, ok
}

func (s *timedSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at)
}

func attemptOf(b *Reliable, c component) int {
	b.sm.mu.Lock()
	defer b.sm.mu.Unlock()
	return b.sm.comps[c].attempt
}

func subscribed(b *Reliable) bool {
	b.recv.subMu.Lock()
	defer b.recv.subMu.Unlock()
	return b.recv.subCancel != nil
}

// TestBrokerReturnEndsBackoff: after a 10 s outage with a 1 min backoff cap
// (waits at their ceiling: the next scheduled attempts are at 12.7 s), the
// readiness pings find the broker back within readinessInterval, and the
// receiver subscribes again and the sender publishes its backlog within a
// bound of the broker's return measured in fake time, instead of at the next
// scheduled attempt. Readiness pings count no attempts: the attempt counters,
// Failed after MaxAttempts and one log line per transition are unchanged.
func TestBrokerReturnEndsBackoff(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		backoff := BackoffConfig{Base: 100 * time.Millisecond, Cap: time.Minute, MaxAttempts: 6}
		logsA, logsR := newLogCounter(), newLogCounter()
		a := newBusJitter(t, hub, Config{NodeID: "a", Backoff: backoff, Logger: slogNew(logsA)}, maxJitter)
		r := newBusJitter(t, hub, Config{NodeID: "r", Backoff: backoff, Logger: slogNew(logsR)}, maxJitter)
		sr := &timedSink{}
		r.Receive(sr.handle)
		time.Sleep(2500 * time.Millisecond)
		synctestWait()
		for _, b := range []*Reliable{a, r} {
			if st := b.Status(); st.State != Connected {
				t.Fatalf("%s before the outage: %+v", b.NodeID(), st)
			}
		}

		hub.setDown(true)
		const outage = 10 * time.Second
		down := time.Now()
		for i := 1; i <= 10; i++ {
			if err := a.Publish(context.Background(), "k", payload("a", i)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(outage / 10)
		}
		synctestWait()
		if time.Since(down) != outage {
			t.Fatalf("outage of %v", time.Since(down))
		}
		// Failures at 0, 0.1, 0.3, 0.7, 1.5, 3.1 and 6.3 s; the next attempt is
		// due at 12.7 s.
		if got := attemptOf(a, compPublish); got != 7 {
			t.Fatalf("sender at attempt %d after the outage, want 7 (readiness pings must not count)", got)
		}
		if got := attemptOf(r, compSubscribe); got != 7 {
			t.Fatalf("receiver at attempt %d after the outage, want 7", got)
		}
		for _, b := range []*Reliable{a, r} {
			if st := b.Status(); st.State != Failed || st.OutboxLen != map[string]int{"a": 10, "r": 0}[b.NodeID()] {
				t.Fatalf("%s at the end of the outage: %+v", b.NodeID(), st)
			}
		}
		if n := sr.len(); n != 0 {
			t.Fatalf("%d messages received during the outage", n)
		}

		hub.setDown(false)
		back := time.Now()
		var resubscribed, published time.Time
		for i := 0; i < 200 && (resubscribed.IsZero() || published.IsZero()); i++ {
			time.Sleep(5 * time.Millisecond)
			synctestWait()
			if resubscribed.IsZero() && subscribed(r) {
				resubscribed = time.Now()
			}
			if published.IsZero() && a.Status().OutboxLen == 0 {
				published = time.Now()
			}
		}
		if resubscribed.IsZero() || published.IsZero() {
			t.Fatalf("1 s after the broker returned: resubscribed %v, published %v", !resubscribed.IsZero(), !published.IsZero())
		}
		// Found back by a readiness ping within readinessInterval; the receiver
		// then waits at most recoveryJitter, the sender senderHold more.
		if d := resubscribed.Sub(back); d > readinessInterval+recoveryJitter+5*time.Millisecond {
			t.Fatalf("receiver subscribed again %v after the broker returned", d)
		}
		if d := published.Sub(back); d > readinessInterval+senderHold+recoveryJitter+5*time.Millisecond {
			t.Fatalf("sender published its backlog %v after the broker returned", d)
		}
		time.Sleep(time.Second)
		synctestWait()
		for i := 1; i <= 10; i++ {
			at, ok := sr.arrival(string(payload("a", i)))
			if !ok {
				t.Fatalf("message %d not received", i)
			}
			if d := at.Sub(back); d < 0 || d > time.Second {
				t.Fatalf("message %d received %v after the broker returned", i, d)
			}
		}
		for _, b := range []*Reliable{a, r} {
			st, s := b.Status(), b.Stats()
			if st.State != Connected || st.Attempt != 0 || s.BrokerReturns != 1 {
				t.Fatalf("%s after the outage: %+v %+v", b.NodeID(), st, s)
			}
		}
		if s := r.Stats(); s.Received != 10 || s.Duplicates != 0 || s.Gaps != 0 {
			t.Fatalf("receiver stats %+v", s)
		}
		for _, logs := range []*logCounter{logsA, logsR} {
			for msg, n := range map[string]int{"bus reconnecting": 1, "bus connected": 2,
				"bus failed: reconnect attempts exhausted; still buffering within the outbox bounds and retrying at the backoff cap": 1} {
				if got := logs.count(msg); got != n {
					t.Fatalf("%d lines %q, want %d: %q", got, msg, n, logs.all())
				}
			}
		}
	})
}

// TestBackoffKeptWhileBrokerAnswers: publishes that fail while pings succeed
// (the broker is up but refuses the writes) keep their full backoff: a
// recovery is only a ping answering after a failed one.
func TestBackoffKeptWhileBrokerAnswers(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		a := newBusJitter(t, hub, Config{NodeID: "a", Backoff: BackoffConfig{Base: 100 * time.Millisecond, Cap: time.Minute}}, maxJitter)
		time.Sleep(1500 * time.Millisecond)
		synctestWait()
		hub.failNextWrites(6)
		start := time.Now()
		if err := a.Publish(context.Background(), "k", []byte("m")); err != nil {
			t.Fatal(err)
		}
		// Failures at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s; the 7th attempt, at 6.3 s,
		// succeeds.
		time.Sleep(6300*time.Millisecond - time.Nanosecond)
		synctestWait()
		if st, s := a.Status(), a.Stats(); st.OutboxLen != 1 || st.Attempt != 6 || s.BrokerReturns != 0 {
			t.Fatalf("%v after the first failure: %+v %+v", time.Since(start), st, s)
		}
		time.Sleep(time.Nanosecond)
		synctestWait()
		if st := a.Status(); st.OutboxLen != 0 || st.State != Connected {
			t.Fatalf("after the scheduled attempt: %+v", st)
		}
	})
}

// startMarking is a memory transport that also implements StartMarker and
// fails MarkStart while the hub is down.
type startMarking struct {
	Transport
	mu    sync.Mutex
	calls int
	ok    int
}

func (s *startMarking) MarkStart(ctx context.Context) error {
	err := s.Ping(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if err == nil {
		s.ok++
	}
	return err
}

func (s *startMarking) counts() (calls, ok int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.ok
}

// TestMarkStartAtNew: New fixes the start of a StartMarker transport as soon as
// the broker answers, retrying with backoff (ended by the broker's return),
// once; and stops trying when Receive comes first.
func TestMarkStartAtNew(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		hub := NewMemoryHub()
		hub.setDown(true)
		tr := &startMarking{Transport: hub.Transport()}
		b, err := newReliable(tr, Config{NodeID: "a", Logger: quietLogger(),
			Backoff: BackoffConfig{Base: 100 * time.Millisecond, Cap: time.Minute}}, maxJitter)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := b.Close(context.Background()); err != nil {
				t.Error(err)
			}
		}()
		time.Sleep(10 * time.Second)
		synctestWait()
		// Attempts at 0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 s.
		if calls, ok := tr.counts(); calls != 7 || ok != 0 {
			t.Fatalf("while down: %d MarkStart calls, %d ok; want 7, 0", calls, ok)
		}
		hub.setDown(false)
		time.Sleep(readinessInterval + recoveryJitter)
		synctestWait()
		if calls, ok := tr.counts(); calls != 8 || ok != 1 {
			t.Fatalf("after the broker returned: %d MarkStart calls, %d ok; want 8, 1", calls, ok)
		}
		time.Sleep(5 * time.Second)
		synctestWait()
		if calls, _ := tr.counts(); calls != 8 {
			t.Fatalf("%d MarkStart calls after the first success", calls)
		}

		// Receive while MarkStart is still failing: the attempts stop.
		hub.setDown(true)
		tr2 := &startMarking{Transport: hub.Transport()}
		b2, err := newReliable(tr2, Config{NodeID: "b", Logger: quietLogger(), ProbeInterval: -1,
			Backoff: BackoffConfig{Base: 100 * time.Millisecond, Cap: time.Minute}}, maxJitter)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := b2.Close(context.Background()); err != nil {
				t.Error(err)
			}
		}()
		time.Sleep(2 * time.Second)
		synctestWait()
		b2.Receive(func(Message) {})
		synctestWait()
		calls, _ := tr2.counts()
		time.Sleep(30 * time.Second)
		synctestWait()
		if now, _ := tr2.counts(); now != calls || calls != 5 {
			t.Fatalf("MarkStart calls: %d before Receive (want 5), %d after", calls, now)
		}
		hub.setDown(false)
	})
}
