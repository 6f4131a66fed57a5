package engineio

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkWebSocketFanout measures the write path of a room broadcast: one
// iteration sends one small message to each of 20 WebSocket sessions, whose
// clients read raw bytes and count them (no frame parsing, so the client's
// cost stays small and the same whatever the server's writer). cpu-ns/delivery
// is the process' CPU time (user + system, from getrusage) per message
// delivered to one session: on a loaded machine it moves far less than
// wall-clock time does.
func BenchmarkWebSocketFanout(b *testing.B) {
	const subscribers, burst = 20, 64
	h := &fanoutHandler{opened: make(chan *Session, subscribers)}
	srv := NewServer(h, &Options{SendQueueSize: 1 << 16})
	hs := httptest.NewServer(srv)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	var received atomic.Int64
	sessions := make([]*Session, subscribers)
	for i := range sessions {
		c := dialRawWebSocket(b, hs.Listener.Addr().String())
		opened := make(chan error, 1)
		go func() {
			// The open packet first: one frame of less than 126 bytes.
			var h [2]byte
			_, err := io.ReadFull(c, h[:])
			if err == nil {
				_, err = io.ReadFull(c, make([]byte, h[1]&0x7f))
			}
			opened <- err
			buf := make([]byte, 64<<10)
			for err == nil {
				var n int
				n, err = c.Read(buf)
				received.Add(int64(n))
			}
		}()
		if err := <-opened; err != nil {
			b.Fatal(err)
		}
		sessions[i] = <-h.opened
	}
	msg := Message{Data: []byte(`2["ev",{"pub":3,"seq":123456,"t":1712345678901234}]`)}
	frameBytes := int64(2 + 1 + len(msg.Data))
	const base = 0
	wait := func(n int64) {
		deadline := time.Now().Add(time.Minute)
		for received.Load()-base < n*frameBytes*subscribers {
			if time.Now().After(deadline) {
				b.Fatalf("clients got %d of %d bytes", received.Load()-base, n*frameBytes*subscribers)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	sent := int64(0)
	for b.Loop() {
		for _, s := range sessions {
			if err := s.Send(msg); err != nil {
				b.Fatal(err)
			}
		}
		if sent++; sent%burst == 0 {
			wait(sent)
		}
	}
	wait(sent)
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(sent*subscribers), "cpu-ns/delivery")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(sent*subscribers), "ns/delivery")
}

type fanoutHandler struct {
	nopHandler
	opened chan *Session
}

func (h *fanoutHandler) OnOpen(s *Session) { h.opened <- s }

// cpuTime is the process' user and system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// dialRawWebSocket opens an Engine.IO WebSocket with a hand-written upgrade
// request and returns what follows the 101 response.
func dialRawWebSocket(tb testing.TB, addr string) io.Reader {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	req := "GET /?EIO=4&transport=websocket HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReaderSize(c, 16)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade: %s", resp.Status)
	}
	return br
}
