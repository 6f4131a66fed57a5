package socketio

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/parser"
)

// discardTransport is an in-process Engine.IO session that counts what is sent
// to it and writes nothing: benchmarks measure the Socket.IO layer alone.
type discardTransport struct {
	id    string
	req   *http.Request
	done  chan struct{}
	sends atomic.Int64
	bytes atomic.Int64
}

// benchRequest is the handshake request of every in-process session; Engine.IO
// owns it, so it is shared here to count only what the Socket.IO layer keeps.
var benchRequest = httptest.NewRequest(http.MethodGet, "/socket.io/?EIO=4&transport=websocket", nil)

func newDiscardTransport(i int) *discardTransport {
	return &discardTransport{id: fmt.Sprint("bench-", i), req: benchRequest, done: make(chan struct{})}
}

func (d *discardTransport) ID() string                                      { return d.id }
func (d *discardTransport) Request() *http.Request                          { return d.req }
func (d *discardTransport) Transport() string                               { return engineio.TransportWebSocket }
func (d *discardTransport) Done() <-chan struct{}                           { return d.done }
func (d *discardTransport) Close() error                                    { return nil }
func (d *discardTransport) waitRoom(context.Context, *parser.Encoded) error { return nil }

func (d *discardTransport) Context() context.Context { return context.Background() }
func (d *discardTransport) Protocol() int            { return 4 }

func (d *discardTransport) writePacket(e *parser.Encoded, _, _ bool) error {
	d.sends.Add(1)
	d.bytes.Add(int64(len(e.Text)))
	return nil
}

// inProcessSockets connects n in-process clients to the main namespace of srv.
func inProcessSockets(tb testing.TB, srv *Server, n int) ([]*conn, []*discardTransport) {
	tb.Helper()
	conns := make([]*conn, n)
	ts := make([]*discardTransport, n)
	for i := range conns {
		ts[i] = newDiscardTransport(i)
		conns[i] = newConn(srv, ts[i])
		conns[i].onMessage(engineio.Message{Data: []byte("0")})
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(srv.Of("/").Sockets()) < n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d sockets connected", len(srv.Of("/").Sockets()), n)
		}
		time.Sleep(time.Millisecond)
	}
	tb.Cleanup(func() {
		for _, c := range conns {
			c.onClose(ReasonTransportClose)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
	})
	return conns, ts
}

// BenchmarkBroadcast10k broadcasts one event to 10 000 in-process sockets (a
// discard transport, no network): one iteration is one broadcast to all of them.
func BenchmarkBroadcast10k(b *testing.B) {
	const n = 10_000
	srv := NewServer(nil)
	_, ts := inProcessSockets(b, srv, n)
	msg := map[string]any{"user": "alice", "text": "hello everybody", "ts": 1712345678901}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := srv.Emit(ctx, "news", msg); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/recipient")
	if got := ts[0].sends.Load(); got < int64(b.N) {
		b.Fatalf("socket 0 got %d of %d packets", got, b.N)
	}
}

// BenchmarkBroadcastRoom broadcasts to a room of 100 among 10 000 sockets.
func BenchmarkBroadcastRoom(b *testing.B) {
	const n = 10_000
	srv := NewServer(nil)
	inProcessSockets(b, srv, n)
	for i, s := range srv.Of("/").Sockets() {
		if i%100 == 0 {
			s.Join("room")
		}
	}
	ctx := context.Background()
	payload := json.RawMessage(`{"text":"hello room"}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := srv.To("room").Emit(ctx, "news", payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIncomingEvent measures one client event through decoding, the
// connection's runner, Bind and an ack, on an in-process socket.
func BenchmarkIncomingEvent(b *testing.B) {
	srv := NewServer(nil)
	done := make(chan struct{}, 1)
	srv.OnConnection(func(s *Socket) {
		s.On("chat", func(e *Event) {
			var m chatMessage
			if err := e.Bind(&m); err != nil {
				b.Error(err)
			}
			if err := e.Ack("ok"); err != nil {
				b.Error(err)
			}
			done <- struct{}{}
		})
	})
	conns, _ := inProcessSockets(b, srv, 1)
	c := conns[0]
	msg := engineio.Message{Data: []byte(`21["chat",{"room":"lobby","text":"hello there"}]`)}
	b.ReportAllocs()
	for b.Loop() {
		c.onMessage(msg)
		<-done
	}
}

// BenchmarkConnect connects one in-process socket per iteration (CONNECT packet,
// namespace join, adapter membership) and keeps it. retained-B/socket is the heap
// the Socket.IO layer keeps per idle socket, Engine.IO session not included.
func BenchmarkConnect(b *testing.B) {
	srv := NewServer(nil)
	var conns []*conn
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c := newConn(srv, newDiscardTransport(i))
		c.onMessage(engineio.Message{Data: []byte("0")})
		conns = append(conns, c)
	}
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.handlers.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	if n := len(srv.Of("/").Sockets()); n != len(conns) {
		b.Fatalf("%d of %d sockets connected", n, len(conns))
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(ms1.HeapAlloc-ms0.HeapAlloc)/float64(len(conns)), "retained-B/socket")
	for _, c := range conns {
		c.onClose(ReasonTransportClose)
	}
	if err := srv.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIdleSocketMemory connects 10 000 in-process sockets and reports the
// memory the Socket.IO layer holds per idle socket: the growth of HeapInuse plus
// StackInuse after a GC, Engine.IO session not included. One iteration is one
// full measurement; run it with -benchtime=1x.
func BenchmarkIdleSocketMemory(b *testing.B) {
	const n = 10_000
	for b.Loop() {
		b.StopTimer()
		srv := NewServer(nil)
		ts := make([]*discardTransport, n)
		for i := range ts {
			ts[i] = newDiscardTransport(i)
		}
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		b.StartTimer()
		conns := make([]*conn, n)
		for i := range conns {
			conns[i] = newConn(srv, ts[i])
			conns[i].start()
			conns[i].onMessage(engineio.Message{Data: []byte("0")})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := srv.handlers.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if got := len(srv.Of("/").Sockets()); got != n {
			b.Fatalf("%d of %d sockets connected", got, n)
		}
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		used := int64(ms1.HeapInuse+ms1.StackInuse) - int64(ms0.HeapInuse+ms0.StackInuse)
		b.ReportMetric(float64(used)/n, "B/idle-socket")
		runtime.KeepAlive(conns)
		for _, c := range conns {
			c.onClose(ReasonTransportClose)
		}
		if err := srv.Shutdown(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		b.StartTimer()
	}
}
