package engineio

import (
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"
)

// TestHeartbeatTiming checks, on a fake clock, that pings leave every
// PingInterval after the last pong and that a missing pong closes the session
// exactly PingTimeout after the ping, with no grace period.
func TestHeartbeatTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder(false)
		srv := NewServer(rec, &Options{PingInterval: 300 * time.Millisecond, PingTimeout: 200 * time.Millisecond})
		sess := srv.newSession(httptest.NewRequest("GET", "/engine.io/?EIO=4&transport=polling", nil), nil)
		if !srv.register(sess) {
			t.Fatal("register refused")
		}
		sess.open()
		start := time.Now()
		queued := func() []byte {
			sess.mu.Lock()
			defer sess.mu.Unlock()
			b := appendPayload(nil, sess.queue)
			sess.queue = nil
			return b
		}
		if got := string(queued()[:1]); got != "0" {
			t.Fatalf("first packet %q, want open", got)
		}

		time.Sleep(300*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if got := queued(); len(got) != 0 {
			t.Fatalf("queued %q before the ping interval", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := string(queued()); got != "2" {
			t.Fatalf("queued %q at the ping interval, want ping", got)
		}
		// A pong 150ms later moves the next ping to 300ms after it.
		time.Sleep(150 * time.Millisecond)
		sess.onPong()
		time.Sleep(300*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if got := queued(); len(got) != 0 {
			t.Fatalf("queued %q early", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := string(queued()); got != "2" {
			t.Fatalf("queued %q, want second ping", got)
		}
		pingAt := time.Now()

		time.Sleep(200*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		select {
		case <-sess.Done():
			t.Fatal("closed before the ping timeout")
		default:
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		select {
		case <-sess.Done():
		default:
			t.Fatal("not closed at the ping timeout")
		}
		if reason, _ := rec.closeReason(sess.ID()); reason != ReasonPingTimeout {
			t.Errorf("reason = %q", reason)
		}
		if d := time.Since(pingAt); d != 200*time.Millisecond {
			t.Errorf("closed %v after the ping", d)
		}
		if d := time.Since(start); d != 950*time.Millisecond {
			t.Errorf("closed %v after open", d)
		}
	})
}

// TestHeartbeatsManySessions opens sessions at staggered times on a fake
// clock and closes some: each remaining session gets its ping exactly one
// PingInterval after its open, whatever the others do, and the server's
// heartbeat heap holds only open sessions.
func TestHeartbeatsManySessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 40
		interval := 300 * time.Millisecond
		srv := NewServer(newRecorder(false), &Options{PingInterval: interval, PingTimeout: time.Hour})
		sessions := make([]*Session, n)
		opened := make([]time.Time, n)
		for i := range sessions {
			// Out of order: every seventh step of a cycle through 0..n-1.
			time.Sleep(time.Duration((i*7)%n+1) * 100 * time.Microsecond)
			s := srv.newSession(httptest.NewRequest("GET", "/engine.io/?EIO=4&transport=polling", nil), nil)
			if !srv.register(s) {
				t.Fatal("register refused")
			}
			s.open()
			s.mu.Lock()
			s.queue = nil // the open packet
			s.mu.Unlock()
			sessions[i], opened[i] = s, time.Now()
		}
		for i := 0; i < n; i += 3 {
			sessions[i].closeNow(ReasonForcedClose, closeKill)
		}
		srv.hb.mu.Lock()
		if got, want := len(srv.hb.q), n-(n+2)/3; got != want {
			t.Errorf("heap holds %d sessions, want %d", got, want)
		}
		srv.hb.mu.Unlock()
		pinged := make([]time.Time, n)
		deadline := time.Now().Add(2 * interval)
		for time.Now().Before(deadline) {
			// The step of the openings: every ping falls on a step.
			time.Sleep(100 * time.Microsecond)
			synctest.Wait()
			for i, s := range sessions {
				s.mu.Lock()
				if len(s.queue) > 0 && pinged[i].IsZero() {
					pinged[i] = time.Now()
				}
				s.mu.Unlock()
			}
		}
		for i := range sessions {
			closed := i%3 == 0
			switch {
			case closed && !pinged[i].IsZero():
				t.Errorf("closed session %d pinged", i)
			case !closed && !pinged[i].Equal(opened[i].Add(interval)):
				t.Errorf("session %d pinged %v after its open, want %v", i, pinged[i].Sub(opened[i]), interval)
			}
		}
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
	})
}
