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
