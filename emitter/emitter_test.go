package emitter_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/emitter"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/socketio"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is one durasock node on the cluster's Redis.
func server(t *testing.T, url string, setup ...func(*socketio.Server)) node {
	t.Helper()
	b, err := redisbus.Open(context.Background(), url, &redisbus.Options{Bus: bus.Config{Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.New(b, &cluster.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := socketio.NewServer(&socketio.Options{Adapter: c.Adapter})
	// Joined in the connection handler, which runs before the client hears
	// CONNECT (as in Node): an emit right after Dial returns finds it there.
	srv.OnConnection(func(s *socketio.Socket) {
		var q struct{ Room string }
		if err := json.Unmarshal(s.Handshake().Auth, &q); err == nil && q.Room != "" {
			s.Join(q.Room)
		}
	})
	for _, f := range setup {
		f(srv)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		hs.Close()
		if err := c.Close(ctx); err != nil {
			t.Error(err)
		}
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return node{hs.URL + "/socket.io/", b}
}

// node is a server started by server: its Socket.IO URL and its bus.
type node struct {
	url string
	bus *bus.Reliable
}

// openEmitterBus opens the bus of an emitter on the cluster's Redis once every
// node reads the cluster's streams: a node receives what is published from the
// moment its bus fixed its start, which it does in the background after it
// opened, so an emit right after the servers start could precede it. A node
// that has heard every other node reads.
func openEmitterBus(t *testing.T, url string, nodes ...node) *bus.Reliable {
	t.Helper()
	b, err := redisbus.Open(context.Background(), url, &redisbus.Options{Bus: bus.Config{Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	for _, n := range nodes {
		for _, other := range nodes {
			if other.bus == n.bus {
				continue
			}
			testwait.For(t, 30*time.Second, "node "+n.bus.NodeID()+" to hear node "+other.bus.NodeID(), func() bool {
				return slices.Contains(n.bus.Status().Nodes, other.bus.NodeID())
			})
		}
	}
	return b
}

type received struct{ name, data string }

func client(t *testing.T, url, room string) <-chan received {
	t.Helper()
	ch := make(chan received, 64)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, url, &sioclient.Options{
		Auth: map[string]string{"room": room},
		OnEvent: func(e *sioclient.Event) {
			data := string(e.Data)
			if len(e.Attachments) > 0 {
				data += "+" + string(e.Attachments[0])
			}
			ch <- received{e.Name, data}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ch
}

func expect(t *testing.T, ch <-chan received, want received) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	case <-time.After(30 * time.Second): // a loaded machine: a wait, not a timing claim
		t.Fatalf("nothing received, want %+v", want)
	}
}

func TestEmitterReachesEveryServer(t *testing.T) {
	redis := redistest.Standalone(t)
	nodeA, nodeB := server(t, redis.URL()), server(t, redis.URL())
	lobbyA, lobbyB, otherB := client(t, nodeA.url, "lobby"), client(t, nodeB.url, "lobby"), client(t, nodeB.url, "other")
	b := openEmitterBus(t, redis.URL(), nodeA, nodeB)
	e := emitter.New(b)
	ctx := context.Background()

	if err := e.To("lobby").Emit(ctx, "news", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	expect(t, lobbyA, received{"news", `["news",{"n":1}]`})
	expect(t, lobbyB, received{"news", `["news",{"n":1}]`})

	if err := e.Of("/").Except("lobby").Emit(ctx, "bin", []byte("raw")); err != nil {
		t.Fatal(err)
	}
	expect(t, otherB, received{"bin", `["bin",{"_placeholder":true,"num":0}]+raw`})

	if err := e.To("other").SocketsJoin(ctx, "vip"); err != nil {
		t.Fatal(err)
	}
	if err := e.To("vip").Emit(ctx, "vip", "hi"); err != nil {
		t.Fatal(err)
	}
	expect(t, otherB, received{"vip", `["vip","hi"]`})

	// Order: what the emitter published in sequence arrives in sequence.
	for i := range 50 {
		if err := e.To("lobby").Emit(ctx, "seq", i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		expect(t, lobbyA, received{"seq", `["seq",` + strconv.Itoa(i) + `]`})
	}

	// Sync answers once Redis holds every message emitted before it.
	if err := e.To("lobby").Emit(ctx, "synced", 1); err != nil {
		t.Fatal(err)
	}
	if err := e.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if n := b.Status().OutboxLen; n != 0 {
		t.Fatalf("outbox holds %d after Sync", n)
	}
	expect(t, lobbyA, received{"synced", `["synced",1]`})

	if err := e.Of("chat").Emit(ctx, "x"); !errors.Is(err, emitter.ErrInvalidNamespace) {
		t.Errorf("namespace without /: err = %v", err)
	}
	if err := e.Emit(ctx, ""); err == nil {
		t.Error("empty event name accepted")
	}
	if err := e.Emit(ctx, "x", func() {}); err == nil {
		t.Error("unmarshallable argument accepted")
	}
}

// TestEmitterOutboxFull shows an emitter inherits the bus contract: with Redis
// unreachable it buffers up to the bound and then refuses at once.
func TestEmitterOutboxFull(t *testing.T) {
	redis := redistest.Standalone(t)
	url := redis.URL()
	if err := redis.Kill(); err != nil {
		t.Fatal(err)
	}
	b, err := redisbus.Open(context.Background(), url, &redisbus.Options{Bus: bus.Config{
		Outbox: bus.OutboxConfig{MaxMessages: 3},
		Logger: slog.New(slog.DiscardHandler),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = b.Close(ctx) // the outbox cannot drain without Redis; the error is expected
	}()
	e := emitter.New(b)
	for i := range 3 {
		if err := e.Emit(context.Background(), "x", i); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
	if err := e.Emit(context.Background(), "x", 3); !errors.Is(err, bus.ErrOutboxFull) {
		t.Fatalf("fourth emit: err = %v, want ErrOutboxFull", err)
	}
	// Sync cannot confirm while Redis is away: it gives up with the context.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.Sync(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync while Redis is down: err = %v, want the deadline", err)
	}
}

// plainBus hides every method of its bus but those of bus.Bus: a bus that
// cannot tell when Redis holds a message.
type plainBus struct{ bus.Bus }

// TestEmitterSyncNeedsASyncer: an emitter over a bus that cannot confirm
// publication says so instead of pretending.
func TestEmitterSyncNeedsASyncer(t *testing.T) {
	b, err := bus.New(bus.NewMemoryHub().Transport(), &bus.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if err := emitter.New(b).Sync(t.Context()); err != nil {
		t.Errorf("Sync over a bus.Reliable: %v", err)
	}
	if err := emitter.New(plainBus{b}).Sync(t.Context()); !errors.Is(err, emitter.ErrNoSync) {
		t.Errorf("Sync over a bus without Sync: %v, want ErrNoSync", err)
	}
}

// TestEmitterRoomOperations drives the emitter's room and server operations (In,
// SocketsLeave, DisconnectSockets, ServerSideEmit) against two servers. Order per
// origin makes the absence of an event observable: a client that should have
// missed one receives the next event in its place.
func TestEmitterRoomOperations(t *testing.T) {
	redis := redistest.Standalone(t)
	serverEvents := make(chan string, 8)
	onServer := func(name string) func(*socketio.Server) {
		return func(srv *socketio.Server) {
			srv.Of("/").OnServerSideEmit("ping", func(e *socketio.Event) {
				serverEvents <- name + ":" + string(e.Args[0])
			})
		}
	}
	nodeA, nodeB := server(t, redis.URL(), onServer("A")), server(t, redis.URL(), onServer("B"))
	urlA, urlB := nodeA.url, nodeB.url
	r1A, r1B := client(t, urlA, "r1"), client(t, urlB, "r1")

	r2Events := make(chan received, 64)
	r2Gone := make(chan error, 1)
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r2, err := sioclient.Dial(dctx, urlB, &sioclient.Options{
		Auth:         map[string]string{"room": "r2"},
		OnEvent:      func(e *sioclient.Event) { r2Events <- received{e.Name, string(e.Data)} },
		OnDisconnect: func(err error) { r2Gone <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })

	b := openEmitterBus(t, redis.URL(), nodeA, nodeB)
	e := emitter.New(b)
	ctx := context.Background()
	emit := func(op emitter.Operator, event string) {
		t.Helper()
		if err := op.Emit(ctx, event); err != nil {
			t.Fatal(err)
		}
	}

	emit(e.Of("/").In("r1"), "in")
	emit(e.Of("/"), "all")
	expect(t, r1A, received{"in", `["in"]`})
	expect(t, r1B, received{"in", `["in"]`})
	expect(t, r2Events, received{"all", `["all"]`}) // not "in": r2 is not in r1
	expect(t, r1A, received{"all", `["all"]`})
	expect(t, r1B, received{"all", `["all"]`})

	// SocketsLeave: after it, r1 is empty, so "gone" reaches nobody and the clients
	// of r1 receive "after" next.
	if err := e.Of("/").In("r1").SocketsLeave(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	emit(e.To("r1"), "gone")
	emit(e.Of("/"), "after")
	expect(t, r1A, received{"after", `["after"]`})
	expect(t, r1B, received{"after", `["after"]`})
	expect(t, r2Events, received{"after", `["after"]`})

	// ServerSideEmit reaches every server: the emitter is not one of them.
	if err := e.Of("/").ServerSideEmit(ctx, "ping", 7); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case s := <-serverEvents:
			got[s] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("server-side event reached only %v", got)
		}
	}
	if !got["A:7"] || !got["B:7"] {
		t.Fatalf("server-side event: got %v, want A:7 and B:7", got)
	}

	// DisconnectSockets closes the selected sockets only.
	if err := e.Of("/").In("r2").DisconnectSockets(ctx, true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r2Gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the socket in r2 was not disconnected")
	}
	emit(e.Of("/"), "still")
	expect(t, r1A, received{"still", `["still"]`})
	expect(t, r1B, received{"still", `["still"]`})
}
