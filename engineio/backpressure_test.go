package engineio

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// openBare opens a polling session without HTTP, for tests in a synctest
// bubble: nothing takes its queue until the test does (as a poll would).
func openBare(t *testing.T, srv *Server) *Session {
	t.Helper()
	sess := srv.newSession(httptest.NewRequest(http.MethodGet, "/engine.io/?EIO=4&transport=polling", nil), nil)
	if !srv.register(sess) {
		t.Fatal("server closing")
	}
	sess.open()
	sess.mu.Lock()
	sess.takeQueueLocked() // the open packet, which the handshake answer takes
	sess.mu.Unlock()
	return sess
}

// takeQueue does what a poll does to the queue.
func takeQueue(s *Session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.takeQueueLocked())
}

func msgs(n, size int) []Message {
	out := make([]Message, n)
	for i := range out {
		out[i] = Message{Data: bytes.Repeat([]byte{'x'}, size)}
	}
	return out
}

// waitRoomAsync runs WaitRoom on its own goroutine; the result arrives on the
// channel.
func waitRoomAsync(ctx context.Context, s *Session, m ...Message) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.WaitRoom(ctx, m...) }()
	return done
}

func TestSendQueueBytesBound(t *testing.T) {
	rec := newRecorder(false)
	var errs []error
	h := sendingHandler{recorder: rec, onOpen: func(s *Session) {
		for _, m := range msgs(4, 40) {
			errs = append(errs, s.Send(m))
		}
	}}
	reg := prometheus.NewRegistry()
	srv := NewServer(h, &Options{SendQueueBytes: 100, Registerer: reg})
	ts := serve(t, srv, rec)
	res := ts.do(t, http.MethodGet, "EIO=4&transport=polling", "")
	open, _, _ := strings.Cut(res.body, "\x1e")
	sid := parseOpen(t, open).SID
	// 40 + 40 bytes fit in 100; the third message would make 120.
	want := []error{nil, nil, ErrQueueFull, ErrClosed}
	for i := range want {
		if !errors.Is(errs[i], want[i]) {
			t.Errorf("Send %d = %v, want %v", i, errs[i], want[i])
		}
	}
	if reason, _ := rec.closeReason(sid); reason != ReasonSendQueueFull {
		t.Errorf("reason = %q, want %q", reason, ReasonSendQueueFull)
	}
	if st := srv.Stats(); st.CutSendQueueFull != 1 || st.CutSlowClient != 0 {
		t.Errorf("stats = %+v", st)
	}
	if v := cutMetric(t, reg, ReasonSendQueueFull); v != 1 {
		t.Errorf("durasock_engineio_clients_cut_total{reason=%q} = %v, want 1", ReasonSendQueueFull, v)
	}
}

// cutMetric reads durasock_engineio_clients_cut_total{reason} from reg.
func cutMetric(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "durasock_engineio_clients_cut_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series with reason %q", reason)
	return 0
}

func TestSendQueueBytesBoundDisabledAndLargeMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := NewServer(nopHandler{}, &Options{SendQueueBytes: 1000})
		defer srv.Close()
		sess := openBare(t, srv)
		// One message larger than the whole bound is taken by an empty queue.
		if err := sess.Send(msgs(1, 5000)...); err != nil {
			t.Fatalf("large message to an empty queue: %v", err)
		}
		if err := sess.Send(msgs(1, 1)...); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("second message = %v, want ErrQueueFull", err)
		}

		off := NewServer(nopHandler{}, &Options{SendQueueBytes: -1})
		defer off.Close()
		sess = openBare(t, off)
		for i := range 10 {
			if err := sess.Send(msgs(1, 1<<20)...); err != nil {
				t.Fatalf("Send %d of 1 MiB without a byte bound: %v", i, err)
			}
		}
	})
}

// TestWaitRoomPacesThenCutsSlowClient: a sender that waits gets room as soon as
// the transport takes the queue, and a client that takes nothing is cut when
// SlowClientTimeout has passed since its queue filled, not earlier.
func TestWaitRoomPacesThenCutsSlowClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder(false)
		var logs bytes.Buffer
		var logMu sync.Mutex
		srv := NewServer(rec, &Options{SendQueueSize: 8, Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))})
		defer srv.Close()
		sess := openBare(t, srv)
		ctx := context.Background()

		// The waiting share is half the queue: 4 messages.
		for i := range 4 {
			if err := sess.WaitRoom(ctx, msgs(1, 10)...); err != nil {
				t.Fatalf("WaitRoom %d with room: %v", i, err)
			}
			if err := sess.Send(msgs(1, 10)...); err != nil {
				t.Fatal(err)
			}
		}
		done := waitRoomAsync(ctx, sess, msgs(1, 10)...)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("WaitRoom on a full share returned %v", err)
		default:
		}
		// Senders that never wait still have the other half.
		if err := sess.Send(msgs(4, 10)...); err != nil {
			t.Fatalf("Send into the half kept for senders that never wait: %v", err)
		}
		if got := takeQueue(sess); got != 8 {
			t.Fatalf("queue held %d messages, want 8", got)
		}
		if err := <-done; err != nil {
			t.Fatalf("WaitRoom after the queue was taken: %v", err)
		}

		// Now the client takes nothing: the share fills at t0 and the cut comes
		// at t0 + 10s, however the waits are spread.
		if err := sess.Send(msgs(4, 10)...); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		time.Sleep(6 * time.Second)
		done = waitRoomAsync(ctx, sess, msgs(1, 10)...)
		time.Sleep(3*time.Second + 900*time.Millisecond)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("WaitRoom returned %v before the slow-client timeout", err)
		default:
		}
		err := <-done
		if !errors.Is(err, ErrSlowClient) {
			t.Fatalf("WaitRoom = %v, want ErrSlowClient", err)
		}
		if waited := time.Since(t0); waited != DefaultSlowClientTimeout {
			t.Errorf("cut %v after the queue filled, want %v", waited, DefaultSlowClientTimeout)
		}
		if reason, _ := rec.closeReason(sess.ID()); reason != ReasonSlowClient {
			t.Errorf("close reason = %q, want %q", reason, ReasonSlowClient)
		}
		if st := srv.Stats(); st.CutSlowClient != 1 || st.CutSendQueueFull != 0 {
			t.Errorf("stats = %+v", st)
		}
		logMu.Lock()
		defer logMu.Unlock()
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), `reason="slow client"`) {
			t.Errorf("no warning with the reason: %s", logs.String())
		}
	})
}

// TestWaitRoomSlowClientsCutTogether: two stalled clients whose queues filled
// at the same time cost one timeout, not two, when a sender waits on one
// after the other.
func TestWaitRoomSlowClientsCutTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := NewServer(nopHandler{}, &Options{SendQueueSize: 4, SlowClientTimeout: 5 * time.Second})
		defer srv.Close()
		a, b := openBare(t, srv), openBare(t, srv)
		for _, s := range []*Session{a, b} {
			if err := s.Send(msgs(2, 1)...); err != nil {
				t.Fatal(err)
			}
		}
		t0 := time.Now()
		for _, s := range []*Session{a, b} {
			if err := s.WaitRoom(context.Background(), msgs(1, 1)...); !errors.Is(err, ErrSlowClient) {
				t.Fatalf("WaitRoom = %v, want ErrSlowClient", err)
			}
		}
		if waited := time.Since(t0); waited != 5*time.Second {
			t.Errorf("two stalled clients held the sender %v, want 5s", waited)
		}
	})
}

func TestWaitRoomEndsOnCloseAndContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := NewServer(nopHandler{}, &Options{SendQueueSize: 2, SlowClientTimeout: -1})
		sess := openBare(t, srv)
		if err := sess.Send(msgs(1, 1)...); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := waitRoomAsync(ctx, sess, msgs(1, 1)...)
		time.Sleep(40 * time.Second) // well past the default timeout (before the ping timeout)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("WaitRoom returned %v without a timeout", err)
		default:
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitRoom after cancel = %v, want context.Canceled", err)
		}

		done = waitRoomAsync(context.Background(), sess, msgs(1, 1)...)
		synctest.Wait()
		if err := sess.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitRoom after Close = %v, want ErrClosed", err)
		}

		sess = openBare(t, srv)
		if err := sess.Send(msgs(1, 1)...); err != nil {
			t.Fatal(err)
		}
		done = waitRoomAsync(context.Background(), sess, msgs(1, 1)...)
		synctest.Wait()
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitRoom after Server.Close = %v, want ErrClosed", err)
		}
	})
}

// TestWaitRoomByteShare: the waiting share is half the byte bound too.
func TestWaitRoomByteShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := NewServer(nopHandler{}, &Options{SendQueueBytes: 1000})
		defer srv.Close()
		sess := openBare(t, srv)
		if err := sess.Send(msgs(1, 400)...); err != nil {
			t.Fatal(err)
		}
		done := waitRoomAsync(context.Background(), sess, msgs(1, 200)...)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("WaitRoom for 400+200 bytes of a 500-byte share returned %v", err)
		default:
		}
		takeQueue(sess)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestSlowReaderMemoryBounded: a WebSocket client that reads nothing, sent
// 1 MB messages, costs the server a few MiB of heap before it is cut with
// ReasonSendQueueFull, not up to SendQueueSize times the message size.
func TestSlowReaderMemoryBounded(t *testing.T) {
	const (
		msgSize = 1 << 20
		most    = 64 // stop here if the bound does not bite: 64 MiB
		limit   = 16 << 20
	)
	ts := newTestServer(t, nil)
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	if typ, open := readWS(t, c); typ != websocket.MessageText || !strings.HasPrefix(open, "0") {
		t.Fatalf("open packet %q", open)
	}
	// The client reads nothing more.
	ts.rec.waitFor(t, "open", func(r *recorder) bool { return len(r.opened) == 1 })
	ts.rec.mu.Lock()
	sess := ts.rec.opened[0]
	ts.rec.mu.Unlock()

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	var peak uint64
	sent := 0
	for ; sent < most; sent++ {
		err := sess.Send(Message{Data: bytes.Repeat([]byte{'x'}, msgSize)})
		if errors.Is(err, ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatalf("Send %d: %v", sent, err)
		}
		peak = max(peak, heap())
	}
	if sent == most {
		t.Fatalf("%d messages of 1 MB queued for a client that reads nothing; heap +%d MiB", most, (peak-base)>>20)
	}
	if peak > base && peak-base > limit {
		t.Errorf("heap grew by %d MiB before the cut, want < %d MiB", (peak-base)>>20, limit>>20)
	}
	if reason, _ := ts.rec.closeReason(sess.ID()); reason != ReasonSendQueueFull {
		t.Errorf("reason = %q, want %q", reason, ReasonSendQueueFull)
	}
	t.Logf("cut after %d messages of 1 MB; heap peak +%.1f MiB", sent, float64(peak-base)/(1<<20))
}
