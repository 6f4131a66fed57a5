package socketio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/parser"
	"github.com/prometheus/client_golang/prometheus"
)

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// cutMetric reads durasock_socketio_clients_cut_total{reason} from reg.
func cutMetric(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "durasock_socketio_clients_cut_total" {
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

// TestPendingAttachmentsBounded: clients that announce 64 attachments and
// send large ones without ever completing the packet are cut with
// ReasonAttachmentsTooLarge once they hold MaxAttachmentBytes, counted, and
// cost the server about that much each, not what they announced (before, 64
// attachments of MaxPayload each were held: 190 MiB for three connections).
func TestPendingAttachmentsBounded(t *testing.T) {
	const (
		clients = 3
		attSize = 500_000
		bound   = 2 << 20
		limit   = 16 << 20 // unbounded, the three would hold 96 MB
	)
	reg := prometheus.NewRegistry()
	srv, url := newTestServer(t, &Options{MaxAttachmentBytes: bound, Options: engineio.Options{Registerer: reg}})
	reasons := make(chan string, clients)
	srv.OnConnection(func(s *Socket) {
		s.OnDisconnect(func(r string) { reasons <- r })
	})
	placeholders := make([]string, 64)
	for i := range placeholders {
		placeholders[i] = fmt.Sprintf(`{"_placeholder":true,"num":%d}`, i)
	}
	announce := `564-["upload",` + strings.Join(placeholders, ",") + `]`

	base := liveHeap()
	var peak uint64
	att := bytes.Repeat([]byte{0xab}, attSize)
	for i := range clients {
		c := dial(t, url, "websocket")
		c.connect("/", "")
		c.send(announce)
		// The writer stops when the server cuts the connection: the client
		// library would otherwise hold its write lock in a 1 MB write that the
		// server no longer reads, until the close handshake times out.
		ctx, cancel := context.WithCancel(context.Background())
		wrote := make(chan int, 1)
		go func() {
			sent := 0
			for ; sent < 64; sent++ {
				if err := c.ws.Write(ctx, websocket.MessageBinary, att); err != nil {
					break
				}
			}
			wrote <- sent
		}()
		// Sampled, not in a loop: back-to-back collections would starve the
		// connection being measured.
		tick := time.NewTicker(25 * time.Millisecond)
		for srv.Cut()[ReasonAttachmentsTooLarge] == uint64(i) {
			<-tick.C
			peak = max(peak, liveHeap())
		}
		tick.Stop()
		cancel()
		if sent := <-wrote; sent == 64 {
			t.Errorf("all 64 attachments taken")
		}
		reason := recv(t, reasons)
		if reason != ReasonAttachmentsTooLarge {
			t.Fatalf("disconnect reason %q, want %q", reason, ReasonAttachmentsTooLarge)
		}
	}
	peak = max(peak, liveHeap())
	grown := int64(peak) - int64(base)
	t.Logf("%d connections announcing 64 attachments of 500 KB: heap peak +%.1f MiB", clients, float64(grown)/(1<<20))
	if grown > limit {
		t.Errorf("heap grew by %d MiB, want < %d MiB", grown>>20, limit>>20)
	}
	if got := srv.Cut()[ReasonAttachmentsTooLarge]; got != clients {
		t.Errorf("Cut()[attachments too large] = %d, want %d", got, clients)
	}
	if got := cutMetric(t, reg, ReasonAttachmentsTooLarge); got != clients {
		t.Errorf("metric = %v, want %d", got, clients)
	}
}

// TestAttachmentsWithinBoundArrive: a packet whose attachments fit in
// MaxAttachmentBytes is delivered whole.
func TestAttachmentsWithinBoundArrive(t *testing.T) {
	srv, url := newTestServer(t, &Options{MaxAttachmentBytes: 3000})
	got := make(chan int, 1)
	srv.OnConnection(func(s *Socket) {
		s.On("up", func(e *Event) { got <- len(e.Attachments) })
	})
	c := dial(t, url, "websocket")
	c.connect("/", "")
	c.send(`52-["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, make([]byte, 1500), make([]byte, 1500))
	if n := recv(t, got); n != 2 {
		t.Fatalf("%d attachments, want 2", n)
	}
	c.send(`52-["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, make([]byte, 1500), make([]byte, 1501))
	c.waitClosed()
	if got := srv.Cut()[ReasonAttachmentsTooLarge]; got != 1 {
		t.Errorf("Cut()[attachments too large] = %d, want 1", got)
	}
}

// TestEmitRefusesInvalidUTF8: an argument whose JSON is not UTF-8 (a
// json.RawMessage is copied as it is) is refused with an error instead of
// reaching clients, which drop their connection over it.
func TestEmitRefusesInvalidUTF8(t *testing.T) {
	srv, url := newTestServer(t, nil)
	c := dial(t, url, "websocket")
	c.connect("/", "")
	err := srv.Emit(context.Background(), "chat", json.RawMessage("\"bad \xff\""))
	if !errors.Is(err, parser.ErrInvalidArgument) {
		t.Fatalf("Emit of invalid UTF-8 = %v, want ErrInvalidArgument", err)
	}
	if err := srv.Emit(context.Background(), "chat", json.RawMessage(`"ok é"`)); err != nil {
		t.Fatal(err)
	}
	c.expect(`2["chat","ok é"]`)
}

// TestEventQueueBoundedInBytes: a client that sends large events faster than
// its handler takes them holds at most EventQueueBytes in the queue (the
// connection stops reading), not EventQueueSize times MaxPayload; when the
// handler catches up, every event is handled, in order.
func TestEventQueueBoundedInBytes(t *testing.T) {
	const (
		events = 30
		size   = 100_000
		bound  = 512 << 10 // five events; unbounded, the queue would take all 30
	)
	srv, url := newTestServer(t, &Options{EventQueueBytes: bound})
	release := make(chan struct{})
	handled := make(chan int, events)
	srv.OnConnection(func(s *Socket) {
		s.On("big", func(e *Event) {
			<-release
			var n int
			if err := e.Bind(&n); err != nil { // the padding, second, is not decoded
				t.Errorf("bind: %v", err)
			}
			handled <- n
		})
	})
	c := dial(t, url, "websocket")
	c.connect("/", "")
	var b *budget // of the connection's runners
	srv.mu.RLock()
	for _, cn := range srv.conns {
		b = &cn.budget
	}
	srv.mu.RUnlock()
	queued := func() (int, int) {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.tasks, b.bytes
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	defer releaseAll() // on failure too, so that Shutdown is not held
	pad := strings.Repeat("x", size)
	go func() {
		for i := range events {
			msg := fmt.Sprintf(`42["big",%d,"%s"]`, i, pad)
			if err := c.ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				return
			}
		}
	}()
	testwait.For(t, waitTimeout, "the queue to fill", func() bool { _, b := queued(); return b+size > bound })
	// The client keeps sending; the queue does not grow.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for range 40 {
		<-tick.C
		if n, b := queued(); b > bound || n > 5 {
			t.Fatalf("%d events, %d bytes queued for the handler, over the bound of %d bytes", n, b, bound)
		}
	}
	release <- struct{}{} // one handler call returns: one event fits
	testwait.For(t, waitTimeout, "the next event", func() bool { n, _ := queued(); return n == 5 })
	releaseAll()
	for i := range events {
		if n := recv(t, handled); n != i {
			t.Fatalf("event %d handled as #%d", n, i)
		}
	}
}
