package socketio

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/parser"
)

// pacedAdapter returns the main namespace's adapter as a PacedBroadcaster.
func pacedAdapter(t *testing.T, srv *Server) adapter.PacedBroadcaster {
	t.Helper()
	pb, ok := srv.Of("/").Adapter().(adapter.PacedBroadcaster)
	if !ok {
		t.Fatalf("adapter %T is no PacedBroadcaster", srv.Of("/").Adapter())
	}
	return pb
}

// drain reads every message of c into the returned channel (closed with the
// session) so that the client keeps up, and counts "n" events in order.
func drainEvents(c *testClient, want int) <-chan error {
	done := make(chan error, 1)
	go func() {
		next := 0
		for next < want {
			select {
			case m := <-c.msgs:
				var seq int
				if _, err := fmt.Sscanf(m.text, `2["n",%d]`, &seq); err != nil {
					continue
				}
				if seq != next {
					done <- fmt.Errorf("event %d after %d: lost, duplicated or reordered", seq, next-1)
					return
				}
				next++
			case <-c.closed:
				done <- fmt.Errorf("session closed after %d of %d events", next, want)
				return
			case <-time.After(30 * time.Second):
				done <- fmt.Errorf("%d of %d events within 30s", next, want)
				return
			}
		}
		done <- nil
	}()
	return done
}

// TestPacedBroadcastBacklogDoesNotCutHealthyClients: a backlog many times the
// send queue, delivered at once with BroadcastPaced (as a cluster node applies
// other nodes' messages after an outage), reaches a client that reads, over
// each transport, completely and in order, and nobody is cut.
func TestPacedBroadcastBacklogDoesNotCutHealthyClients(t *testing.T) {
	const events = 3000
	srv, url := newTestServer(t, &Options{Options: engineio.Options{SendQueueSize: 16}})
	clients, sockets := clientGroup(t, srv, url, 2)
	pb := pacedAdapter(t, srv)
	var results []<-chan error
	for _, c := range clients {
		results = append(results, drainEvents(c, events))
	}
	for i := range events {
		p, err := parser.EventPacket("/", "n", i)
		if err != nil {
			t.Fatal(err)
		}
		n, err := pb.BroadcastPaced(context.Background(), p, adapter.Options{})
		if err != nil || n != len(clients) {
			t.Fatalf("event %d: BroadcastPaced = %d, %v; want %d recipients", i, n, err, len(clients))
		}
	}
	for i, r := range results {
		if err := <-r; err != nil {
			t.Errorf("client %d (%s): %v", i, clients[i].transport, err)
		}
	}
	for i, s := range sockets {
		if !s.Connected() {
			t.Errorf("socket %d disconnected", i)
		}
	}
	if st := srv.Engine().Stats(); st.CutSendQueueFull != 0 || st.CutSlowClient != 0 || st.VolatileDropped != 0 {
		t.Errorf("clients cut or packets dropped: %+v", st)
	}
}

// TestPacedBroadcastCutsSlowClient: a client that stops reading is cut with
// ReasonSlowClient once the slow-client timeout has passed, while a client
// that reads gets every event of the same broadcasts.
func TestPacedBroadcastCutsSlowClient(t *testing.T) {
	srv, url := newTestServer(t, &Options{Options: engineio.Options{SendQueueSize: 8, SlowClientTimeout: time.Second}})
	reasons := make(chan string, 2)
	sockets := make(chan *Socket, 2)
	srv.OnConnection(func(s *Socket) {
		s.OnDisconnect(func(r string) { reasons <- r })
		sockets <- s
	})
	slow := dial(t, url, "websocket")
	slow.connect("/", "")
	slowSocket := recv(t, sockets)
	fast := dial(t, url, "websocket")
	fast.connect("/", "")
	recv(t, sockets)
	pb := pacedAdapter(t, srv)

	// The slow client never reads: its test client buffers 1024 messages, then
	// the TCP buffers fill, the writer blocks and the queue stays full.
	payload := strings.Repeat("x", 16<<10)
	var fastGot atomic.Int64
	stop := make(chan struct{})
	fastResult := drainFast(fast, &fastGot, stop)
	defer close(stop)
	sent := 0
	deadline := time.Now().Add(60 * time.Second)
	for slowSocket.Connected() {
		if time.Now().After(deadline) {
			t.Fatalf("slow client still connected after %d events", sent)
		}
		p, err := parser.EventPacket("/", "n", sent, payload)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pb.BroadcastPaced(context.Background(), p, adapter.Options{}); err != nil {
			t.Fatalf("BroadcastPaced: %v", err)
		}
		sent++
	}
	if got := recv(t, reasons); got != ReasonSlowClient {
		t.Fatalf("slow client's reason = %q, want %q", got, ReasonSlowClient)
	}
	// Now the slow client reads what it has, and learns the connection closed.
	go func() {
		for {
			select {
			case <-slow.msgs:
			case <-slow.closed:
				return
			}
		}
	}()
	slow.waitClosed()
	for fastGot.Load() < int64(sent) {
		select {
		case err := <-fastResult:
			t.Fatalf("fast client: %v (%d of %d events)", err, fastGot.Load(), sent)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("fast client got %d of %d events", fastGot.Load(), sent)
		}
	}
	if st := srv.Engine().Stats(); st.CutSlowClient != 1 || st.CutSendQueueFull != 0 {
		t.Errorf("stats = %+v, want one slow client cut", st)
	}
	select {
	case r := <-reasons:
		t.Errorf("another socket disconnected: %q", r)
	default:
	}
}

// drainFast reads the fast client's events in order until stop, counting
// them in got; it reports an error when they do not come in order.
func drainFast(c *testClient, got *atomic.Int64, stop <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case m := <-c.msgs:
				var seq int64
				if _, err := fmt.Sscanf(m.text, `2["n",%d,`, &seq); err != nil {
					continue
				}
				if next := got.Load(); seq != next {
					done <- fmt.Errorf("event %d after %d", seq, next-1)
					return
				}
				got.Add(1)
			case <-c.closed:
				done <- fmt.Errorf("closed after %d events", got.Load())
				return
			case <-stop:
				return
			}
		}
	}()
	return done
}
