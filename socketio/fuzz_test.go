package socketio

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/engineio"
)

// errorCounter is a slog handler counting records at Error level (a recovered
// handler panic is logged at that level).
type errorCounter struct{ n atomic.Int64 }

func (h *errorCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h *errorCounter) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h *errorCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *errorCounter) WithGroup(string) slog.Handler      { return h }

// FuzzConnMessages feeds a sequence of Engine.IO messages to one connection of a
// server with handlers: chunks separated by 0xff are messages, binary when they
// start with 0xfe. Nothing may panic, and the connection's handlers must finish.
func FuzzConnMessages(f *testing.F) {
	seeds := []string{
		"0\xff2[\"echo\",1]\xff21[\"ack\",{}]\xff1",
		"0/chat,{\"a\":1}\xff2/chat,[\"echo\"]\xff0/nope,",
		"0\xff51-[\"echo\",{\"_placeholder\":true,\"num\":0}]\xff\xfe\x01\x02",
		"0\xff2[\"ask\"]\xff30[1]\xff6" + "1-0[{\"_placeholder\":true,\"num\":0}]\xff\xfe\x09",
		"0\xff2{}", "abc", "\xfe\x01", "0\xff0\xff1\xff1", "0\xff2[\"echo\",\"x\"]\xff41",
		"0{\"pid\":\"p\",\"offset\":\"o\"}\xff2[\"echo\"]\xff2[\"echo\"]\xff2[\"echo\"]\xff1\xff0",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		counter := &errorCounter{}
		opts := &Options{Options: engineio.Options{Logger: slog.New(counter)}, MaxAttachments: 4}
		if len(in)%2 == 1 {
			opts.Recovery = &RecoveryOptions{History: 2, MaxMissedPackets: 2}
		}
		srv := NewServer(opts)
		handlers := func(s *Socket) {
			s.On("echo", func(e *Event) {
				_ = s.Emit("echo", e.Values()...)
				var a, b any
				_ = e.Bind(&a, &b)
				var raw []byte
				_ = e.Bind(&raw)
			})
			s.On("ack", func(e *Event) { _ = e.Ack(e.Values()...) })
			s.On("ask", func(e *Event) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
				defer cancel()
				_, _ = s.EmitWithAck(ctx, "q")
			})
			s.Join("r")
			_ = s.Broadcast().Emit(context.Background(), "joined")
		}
		srv.OnConnection(handlers)
		srv.Of("/chat").OnConnection(handlers)
		tr := newDiscardTransport(0)
		c := newConn(srv, tr)
		for _, m := range bytes.Split(in, []byte{0xff}) {
			if len(m) > 0 && m[0] == 0xfe {
				c.onMessage(engineio.Message{Data: m[1:], Binary: true})
			} else {
				c.onMessage(engineio.Message{Data: m})
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Let the handlers run on a live connection before closing it.
		if err := srv.handlers.Wait(ctx); err != nil {
			t.Fatalf("handlers still running: %v", err)
		}
		close(tr.done)
		c.onClose(ReasonTransportClose)
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if n := counter.n.Load(); n != 0 {
			t.Fatalf("%d errors logged (handler panic)", n)
		}
		if len(srv.Of("/").Sockets()) != 0 || len(srv.Of("/chat").Sockets()) != 0 {
			t.Fatal("sockets left after close")
		}
	})
}
