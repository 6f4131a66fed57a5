package engineio

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// echoHandler echoes every message and counts them.
type echoHandler struct {
	n    atomic.Int64
	echo bool
}

func (*echoHandler) OnOpen(*Session)          {}
func (*echoHandler) OnClose(*Session, string) {}
func (h *echoHandler) OnMessage(s *Session, m Message) {
	h.n.Add(1)
	if h.echo {
		_ = s.Send(m) // a closed session ends the benchmark anyway
	}
}

// benchWebSocket serves h in the given reader mode and returns a connected
// client that has read its open packet.
func benchWebSocket(b *testing.B, mode string, h Handler) *websocket.Conn {
	b.Helper()
	srv := NewServer(h, &Options{SendQueueSize: 1 << 16})
	if mode == "goroutine" {
		srv.pollErr = errPollerOff
	}
	hs := httptest.NewServer(srv)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/?EIO=4&transport=websocket", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.CloseNow() })
	if _, _, err := c.Read(ctx); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkWebSocketEcho measures one message's round trip: the server's
// reader parks (or blocks) between messages.
func BenchmarkWebSocketEcho(b *testing.B) {
	for _, mode := range readerModes {
		b.Run(mode, func(b *testing.B) {
			c := benchWebSocket(b, mode, &echoHandler{echo: true})
			ctx := context.Background()
			msg := []byte("4hello")
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := c.Read(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWebSocketInbound measures a client sending small messages as fast
// as it can: the server's reader finds more bytes in the socket after every
// buffer it drains.
func BenchmarkWebSocketInbound(b *testing.B) {
	for _, mode := range readerModes {
		b.Run(mode, func(b *testing.B) {
			h := &echoHandler{}
			c := benchWebSocket(b, mode, h)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			msg := []byte("4" + strings.Repeat("m", 63))
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
					b.Fatal(err)
				}
			}
			for h.n.Load() < int64(b.N) {
				select {
				case <-ctx.Done():
					b.Fatalf("server got %d of %d messages", h.n.Load(), b.N)
				case <-time.After(time.Millisecond):
				}
			}
		})
	}
}

// sessionHandler hands out the first session it sees.
type sessionHandler struct {
	nopHandler
	opened chan *Session
}

func (h sessionHandler) OnOpen(s *Session) { h.opened <- s }

// BenchmarkWebSocketOutbound measures the server sending small messages to one
// client, in bursts of 256 that the client reads before the next burst.
func BenchmarkWebSocketOutbound(b *testing.B) {
	const burst = 256
	h := sessionHandler{opened: make(chan *Session, 1)}
	c := benchWebSocket(b, "parked", h)
	sess := <-h.opened
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	msg := Message{Data: []byte(strings.Repeat("m", 63))}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg.Data)) + 1)
	read := func(n int) {
		for range n {
			if _, _, err := c.Read(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	sent := 0
	for b.Loop() {
		if err := sess.Send(msg); err != nil {
			b.Fatal(err)
		}
		if sent++; sent == burst {
			read(sent)
			sent = 0
		}
	}
	read(sent)
}
