package socketio

import (
	"context"
	"strings"
	"testing"

	"github.com/durasock/durasock/engineio"
	"github.com/prometheus/client_golang/prometheus"
)

// TestConnectionHandlersRunBeforeConnect: as in the reference server, where
// the connection handlers run in the tick that writes the CONNECT answer, the
// client hears CONNECT only once the handlers returned. A room joined in a
// handler therefore holds for every broadcast made after the client heard
// CONNECT, and what a handler emits, or what a broadcast delivers to the
// socket while its handlers run, arrives after CONNECT, in order.
func TestConnectionHandlersRunBeforeConnect(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		srv, url := newTestServer(t, &Options{Options: engineio.Options{Registerer: prometheus.NewRegistry()}})
		srv.OnConnection(func(s *Socket) {
			// The CONNECT answers the server wrote, counted as they are written.
			if n := srv.metrics.counters("/").connects.Load(); n != 0 {
				t.Errorf("the CONNECT answer was written before the connection handler ran (%d)", n)
			}
			if err := srv.Emit(context.Background(), "during"); err != nil {
				t.Error(err)
			}
			s.Join("room")
			if err := s.Emit("hello"); err != nil {
				t.Error(err)
			}
		})
		c := dial(t, url, tr)
		c.connect("/", "")
		// Right after the client heard CONNECT: the socket is in the room.
		if err := srv.To("room").Emit(context.Background(), "after"); err != nil {
			t.Fatal(err)
		}
		c.expect(`2["during"]`)
		c.expect(`2["hello"]`)
		c.expect(`2["after"]`)
	})
}

// TestConnectionHandlerWaitsForTheClient: a connection handler that waits for
// the client's acknowledgement gets it: the CONNECT answer, and what was held
// behind it, is written when something waits for the client, without waiting
// for the handler to return.
func TestConnectionHandlerWaitsForTheClient(t *testing.T) {
	srv, url := newTestServer(t, nil)
	answers := make(chan string, 1)
	srv.OnConnection(func(s *Socket) {
		s.Join("room")
		if err := s.Emit("first"); err != nil {
			t.Error(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		args, err := s.EmitWithAck(ctx, "ready?")
		var answer string
		if err != nil || args.Bind(&answer) != nil {
			t.Errorf("EmitWithAck in the connection handler: %q, %v", args, err)
		}
		answers <- answer
	})
	c := dial(t, url, "websocket")
	c.connect("/", "")
	c.expect(`2["first"]`)
	id := strings.TrimSuffix(c.expectPrefix(`2`), `["ready?"]`)
	c.send("3" + id + `["yes"]`)
	if a := recv(t, answers); a != "yes" {
		t.Fatalf("answer %q", a)
	}
}

// TestConnectionHandlerDisconnects: a socket disconnected by its connection
// handler is first told it connected, with what the handler emitted, then
// that it is disconnected.
func TestConnectionHandlerDisconnects(t *testing.T) {
	srv, url := newTestServer(t, nil)
	srv.OnConnection(func(s *Socket) {
		if err := s.Emit("bye"); err != nil {
			t.Error(err)
		}
		s.Disconnect(false)
	})
	c := dial(t, url, "websocket")
	c.connect("/", "")
	c.expect(`2["bye"]`)
	c.expect(`1`)
}

// TestConnectionHandlerHoldIsBounded: what is held behind the CONNECT answer
// never exceeds the send queue: when a handler sends that much before it
// returns, the client is told it is connected and gets it all at once.
func TestConnectionHandlerHoldIsBounded(t *testing.T) {
	const queue = 16
	srv, url := newTestServer(t, &Options{Options: engineio.Options{SendQueueSize: queue}})
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) }) // before the server's shutdown, which waits for the handler
	srv.OnConnection(func(s *Socket) {
		for i := range queue - 1 { // with the CONNECT answer, the hold is full
			if err := s.Emit("n", i); err != nil {
				t.Error(err)
			}
		}
		if err := s.Volatile().Emit("overflow"); err != nil { // releases the hold
			t.Error(err)
		}
		<-gate
	})
	c := dial(t, url, "websocket")
	c.connect("/", "")
	for i := range queue - 1 {
		c.expect(`2["n",` + jsonString(i) + `]`)
	}
}
