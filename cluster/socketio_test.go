package cluster

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/socketio"
)

// wsClient is a Socket.IO client speaking the wire protocol over WebSocket.
type wsClient struct {
	t  *testing.T
	c  *websocket.Conn
	id string // Socket.IO socket id
}

func dialSocketIO(t *testing.T, url string) *wsClient {
	t.Helper()
	ctx := testCtx(t)
	c, _, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1)+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close(websocket.StatusNormalClosure, "") })
	w := &wsClient{t: t, c: c}
	if open := w.read(); !strings.HasPrefix(open, "0{") {
		t.Fatalf("Engine.IO open packet: %q", open)
	}
	w.send("40")
	connected := w.read()
	var hello struct {
		SID string `json:"sid"`
	}
	if !strings.HasPrefix(connected, "40{") || json.Unmarshal([]byte(connected[2:]), &hello) != nil {
		t.Fatalf("CONNECT answer: %q", connected)
	}
	w.id = hello.SID
	return w
}

func (w *wsClient) send(s string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// read returns the next message other than an Engine.IO ping (answered).
func (w *wsClient) read() string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		_, b, err := w.c.Read(ctx)
		if err != nil {
			w.t.Fatalf("read: %v", err)
		}
		if string(b) == "2" {
			w.send("3")
			continue
		}
		return string(b)
	}
}

// Three socketio servers, each with its own Cluster on one real Redis, with a
// client on each: every cross-node operation seen from the clients.
func TestSocketIOServersOnRedis(t *testing.T) {
	srv := redistest.Standalone(t)
	cs := startNodes(t, 3, nil, redisBuses(t, srv.URL(), redisbus.Streams))
	checkSocketIOServers(t, cs)
}

// The same with interest routing: the servers' socket ids are of the default
// Options.SocketIDRoom form.
func TestSocketIOServersOnRedisRouted(t *testing.T) {
	srv := redistest.Standalone(t)
	newBus := redisEnv(srv.URL()).newCluster(t)
	cs := startNodes(t, 3, routingOptions(), func(id string) bus.Bus { return newBus(id) })
	checkSocketIOServers(t, cs)
	requireRouted(t, cs)
}

func checkSocketIOServers(t *testing.T, cs []*Cluster) {
	var servers []*socketio.Server
	var clients []*wsClient
	for i, c := range cs {
		s := socketio.NewServer(&socketio.Options{Adapter: c.Adapter, Options: engineio.Options{Logger: quietLogger}})
		s.OnConnection(func(so *socketio.Socket) { so.Join("everyone") })
		s.Of("/").OnServerSideEmit("who", func(e *socketio.Event) {
			if err := e.Ack("server-" + string(rune('0'+i))); err != nil {
				t.Errorf("server-side ack: %v", err)
			}
		})
		servers = append(servers, s)
		clients = append(clients, dialSocketIO(t, serve(t, s)))
	}
	waitSettled(t, cs, "/")
	ctx := testCtx(t)

	// A broadcast from server 0 reaches the clients of every server.
	if err := servers[0].To("everyone").Emit(ctx, "news", "hello"); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	for i, c := range clients {
		if got := c.read(); got != `42["news","hello"]` {
			t.Errorf("client %d: %q", i, got)
		}
	}

	// FetchSockets from server 1 sees every client.
	remote, err := servers[1].Of("/").FetchSockets(ctx)
	if err != nil {
		t.Fatalf("FetchSockets: %v", err)
	}
	var ids, want []string
	for _, r := range remote {
		ids = append(ids, r.ID)
	}
	for _, c := range clients {
		want = append(want, c.id)
	}
	slices.Sort(ids)
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("FetchSockets = %q, want %q", ids, want)
	}

	// A broadcast with acks from server 2 collects every client's reply.
	type result struct {
		replies []string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		replies, err := servers[2].To("everyone").EmitWithAck(ctx, "question")
		var from []string
		for _, r := range replies {
			from = append(from, r.From)
		}
		slices.Sort(from)
		done <- result{from, err}
	}()
	for i, c := range clients {
		msg := c.read() // 42<ack id>["question"]
		if !strings.HasPrefix(msg, "42") || !strings.HasSuffix(msg, `["question"]`) {
			t.Fatalf("client %d: %q, want a question with an ack id", i, msg)
		}
		id := strings.TrimSuffix(strings.TrimPrefix(msg, "42"), `["question"]`)
		c.send("43" + id + `["answer"]`)
	}
	if r := <-done; r.err != nil || !slices.Equal(r.replies, want) {
		t.Errorf("EmitWithAck = replies from %q, %v; want from %q", r.replies, r.err, want)
	}

	// Server-side emit with acks: one reply per other server.
	replies, err := servers[0].Of("/").ServerSideEmitWithAck(ctx, "who")
	var from []string
	for _, r := range replies {
		var name string
		if r.Args.Len() != 1 || r.Args.Bind(&name) != nil {
			t.Errorf("server-side reply %+v", r)
		}
		from = append(from, name)
	}
	slices.Sort(from)
	if err != nil || !slices.Equal(from, []string{"server-1", "server-2"}) {
		t.Errorf("ServerSideEmitWithAck = %q, %v", from, err)
	}

	// SocketsJoin from server 1 puts client 0 (on server 0) in a room; a broadcast
	// to that room from server 2 reaches it alone.
	if err := servers[1].To(clients[0].id).SocketsJoin(ctx, "vip"); err != nil {
		t.Fatalf("SocketsJoin: %v", err)
	}
	// With interest routing, server 2 routes to "vip" once server 0 announced it.
	waitSettled(t, cs, "/")
	if err := servers[2].To("vip").Emit(ctx, "vip-news"); err != nil {
		t.Fatal(err)
	}
	if err := servers[2].To("everyone").Emit(ctx, "fence"); err != nil {
		t.Fatal(err)
	}
	if got := clients[0].read(); got != `42["vip-news"]` {
		t.Errorf("client 0: %q, want vip-news", got)
	}
	for i, c := range clients {
		if got := c.read(); got != `42["fence"]` {
			t.Errorf("client %d: %q, want the fence", i, got)
		}
	}

	// DisconnectSockets from server 0 disconnects the client of server 2.
	if err := servers[0].To(clients[2].id).DisconnectSockets(ctx, false); err != nil {
		t.Fatalf("DisconnectSockets: %v", err)
	}
	if got := clients[2].read(); got != "41" {
		t.Errorf("client 2: %q, want a DISCONNECT", got)
	}
}

// serve serves s over HTTP until the test ends, then shuts it down, and
// returns its URL.
func serve(t *testing.T, s *socketio.Server) string {
	t.Helper()
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return hs.URL
}
