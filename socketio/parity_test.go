package socketio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/testwait"
)

type userKey struct{}

// TestRequestContext: what HTTP middleware in front of the server put in the
// handshake request's context reaches connect middleware, the socket's
// context and its Request, over both transports; the socket's context ends
// when it disconnects.
func TestRequestContext(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		srv := NewServer(nil)
		auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := context.WithValue(r.Context(), userKey{}, "alice")
			srv.ServeHTTP(w, r.WithContext(ctx))
		})
		hs := httptest.NewServer(auth)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			hs.Close()
		})
		inMiddleware := make(chan any, 1)
		srv.Use(func(ctx context.Context, s *Socket) error {
			inMiddleware <- ctx.Value(userKey{})
			return nil
		})
		sockets := make(chan *Socket, 1)
		srv.OnConnection(func(s *Socket) { sockets <- s })
		c := dial(t, hs.URL+"/socket.io/", tr)
		c.connect("/", "")
		if v := recv(t, inMiddleware); v != "alice" {
			t.Fatalf("middleware ctx value = %v", v)
		}
		s := recv(t, sockets)
		if v := s.Context().Value(userKey{}); v != "alice" {
			t.Fatalf("socket ctx value = %v", v)
		}
		r := s.Request()
		if v := r.Context().Value(userKey{}); v != "alice" {
			t.Fatalf("request ctx value = %v", v)
		}
		if r.URL.Query().Get("EIO") != "4" || r.RemoteAddr == "" {
			t.Fatalf("request URL = %v", r.URL)
		}
		if s.Context().Err() != nil {
			t.Fatal("context ended while connected")
		}
		s.Disconnect(false)
		select {
		case <-s.Context().Done():
		case <-time.After(waitTimeout):
			t.Fatal("socket context not done after disconnect")
		}
		if !errors.Is(s.Context().Err(), context.Canceled) {
			t.Fatalf("Err = %v", s.Context().Err())
		}
	})
}

// TestEventMiddleware: Socket.Use sees every event, may change it, and refuses
// with an error that the client gets as its ack and OnError handlers get.
func TestEventMiddleware(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		srv, url := newTestServer(t, nil)
		errs := make(chan error, 4)
		seen := make(chan string, 4)
		srv.OnConnection(func(s *Socket) {
			s.Use(func(e *Event) error {
				switch e.Name {
				case "admin":
					return errors.New("unauthorized event")
				case "secret":
					return &ConnectError{Message: "forbidden", Data: map[string]int{"code": 403}}
				case "rewrite":
					e.Args = []json.RawMessage{json.RawMessage(`"rewritten"`)}
				}
				return nil
			})
			s.OnError(func(err error) { errs <- err })
			s.OnAny(func(e *Event) { seen <- e.Name })
			s.On("rewrite", func(e *Event) {
				var v string
				if err := e.Bind(&v); err != nil {
					t.Error(err)
				}
				_ = e.Ack(v)
			})
			s.On("admin", func(e *Event) { t.Error("refused event reached its listener") })
		})
		c := dial(t, url, tr)
		c.connect("/", "")
		c.send(`21["admin"]`)
		c.expect(`31[{"message":"unauthorized event"}]`)
		if err := recv(t, errs); err.Error() != "unauthorized event" {
			t.Fatalf("OnError got %v", err)
		}
		c.send(`22["secret"]`)
		c.expect(`32[{"message":"forbidden","data":{"code":403}}]`)
		recv(t, errs)
		c.send(`2["admin"]`) // no ack asked: refused silently to the client
		recv(t, errs)
		c.send(`23["rewrite","original"]`)
		c.expect(`33["rewritten"]`)
		if n := recv(t, seen); n != "rewrite" {
			t.Fatalf("OnAny saw %q", n)
		}
	})
}

// TestListeners: several listeners per event, removal of one or all, Once,
// PrependAny, OffAny, outgoing listeners for emits and broadcasts.
func TestListeners(t *testing.T) {
	srv, url := newTestServer(t, nil)
	var mu sync.Mutex
	var calls []string
	record := func(s string) {
		mu.Lock()
		calls = append(calls, s)
		mu.Unlock()
	}
	sockets := make(chan *Socket, 1)
	srv.OnConnection(func(s *Socket) {
		s.On("e", func(e *Event) { record("first") })
		offSecond := s.On("e", func(e *Event) { record("second") })
		s.Once("e", func(e *Event) { record("once") })
		s.OnAny(func(e *Event) { record("any") })
		s.PrependAny(func(e *Event) { record("prepended") })
		s.On("remove-second", func(e *Event) { offSecond(); _ = e.Ack() })
		s.On("off-all", func(e *Event) { s.Off("e"); s.OffAny(); _ = e.Ack() })
		sockets <- s
	})
	c := dial(t, url, "websocket")
	c.connect("/", "")
	s := recv(t, sockets)
	take := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := calls
		calls = nil
		return out
	}
	c.send(`21["e"]`)
	c.send(`22["e"]`)
	c.send(`23["remove-second"]`)
	c.expect(`33[]`)
	want := []string{"prepended", "any", "first", "second", "once", "prepended", "any", "first", "second", "prepended", "any"}
	if got := take(); !slices.Equal(got, want) {
		t.Fatalf("calls = %q, want %q", got, want)
	}
	if n := s.ListenerCount("e"); n != 1 {
		t.Fatalf("ListenerCount = %d", n)
	}
	c.send(`2["e"]`)
	c.send(`24["off-all"]`)
	c.expect(`34[]`)
	c.send(`2["e"]`)
	c.send(`25["off-all"]`)
	c.expect(`35[]`)
	want = []string{"prepended", "any", "first", "prepended", "any"}
	if got := take(); !slices.Equal(got, want) {
		t.Fatalf("calls after removals = %q, want %q", got, want)
	}

	// Outgoing listeners see what is sent to the client: its own emits and
	// broadcasts, binary as binary.
	out := make(chan *Event, 4)
	s.PrependAnyOutgoing(func(e *Event) { record("prepended-out") })
	off := s.OnAnyOutgoing(func(e *Event) { out <- e })
	if err := s.Emit("hello", 1); err != nil {
		t.Fatal(err)
	}
	c.expect(`2["hello",1]`)
	e := recv(t, out)
	if e.Name != "hello" || len(e.Args) != 1 || string(e.Args[0]) != "1" {
		t.Fatalf("outgoing %+v", e)
	}
	if err := srv.Emit(context.Background(), "news", []byte{7}); err != nil {
		t.Fatal(err)
	}
	c.expect(`51-["news",{"_placeholder":true,"num":0}]`)
	c.expectBinary([]byte{7})
	e = recv(t, out)
	var b []byte
	if e.Name != "news" || e.Bind(&b) != nil || !bytes.Equal(b, []byte{7}) {
		t.Fatalf("outgoing broadcast %+v", e)
	}
	if got := take(); !slices.Equal(got, []string{"prepended-out", "prepended-out"}) {
		t.Fatalf("prepended outgoing calls = %q", got)
	}
	off()
	s.OffAnyOutgoing()
	if err := s.Emit("quiet"); err != nil {
		t.Fatal(err)
	}
	c.expect(`2["quiet"]`)
	select {
	case e := <-out:
		t.Fatalf("removed outgoing listener called for %q", e.Name)
	default:
	}
	if got := take(); len(got) != 0 {
		t.Fatalf("removed listeners called: %q", got)
	}
}

// TestJoinInMiddleware: rooms joined in connect middleware take effect when
// the socket connects, and not for a refused client.
func TestJoinInMiddleware(t *testing.T) {
	srv, url := newTestServer(t, nil)
	srv.Use(func(ctx context.Context, s *Socket) error {
		s.Join("vip", "all", "dropped")
		s.Leave("dropped")
		if got := s.Rooms(); !slices.Equal(got, sorted("all", "vip", s.ID())) {
			return errors.New("rooms in middleware: " + strings.Join(got, ","))
		}
		if strings.Contains(string(s.Handshake().Auth), "refuse") {
			return errors.New("refused")
		}
		return nil
	})
	sockets := make(chan *Socket, 1)
	srv.OnConnection(func(s *Socket) { sockets <- s })
	c := dial(t, url, "websocket")
	c.send(`0{"refuse":true}`)
	c.expect(`4{"message":"refused"}`)
	if got := srv.Of("/").LocalRooms(); len(got) != 0 {
		t.Fatalf("rooms of a refused client: %q", got)
	}
	c.connect("/", "")
	s := recv(t, sockets)
	if got := s.Rooms(); !slices.Equal(got, sorted("all", "vip", s.ID())) {
		t.Fatalf("rooms = %q", got)
	}
	if err := srv.To("vip").Emit(context.Background(), "vip-only"); err != nil {
		t.Fatal(err)
	}
	c.expect(`2["vip-only"]`)
}

// TestHandlersPerNamespace: a slow handler in one namespace does not hold up
// the events of another namespace of the same connection; in one namespace,
// events are handled in order.
func TestHandlersPerNamespace(t *testing.T) {
	srv, url := newTestServer(t, nil)
	release := make(chan struct{})
	var order []int
	var mu sync.Mutex
	srv.Of("/slow").OnConnection(func(s *Socket) {
		s.On("block", func(e *Event) { <-release })
		s.On("n", func(e *Event) {
			var i int
			_ = e.Bind(&i)
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		})
	})
	srv.OnConnection(func(s *Socket) {
		s.On("ping", func(e *Event) { _ = e.Ack("pong") })
	})
	c := dial(t, url, "websocket")
	c.connect("/slow", "")
	c.connect("/", "")
	c.send(`2/slow,["block"]`)
	for i := range 5 {
		c.send(`2/slow,["n",` + jsonString(i) + `]`)
	}
	// The main namespace answers while /slow is blocked.
	c.send(`27["ping"]`)
	c.expect(`37["pong"]`)
	mu.Lock()
	if len(order) != 0 {
		t.Fatalf("events behind the blocked handler ran: %v", order)
	}
	mu.Unlock()
	close(release)
	testwait.For(t, waitTimeout, "events after the blocked one", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 5
	})
	if !slices.Equal(order, []int{0, 1, 2, 3, 4}) {
		t.Fatalf("order = %v", order)
	}
}

// TestConcurrentListener: an event registered with Concurrent(2) runs up to
// two handlers at once; a third waits for a free slot, and the socket's next
// events wait with it.
func TestConcurrentListener(t *testing.T) {
	for _, perNamespace := range []bool{false, true} {
		name := "event"
		if perNamespace {
			name = "namespace"
		}
		t.Run(name, func(t *testing.T) {
			srv, url := newTestServer(t, nil)
			if perNamespace {
				srv.Of("/").SetConcurrency(2)
			}
			var running, peak atomic.Int32
			started := make(chan int, 8)
			release := make(chan struct{})
			after := make(chan struct{}, 1)
			srv.OnConnection(func(s *Socket) {
				var opts []ListenerOption
				if !perNamespace {
					opts = append(opts, Concurrent(2))
				}
				s.On("work", func(e *Event) {
					n := running.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					var i int
					_ = e.Bind(&i)
					started <- i
					<-release
					running.Add(-1)
				}, opts...)
				s.On("after", func(e *Event) { after <- struct{}{} })
			})
			c := dial(t, url, "websocket")
			c.connect("/", "")
			for i := range 3 {
				c.send(`2["work",` + jsonString(i) + `]`)
			}
			c.send(`2["after"]`)
			got := []int{recv(t, started), recv(t, started)}
			slices.Sort(got)
			if !slices.Equal(got, []int{0, 1}) {
				t.Fatalf("started first = %v", got)
			}
			select {
			case i := <-started:
				t.Fatalf("third handler %d started beyond the bound", i)
			case <-after:
				t.Fatal("the next event ran while the bound was reached")
			case <-time.After(100 * time.Millisecond):
			}
			close(release)
			if i := recv(t, started); i != 2 {
				t.Fatalf("third = %d", i)
			}
			recv(t, after)
			if p := peak.Load(); p != 2 {
				t.Fatalf("peak concurrency = %d", p)
			}
		})
	}
}

// TestRoomEvents: room life-cycle listeners in order, and room listings.
func TestRoomEvents(t *testing.T) {
	srv, url := newTestServer(t, nil)
	nsp := srv.Of("/")
	events := make(chan string, 32)
	nsp.OnCreateRoom(func(room string) { events <- "create " + room })
	nsp.OnDeleteRoom(func(room string) { events <- "delete " + room })
	nsp.OnJoinRoom(func(room, id string) { events <- "join " + room + " " + id })
	nsp.OnLeaveRoom(func(room, id string) { events <- "leave " + room + " " + id })
	sockets := make(chan *Socket, 2)
	srv.OnConnection(func(s *Socket) { sockets <- s })
	expect := func(want ...string) {
		t.Helper()
		for _, w := range want {
			if got := recv(t, events); got != w {
				t.Fatalf("room event %q, want %q", got, w)
			}
		}
	}
	c1 := dial(t, url, "websocket")
	c1.connect("/", "")
	s1 := recv(t, sockets)
	expect("create "+s1.ID(), "join "+s1.ID()+" "+s1.ID())
	s1.Join("r")
	expect("create r", "join r "+s1.ID())
	c2 := dial(t, url, "polling")
	c2.connect("/", "")
	s2 := recv(t, sockets)
	expect("create "+s2.ID(), "join "+s2.ID()+" "+s2.ID())
	s2.Join("r", "s")
	expect("join r "+s2.ID(), "create s", "join s "+s2.ID())
	if got := nsp.LocalRooms(); !slices.Equal(got, []string{"r", "s"}) {
		t.Fatalf("LocalRooms = %q", got)
	}
	all, err := nsp.AllRooms(context.Background())
	if err != nil || !slices.Equal(all, []string{"r", "s"}) {
		t.Fatalf("AllRooms = %q, %v", all, err)
	}
	s1.Leave("r")
	expect("leave r " + s1.ID())
	s2.Disconnect(false)
	expect("leave "+s2.ID()+" "+s2.ID(), "delete "+s2.ID(), "leave r "+s2.ID(), "delete r", "leave s "+s2.ID(), "delete s")
	if got := nsp.LocalRooms(); len(got) != 0 {
		t.Fatalf("LocalRooms after leaving = %q", got)
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// TestCompressFalse: with permessage-deflate negotiated, a large event is
// compressed on the wire by default and sent as it is with Compress(false),
// from a socket emit and from a broadcast.
func TestCompressFalse(t *testing.T) {
	srv, url := newTestServer(t, &Options{Options: engineio.Options{PerMessageDeflate: true}})
	sockets := make(chan *Socket, 1)
	srv.OnConnection(func(s *Socket) { sockets <- s })
	var read atomic.Int64
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: c, n: &read}, nil
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1)+"?EIO=4&transport=websocket",
		&websocket.DialOptions{HTTPClient: client, CompressionMode: websocket.CompressionContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	readText := func() string {
		t.Helper()
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readText() // open
	if err := ws.Write(ctx, websocket.MessageText, []byte("40")); err != nil {
		t.Fatal(err)
	}
	readText() // CONNECT answer
	s := recv(t, sockets)
	big := strings.Repeat("compressible ", 2000) // 26 000 bytes
	measure := func(emit func() error) int64 {
		t.Helper()
		before := read.Load()
		if err := emit(); err != nil {
			t.Fatal(err)
		}
		if m := readText(); !strings.Contains(m, big) {
			t.Fatalf("message of %d bytes", len(m))
		}
		return read.Load() - before
	}
	compressed := measure(func() error { return s.Emit("big", big) })
	plain := measure(func() error { return s.Compress(false).Emit("big", big) })
	broadcastPlain := measure(func() error { return srv.Compress(false).Emit(ctx, "big", big) })
	broadcastCompressed := measure(func() error { return srv.Emit(ctx, "big", big) })
	t.Logf("bytes on the wire: emit %d, Compress(false) %d; broadcast %d, Compress(false) %d",
		compressed, plain, broadcastCompressed, broadcastPlain)
	if compressed > int64(len(big))/4 || broadcastCompressed > int64(len(big))/4 {
		t.Fatalf("default emit not compressed: %d and %d bytes for %d", compressed, broadcastCompressed, len(big))
	}
	if plain < int64(len(big)) || broadcastPlain < int64(len(big)) {
		t.Fatalf("Compress(false) compressed: %d and %d bytes for %d", plain, broadcastPlain, len(big))
	}
}

// TestBinaryAckReply: binary in a client's ack stays binary, for a socket's
// EmitWithAck and for a broadcast's.
func TestBinaryAckReply(t *testing.T) {
	srv, url := newTestServer(t, nil)
	sockets := make(chan *Socket, 1)
	srv.OnConnection(func(s *Socket) { sockets <- s })
	c := dial(t, url, "websocket")
	c.connect("/", "")
	s := recv(t, sockets)
	type result struct {
		args Args
		err  error
	}
	res := make(chan result, 1)
	go func() {
		a, err := s.EmitWithAck(context.Background(), "give")
		res <- result{a, err}
	}()
	id := strings.TrimSuffix(c.expectPrefix("2"), `["give"]`)
	c.send("61-"+id+`[{"_placeholder":true,"num":0},"text"]`, []byte{1, 2, 3})
	r := recv(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	var b []byte
	var text string
	if err := r.args.Bind(&b, &text); err != nil || !bytes.Equal(b, []byte{1, 2, 3}) || text != "text" {
		t.Fatalf("Bind = %v %q %v", b, text, err)
	}
	if v := r.args.Values(); r.args.Len() != 2 || !bytes.Equal(v[0].([]byte), []byte{1, 2, 3}) {
		t.Fatalf("Values = %#v", v)
	}

	replies := make(chan []Reply, 1)
	go func() {
		rs, err := srv.Timeout(waitTimeout).EmitWithAck(context.Background(), "give")
		if err != nil {
			t.Error(err)
		}
		replies <- rs
	}()
	id = strings.TrimSuffix(c.expectPrefix("2"), `["give"]`)
	c.send("61-"+id+`[{"nested":{"_placeholder":true,"num":0}}]`, []byte{9})
	rs := recv(t, replies)
	var nested struct {
		Nested []byte `json:"nested"`
	}
	if len(rs) != 1 || rs[0].From != s.ID() || rs[0].Args.Bind(&nested) != nil || !bytes.Equal(nested.Nested, []byte{9}) {
		t.Fatalf("broadcast replies %+v", rs)
	}
}

// TestServerSideEmitBinary: binary arguments of a server-side event and of its
// reply reach the handlers as binary (through packArgs, which is what crosses
// a cluster).
func TestServerSideEmitBinary(t *testing.T) {
	srv, _ := newTestServer(t, nil)
	nsp := srv.Of("/")
	p, err := eventPacket("/", "blob", []any{[]byte{1, 2}, map[string]any{"b": []byte{3}}})
	if err != nil {
		t.Fatal(err)
	}
	wire, err := json.Marshal(packArgs(splitArgs(t, p.Data), p.Attachments))
	if err != nil {
		t.Fatal(err)
	}
	var args []json.RawMessage // as a cluster node receives them
	if err := json.Unmarshal(wire, &args); err != nil {
		t.Fatal(err)
	}
	got := make(chan *Event, 1)
	nsp.OnServerSideEmit("blob", func(e *Event) {
		got <- e
		if err := e.Ack([]byte{4}); err != nil {
			t.Error(err)
		}
	})
	reply := make(chan []json.RawMessage, 1)
	nsp.forAdapter().HandleServerSideEmit("blob", args, func(a []json.RawMessage) { reply <- a })
	e := recv(t, got)
	var b []byte
	var m struct {
		B []byte `json:"b"`
	}
	if err := e.Bind(&b, &m); err != nil || !bytes.Equal(b, []byte{1, 2}) || !bytes.Equal(m.B, []byte{3}) {
		t.Fatalf("Bind = %v %v %v", b, m, err)
	}
	if v, ok := e.Values()[0].([]byte); !ok || !bytes.Equal(v, []byte{1, 2}) {
		t.Fatalf("Values()[0] = %#v", e.Values()[0])
	}
	r := unpackArgs(recv(t, reply))
	var rb []byte
	if err := r.Bind(&rb); err != nil || !bytes.Equal(rb, []byte{4}) {
		t.Fatalf("reply = %v %v", rb, err)
	}
}

func splitArgs(t *testing.T, data json.RawMessage) []json.RawMessage {
	t.Helper()
	var all []json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		t.Fatal(err)
	}
	return all[1:]
}

// TestRecoverySkipsMiddleware: by default a recovered client is not run
// through connect middleware again (as the reference server's
// skipMiddlewares: true); with RunMiddlewares it is, and may be refused.
func TestRecoverySkipsMiddleware(t *testing.T) {
	for _, run := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "RunMiddlewares"}[run], func(t *testing.T) {
			srv, url := newTestServer(t, &Options{Recovery: &RecoveryOptions{MaxDisconnectionDuration: waitTimeout, RunMiddlewares: run}})
			var calls atomic.Int32
			srv.Use(func(ctx context.Context, s *Socket) error {
				if calls.Add(1) > 1 {
					return errors.New("second time")
				}
				return nil
			})
			sockets := make(chan *Socket, 2)
			srv.OnConnection(func(s *Socket) { sockets <- s })
			c1 := dial(t, url, "websocket")
			first := connectWith(t, c1, "")
			s1 := recv(t, sockets)
			if err := srv.Emit(context.Background(), "e"); err != nil {
				t.Fatal(err)
			}
			off := lastString(t, "2"+`["e","`+c1.expectPrefix(`2["e","`))
			c1.close()
			testwait.For(t, waitTimeout, "away", func() bool { return !s1.Connected() })
			c2 := dial(t, url, "websocket")
			c2.send(`0{"pid":"` + first.PID + `","offset":"` + off + `"}`)
			if run {
				c2.expect(`4{"message":"second time"}`)
				if n := calls.Load(); n != 2 {
					t.Fatalf("middleware calls = %d", n)
				}
				return
			}
			c2.expectPrefix(`0{"sid":"` + first.SID + `"`)
			if s2 := recv(t, sockets); !s2.Recovered() {
				t.Fatal("not recovered")
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("middleware calls = %d", n)
			}
		})
	}
}

// TestOnNewNamespace: listeners see namespaces made by Of and by a dynamic
// parent for a client.
func TestOnNewNamespace(t *testing.T) {
	srv, url := newTestServer(t, nil)
	made := make(chan string, 4)
	srv.OnNewNamespace(func(n *Namespace) { made <- n.Name() })
	srv.Of("/static")
	srv.Of("/static") // exists: not new
	srv.OfFunc(func(name string, _ json.RawMessage) bool { return strings.HasPrefix(name, "/dyn-") })
	c := dial(t, url, "websocket")
	c.connect("/dyn-1", "")
	if a, b := recv(t, made), recv(t, made); a != "/static" || b != "/dyn-1" {
		t.Fatalf("new namespaces %q, %q", a, b)
	}
	select {
	case n := <-made:
		t.Fatalf("announced again: %q", n)
	default:
	}
}
