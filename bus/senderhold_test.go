package bus

import (
	"context"
	"testing"
	"time"
)

// TestSenderHoldOnlyWithoutLog: after the broker returns, a sender on a
// transport without a log (the memory hub stands for pub/sub here) waits
// senderHold longer than its receiver, so the other nodes are subscribed again
// before its backlog goes out; a sender on a transport that keeps a log
// (StartMarker, as Redis streams) goes within the readiness interval and the
// recovery jitter, since readers that come back later still find the backlog.
func TestSenderHoldOnlyWithoutLog(t *testing.T) {
	synctestRun(t, func(t *testing.T) {
		backoff := BackoffConfig{Base: 100 * time.Millisecond, Cap: time.Minute}
		plainHub, loggedHub := NewMemoryHub(), NewMemoryHub()
		plain := newBusJitter(t, plainHub, Config{NodeID: "plain", Backoff: backoff}, maxJitter)
		logged, err := newReliable(&startMarking{Transport: loggedHub.Transport()},
			Config{NodeID: "logged", Backoff: backoff, Logger: quietLogger()}, maxJitter)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := logged.Close(context.Background()); err != nil {
				t.Error(err)
			}
		}()
		time.Sleep(1500 * time.Millisecond)
		synctestWait()

		plainHub.setDown(true)
		loggedHub.setDown(true)
		for _, b := range []*Reliable{plain, logged} {
			if err := b.Publish(context.Background(), "k", []byte("m")); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Second)
		synctestWait()
		for _, b := range []*Reliable{plain, logged} {
			if st := b.Status(); st.OutboxLen != 1 || st.State == Connected {
				t.Fatalf("%s during the outage: %+v", b.NodeID(), st)
			}
		}

		plainHub.setDown(false)
		loggedHub.setDown(false)
		back := time.Now()
		sent := map[*Reliable]time.Duration{}
		for i := 0; i < 200 && len(sent) < 2; i++ {
			time.Sleep(5 * time.Millisecond)
			synctestWait()
			for _, b := range []*Reliable{plain, logged} {
				if _, ok := sent[b]; !ok && b.Status().OutboxLen == 0 {
					sent[b] = time.Since(back)
				}
			}
		}
		if len(sent) != 2 {
			t.Fatalf("1 s after the broker returned, published: %v", sent)
		}
		// The readiness ping finds the broker back within readinessInterval;
		// maxJitter makes every recovery jitter recoveryJitter.
		if d := sent[logged]; d > readinessInterval+recoveryJitter+5*time.Millisecond {
			t.Fatalf("sender with a log published its backlog %v after the broker returned", d)
		}
		if d := sent[plain]; d < senderHold+recoveryJitter || d > readinessInterval+senderHold+recoveryJitter+5*time.Millisecond {
			t.Fatalf("sender without a log published its backlog %v after the broker returned, want %v to %v",
				d, senderHold+recoveryJitter, readinessInterval+senderHold+recoveryJitter)
		}
	})
}
