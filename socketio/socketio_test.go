package socketio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/parser"
)

func TestConnectMainNamespace(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		srv, url := newTestServer(t, nil)
		got := make(chan *Socket, 1)
		srv.OnConnection(func(s *Socket) {
			if err := s.Emit("auth", json.RawMessage(s.Handshake().Auth)); err != nil {
				t.Errorf("emit: %v", err)
			}
			got <- s
		})
		c := dial(t, url, tr)
		sid := c.connect("/", "")
		c.expect(`2["auth",{}]`)
		s := recv(t, got)
		if s.ID() != sid || s.ID() == c.sid {
			t.Fatalf("socket id %q, CONNECT sid %q, engine sid %q", s.ID(), sid, c.sid)
		}
		if rooms := s.Rooms(); !slices.Equal(rooms, []string{s.ID()}) {
			t.Fatalf("rooms = %q", rooms)
		}
		if s.Transport() != tr {
			t.Fatalf("transport = %q", s.Transport())
		}
		hs := s.Handshake()
		if !slices.Equal(hs.Query["EIO"], []string{"4"}) || hs.Address != "127.0.0.1" || hs.Secure || !strings.HasPrefix(hs.URL, "/socket.io/") || hs.Time.IsZero() {
			t.Fatalf("handshake = %+v", hs)
		}

		// With an auth payload, kept byte for byte.
		c2 := dial(t, url, tr)
		c2.connect("/", `{"token":"123", "z":[1,2]}`)
		c2.expect(`2["auth",{"token":"123", "z":[1,2]}]`)
	})
}

func TestNamespaces(t *testing.T) {
	srv, url := newTestServer(t, nil)
	srv.Of("custom").OnConnection(func(s *Socket) {
		if err := s.Emit("auth", json.RawMessage(s.Handshake().Auth)); err != nil {
			t.Errorf("emit: %v", err)
		}
	})
	dyn := srv.OfRegexp(regexp.MustCompile(`^/room-\d+$`))
	var mu sync.Mutex
	var names []string
	dyn.OnConnection(func(s *Socket) {
		mu.Lock()
		names = append(names, s.Namespace().Name())
		mu.Unlock()
	})
	byFunc := srv.OfFunc(func(name string, auth json.RawMessage) bool {
		return strings.HasPrefix(name, "/team-") && string(auth) == `{"ok":true}`
	})
	byFunc.OnConnection(func(s *Socket) {})

	c := dial(t, url, "websocket")
	c.send(`0/custom,{"token":"abc"}`)
	c.expectPrefix(`0/custom,{"sid":"`)
	c.expect(`2/custom,["auth",{"token":"abc"}]`)

	c.send("0/random")
	c.expect(`4/random,{"message":"Invalid namespace"}`)
	c.send("0/room-x,")
	c.expect(`4/room-x,{"message":"Invalid namespace"}`)

	c.connect("/room-12", "")
	c.connect("/room-7", "")
	c.send(`0/team-a,{"ok":false}`)
	c.expect(`4/team-a,{"message":"Invalid namespace"}`)
	c.connect("/team-a", `{"ok":true}`)

	mu.Lock()
	slices.Sort(names)
	got := slices.Clone(names)
	mu.Unlock()
	if !slices.Equal(got, []string{"/room-12", "/room-7"}) {
		t.Fatalf("dynamic namespaces = %q", got)
	}
	// A broadcast on the parent reaches every namespace made from it.
	if err := dyn.Emit(context.Background(), "hello", 1); err != nil {
		t.Fatal(err)
	}
	a, b := c.next().text, c.next().text
	pair := []string{a, b}
	slices.Sort(pair)
	if !slices.Equal(pair, []string{`2/room-12,["hello",1]`, `2/room-7,["hello",1]`}) {
		t.Fatalf("parent broadcast = %q", pair)
	}
	// The main namespace is still usable on the same connection.
	c.connect("/", "")
}

func TestMiddleware(t *testing.T) {
	srv, url := newTestServer(t, nil)
	srv.Use(func(ctx context.Context, s *Socket) error {
		var auth struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(s.Handshake().Auth, &auth); err != nil {
			return err
		}
		switch auth.Token {
		case "good":
			return s.SetData(map[string]string{"user": "alice"})
		case "plain":
			return errors.New("plain refusal")
		}
		return &ConnectError{Message: "not authorized", Data: map[string]int{"code": 401}}
	})
	connected := make(chan *Socket, 1)
	srv.OnConnection(func(s *Socket) { connected <- s })

	forTransports(t, func(t *testing.T, tr string) {
		c := dial(t, url, tr)
		c.send(`0{"token":"bad"}`)
		c.expect(`4{"message":"not authorized","data":{"code":401}}`)
		c.send(`0{"token":"plain"}`)
		c.expect(`4{"message":"plain refusal"}`)
		c.connect("/", `{"token":"good"}`)
		s := recv(t, connected)
		if d, ok := s.Data().(map[string]string); !ok || d["user"] != "alice" {
			t.Fatalf("data = %#v", s.Data())
		}
	})
}

type chatMessage struct {
	Room string `json:"room"`
	Text string `json:"text"`
}

func TestEventsAndClientAcks(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		srv, url := newTestServer(t, nil)
		anyEvents := make(chan string, 10)
		srv.OnConnection(func(s *Socket) {
			s.OnAny(func(e *Event) { anyEvents <- e.Name })
			s.On("chat", func(e *Event) {
				var m chatMessage
				var n int
				if err := e.Bind(&m, &n); err != nil {
					if err := e.Ack(map[string]string{"error": err.Error()}); err != nil {
						t.Errorf("ack: %v", err)
					}
					return
				}
				if err := e.Ack("ok", m.Text, n+1); err != nil {
					t.Errorf("ack: %v", err)
				}
				if err := e.Ack("twice"); !errors.Is(err, ErrAckSent) {
					t.Errorf("second ack: %v", err)
				}
			})
			s.On("echo", func(e *Event) {
				if e.HasAck() {
					t.Error("echo has an ack")
				}
				if err := e.Ack(); !errors.Is(err, ErrNoAck) {
					t.Errorf("ack without id: %v", err)
				}
				if err := s.Emit("echo-back", e.Values()...); err != nil {
					t.Errorf("emit: %v", err)
				}
			})
		})
		c := dial(t, url, tr)
		c.connect("/", "")
		c.send(`212["chat",{"room":"r","text":"hi"},41]`)
		c.expect(`312["ok","hi",42]`)
		c.send(`213["chat","not an object",1]`)
		m := c.expectPrefix(`313[{"error":"socketio: bad argument 0: json: cannot unmarshal`)
		_ = m
		c.send(`214["chat",{}]`)
		c.expect(`314[{"error":"socketio: missing argument: 2 destinations, 1 arguments"}]`)
		c.send(`2["echo",1,"2",{"3":[true]}, {"b":1,"a":2}]`)
		c.expect(`2["echo-back",1,"2",{"3":[true]},{"b":1,"a":2}]`)
		if got := []string{recv(t, anyEvents), recv(t, anyEvents), recv(t, anyEvents), recv(t, anyEvents)}; !slices.Equal(got, []string{"chat", "chat", "chat", "echo"}) {
			t.Fatalf("OnAny saw %q", got)
		}
		// An event nobody handles is ignored and the connection stays up.
		c.send(`2["nobody"]`)
		c.send(`2["echo"]`)
		c.expect(`2["echo-back"]`)
	})
}

func TestBinary(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		srv, url := newTestServer(t, nil)
		type upload struct {
			Name string `json:"name"`
			Body []byte `json:"body"`
		}
		srv.OnConnection(func(s *Socket) {
			s.On("message", func(e *Event) {
				if err := s.Emit("message-back", e.Values()...); err != nil {
					t.Errorf("emit: %v", err)
				}
			})
			s.On("message-with-ack", func(e *Event) {
				if err := e.Ack(e.Values()...); err != nil {
					t.Errorf("ack: %v", err)
				}
			})
			s.On("upload", func(e *Event) {
				var u upload
				var raw []byte
				if err := e.Bind(&u, &raw); err != nil {
					t.Errorf("bind: %v", err)
					return
				}
				if err := e.Ack(u.Name, len(u.Body), u.Body, raw); err != nil {
					t.Errorf("ack: %v", err)
				}
			})
		})
		c := dial(t, url, tr)
		c.connect("/", "")
		c.send(`52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, []byte{1, 2, 3}, []byte{4, 5, 6})
		c.expect(`52-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
		c.expectBinary([]byte{1, 2, 3})
		c.expectBinary([]byte{4, 5, 6})

		c.send(`52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, []byte{1, 2, 3}, []byte{4, 5, 6})
		c.expect(`62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
		c.expectBinary([]byte{1, 2, 3})
		c.expectBinary([]byte{4, 5, 6})

		c.send(`52-5["upload",{"name":"f","body":{"_placeholder":true,"num":1}},{"_placeholder":true,"num":0}]`, []byte{9}, []byte{7, 7})
		c.expect(`62-5["f",2,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
		c.expectBinary([]byte{7, 7})
		c.expectBinary([]byte{9})
	})
}

func TestServerAcks(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		srv, url := newTestServer(t, nil)
		type result struct {
			args Args
			err  error
		}
		results := make(chan result, 3)
		srv.OnConnection(func(s *Socket) {
			s.On("ask", func(e *Event) {
				// Waiting inside a handler works: acks are not queued behind handlers.
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				args, err := s.EmitWithAck(ctx, "question", "how much?")
				results <- result{args, err}
			})
			s.On("ask-short", func(e *Event) {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				args, err := s.EmitWithAck(ctx, "question", "ignored")
				results <- result{args, err}
			})
		})
		c := dial(t, url, tr)
		c.connect("/", "")
		c.send(`2["ask"]`)
		id := strings.TrimSuffix(c.expectPrefix(`2`), `["question","how much?"]`)
		c.send(`6`+`1-`+id+`[42,{"_placeholder":true,"num":0}]`, []byte{1, 2})
		r := recv(t, results)
		var n int
		var b []byte
		if r.err != nil || r.args.Bind(&n, &b) != nil || n != 42 || !bytes.Equal(b, []byte{1, 2}) {
			t.Fatalf("EmitWithAck = %q, %v (n=%d b=%v)", r.args, r.err, n, b)
		}

		c.send(`2["ask-short"]`)
		c.expectPrefix(`2`)
		r = recv(t, results)
		if !errors.Is(r.err, ErrAckTimeout) || !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("unanswered EmitWithAck err = %v", r.err)
		}
	})
}

func TestEmitWithAckDisconnect(t *testing.T) {
	srv, url := newTestServer(t, nil)
	errc := make(chan error, 1)
	srv.OnConnection(func(s *Socket) {
		go func() {
			_, err := s.EmitWithAck(context.Background(), "question")
			errc <- err
		}()
	})
	c := dial(t, url, "websocket")
	c.connect("/", "")
	c.expectPrefix("2")
	c.close()
	if err := recv(t, errc); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("err = %v", err)
	}
}

// clientGroup connects n websocket clients to the main namespace and returns them
// with their server-side sockets, in the same order.
func clientGroup(t *testing.T, srv *Server, url string, n int) ([]*testClient, []*Socket) {
	t.Helper()
	ch := make(chan *Socket, n)
	srv.OnConnection(func(s *Socket) { ch <- s })
	clients := make([]*testClient, n)
	sockets := make([]*Socket, n)
	for i := range clients {
		clients[i] = dial(t, url, transports[i%2])
		id := clients[i].connect("/", "")
		sockets[i] = recv(t, ch)
		if sockets[i].ID() != id {
			t.Fatalf("socket %d id mismatch", i)
		}
	}
	return clients, sockets
}

func TestRoomsAndBroadcast(t *testing.T) {
	srv, url := newTestServer(t, nil)
	clients, sockets := clientGroup(t, srv, url, 4)
	ctx := context.Background()
	sockets[0].Join("a", "b")
	sockets[1].Join("a")
	sockets[2].Join("b")
	if got := sockets[0].Rooms(); !slices.Equal(got, sorted(sockets[0].ID(), "a", "b")) {
		t.Fatalf("rooms = %q", got)
	}

	check := func(what string, want ...int) {
		t.Helper()
		for i, c := range clients {
			if slices.Contains(want, i) {
				c.expect(`2["ev","` + what + `"]`)
			}
		}
		// A marker to every client proves nothing else was queued before it.
		if err := srv.Emit(ctx, "mark"); err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			c.expect(`2["mark"]`)
		}
	}
	// checkVolatile is check for a volatile emit, which a client may miss
	// (a polling client without a pending request, a busy writer): those in
	// want get it at most once, the others never.
	checkVolatile := func(what string, want ...int) {
		t.Helper()
		if err := srv.Emit(ctx, "mark"); err != nil {
			t.Fatal(err)
		}
		for i, c := range clients {
			m := c.next()
			if m.text == `2["ev","`+what+`"]` {
				if !slices.Contains(want, i) {
					t.Fatalf("client %d got %q", i, what)
				}
				m = c.next()
			}
			if m.text != `2["mark"]` {
				t.Fatalf("client %d: got %q, want the marker", i, m.text)
			}
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(srv.To("a").Emit(ctx, "ev", "to a"))
	check("to a", 0, 1)
	must(srv.To("a", "b").Emit(ctx, "ev", "to a b"))
	check("to a b", 0, 1, 2)
	must(srv.To("a", "b").Except("b").Emit(ctx, "ev", "a except b"))
	check("a except b", 1)
	must(srv.Of("/").Except("a").Emit(ctx, "ev", "except a"))
	check("except a", 2, 3)
	must(srv.Except("a", "b").Local().Emit(ctx, "ev", "server except a b"))
	check("server except a b", 3)
	must(srv.In("b").Volatile().Emit(ctx, "ev", "server in b"))
	checkVolatile("server in b", 0, 2)
	must(sockets[0].To("a").Emit(ctx, "ev", "from 0 to a"))
	check("from 0 to a", 1)
	must(sockets[0].Broadcast().Emit(ctx, "ev", "broadcast from 0"))
	check("broadcast from 0", 1, 2, 3)
	must(srv.To(sockets[3].ID()).Emit(ctx, "ev", "to 3 by id"))
	check("to 3 by id", 3)
	must(srv.Of("/").Local().Volatile().Compress(true).To("b").Emit(ctx, "ev", "local volatile b"))
	checkVolatile("local volatile b", 0, 2)

	sockets[0].Leave("a")
	must(srv.To("a").Emit(ctx, "ev", "after leave"))
	check("after leave", 1)

	// Operators are values: deriving from one does not change it.
	base := srv.To("a")
	_ = base.Except(sockets[1].ID())
	must(base.Emit(ctx, "ev", "base"))
	check("base", 1)

	// Server-wide operations through the adapter.
	must(srv.Of("/").SocketsJoin(ctx, "all"))
	must(srv.To("all").Emit(ctx, "ev", "all"))
	check("all", 0, 1, 2, 3)
	must(srv.To("b").SocketsLeave(ctx, "all"))
	must(srv.To("all").Emit(ctx, "ev", "all minus b"))
	check("all minus b", 1, 3)

	// Disconnecting leaves every room.
	clients[1].close()
	testwait.For(t, waitTimeout, "socket 1 gone", func() bool { return !sockets[1].Connected() })
	if rooms := srv.Of("/").Adapter().Rooms(sockets[1].ID()); len(rooms) != 0 {
		t.Fatalf("rooms after disconnect = %q", rooms)
	}
	if err := sockets[1].Emit("ev"); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("emit to disconnected socket: %v", err)
	}
	if err := srv.Emit(ctx, "disconnect"); !errors.Is(err, ErrReservedEvent) {
		t.Fatalf("reserved event: %v", err)
	}
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

func TestBroadcastEmitWithAck(t *testing.T) {
	srv, url := newTestServer(t, nil)
	clients, sockets := clientGroup(t, srv, url, 3)
	ctx := context.Background()
	type out struct {
		replies []Reply
		err     error
	}
	res := make(chan out, 1)
	go func() {
		r, err := srv.Of("/").Timeout(1500*time.Millisecond).EmitWithAck(ctx, "vote", "q1")
		res <- out{r, err}
	}()
	for i, c := range clients {
		id := strings.TrimSuffix(c.expectPrefix("2"), `["vote","q1"]`)
		if i < 2 {
			c.send("3" + id + `["yes",` + jsonString(i) + `]`)
		}
	}
	o := recv(t, res)
	var missing *adapter.MissingRepliesError
	if !errors.As(o.err, &missing) || missing.Expected != 3 || missing.Received != 2 ||
		!slices.Equal(missing.Missing, []string{sockets[2].ID()}) || !errors.Is(o.err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", o.err)
	}
	if len(o.replies) != 2 {
		t.Fatalf("replies = %+v", o.replies)
	}
	for _, r := range o.replies {
		var vote string
		var i int
		if err := r.Args.Bind(&vote, &i); err != nil || vote != "yes" || r.From != sockets[i].ID() {
			t.Fatalf("reply %+v: %v", r, err)
		}
	}

	// Everybody answers: no error, well before the timeout.
	go func() {
		r, err := srv.To(sockets[0].ID(), sockets[1].ID()).EmitWithAck(ctx, "vote", "q2")
		res <- out{r, err}
	}()
	for _, c := range clients[:2] {
		id := strings.TrimSuffix(c.expectPrefix("2"), `["vote","q2"]`)
		c.send("3" + id + `[]`)
	}
	if o := recv(t, res); o.err != nil || len(o.replies) != 2 {
		t.Fatalf("all replied: %+v %v", o.replies, o.err)
	}
}

func TestFetchSockets(t *testing.T) {
	srv, url := newTestServer(t, nil)
	clients, sockets := clientGroup(t, srv, url, 3)
	ctx := context.Background()
	sockets[0].Join("vip")
	if err := sockets[0].SetData(map[string]any{"name": "alice"}); err != nil {
		t.Fatal(err)
	}
	if err := sockets[1].SetData(make(chan int)); err == nil {
		t.Fatal("SetData of a channel succeeded")
	}
	all, err := srv.Of("/").FetchSockets(ctx)
	if err != nil || len(all) != 3 {
		t.Fatalf("FetchSockets = %d, %v", len(all), err)
	}
	if again, err := srv.FetchSockets(ctx); err != nil || len(again) != 3 {
		t.Fatalf("Server.FetchSockets = %d, %v", len(again), err)
	}
	vip, err := srv.To("vip").FetchSockets(ctx)
	if err != nil || len(vip) != 1 {
		t.Fatalf("FetchSockets(vip) = %d, %v", len(vip), err)
	}
	r := vip[0]
	var data struct{ Name string }
	if r.ID != sockets[0].ID() || !slices.Equal(r.Rooms, sorted(r.ID, "vip")) || r.BindData(&data) != nil || data.Name != "alice" ||
		!slices.Equal(r.Handshake.Query["EIO"], []string{"4"}) {
		t.Fatalf("remote socket = %+v", r)
	}
	if err := r.Emit(ctx, "hello", "you"); err != nil {
		t.Fatal(err)
	}
	clients[0].expect(`2["hello","you"]`)
	if err := r.Join(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := r.Leave(ctx, "vip"); err != nil {
		t.Fatal(err)
	}
	if got := sockets[0].Rooms(); !slices.Equal(got, sorted(r.ID, "x")) {
		t.Fatalf("rooms after remote join/leave = %q", got)
	}
	go func() {
		id := strings.TrimSuffix(clients[0].expectPrefix("2"), `["ping"]`)
		clients[0].send("3" + id + `["pong"]`)
	}()
	args, err := r.EmitWithAck(ctx, "ping")
	var pong string
	if err != nil || args.Bind(&pong) != nil || pong != "pong" {
		t.Fatalf("remote EmitWithAck = %q, %v", args, err)
	}
	reason := make(chan string, 1)
	sockets[0].OnDisconnect(func(r string) { reason <- r })
	if err := r.Disconnect(ctx, false); err != nil {
		t.Fatal(err)
	}
	clients[0].expect("1")
	if got := recv(t, reason); got != ReasonServerNamespaceDisconnect {
		t.Fatalf("reason = %q", got)
	}
	if err := srv.Of("/").DisconnectSockets(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients[1:] {
		c.expect("1")
		c.waitClosed()
	}
}

func TestDisconnectReasons(t *testing.T) {
	tests := []struct {
		name   string
		opts   *Options
		act    func(c *testClient, s *Socket)
		reason string
		closed bool // the connection is closed afterwards
	}{
		{"client namespace disconnect", nil, func(c *testClient, s *Socket) { c.send("1") }, ReasonClientNamespaceDisconnect, false},
		{"server namespace disconnect", nil, func(c *testClient, s *Socket) {
			s.Disconnect(false)
			c.expect("1")
		}, ReasonServerNamespaceDisconnect, false},
		{"server disconnect and close", nil, func(c *testClient, s *Socket) {
			s.Disconnect(true)
			c.expect("1")
		}, ReasonServerNamespaceDisconnect, true},
		{"transport close", nil, func(c *testClient, s *Socket) { c.sendRaw("1") }, ReasonTransportClose, true},
		{"parse error", nil, func(c *testClient, s *Socket) { c.send(`2{}`) }, ReasonParseError, true},
		{"ping timeout", &Options{Options: engineio.Options{PingInterval: 250 * time.Millisecond, PingTimeout: 250 * time.Millisecond}},
			func(c *testClient, s *Socket) { c.noPong.Store(true) }, ReasonPingTimeout, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, url := newTestServer(t, tt.opts)
			reasons := make(chan string, 2)
			sockets := make(chan *Socket, 1)
			srv.OnConnection(func(s *Socket) {
				s.OnDisconnect(func(r string) {
					if len(s.Rooms()) != 0 {
						t.Errorf("rooms in OnDisconnect: %q", s.Rooms())
					}
					reasons <- r
				})
				sockets <- s
			})
			c := dial(t, url, "websocket")
			c.connect("/", "")
			s := recv(t, sockets)
			tt.act(c, s)
			if got := recv(t, reasons); got != tt.reason {
				t.Fatalf("reason = %q, want %q", got, tt.reason)
			}
			if s.Connected() || len(srv.Of("/").Sockets()) != 0 {
				t.Fatal("socket still connected")
			}
			late := make(chan string, 1)
			s.OnDisconnect(func(r string) { late <- r })
			if got := recv(t, late); got != tt.reason {
				t.Fatalf("late OnDisconnect reason = %q", got)
			}
			if tt.closed {
				c.waitClosed()
			} else {
				// The connection stays and can join again.
				c.connect("/", "")
			}
		})
	}
}

func TestShutdownReason(t *testing.T) {
	srv := NewServer(nil)
	hs := newHTTPTest(t, srv)
	reasons := make(chan string, 1)
	srv.OnConnection(func(s *Socket) { s.OnDisconnect(func(r string) { reasons <- r }) })
	c := dial(t, hs+"/socket.io/", "websocket")
	c.connect("/", "")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, reasons); got != ReasonServerShutdown {
		t.Fatalf("reason = %q", got)
	}
	c.waitClosed()
	if err := srv.Of("/").Emit(ctx, "x"); !errors.Is(err, adapter.ErrClosed) {
		t.Fatalf("emit after shutdown: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close after Shutdown: %v", err)
	}
}

func TestMalformedPackets(t *testing.T) {
	srv, url := newTestServer(t, &Options{MaxAttachments: 2})
	srv.OnConnection(func(s *Socket) { s.On("x", func(*Event) {}) })
	bad := []struct {
		name string
		send func(c *testClient)
	}{
		{"unknown type", func(c *testClient) { c.send("abc") }},
		{"unknown type digit", func(c *testClient) { c.send("9") }},
		{"payload not an array", func(c *testClient) { c.send(`2{}`) }},
		{"first element not a string", func(c *testClient) { c.send(`2[{}]`) }},
		{"empty event", func(c *testClient) { c.send(`2[]`) }},
		{"reserved event", func(c *testClient) { c.send(`2["disconnect"]`) }},
		{"bad ack id", func(c *testClient) { c.send(`2abc["x",1]`) }},
		{"bad json", func(c *testClient) { c.send(`2["x",`) }},
		{"binary without packet", func(c *testClient) { c.send("0"); c.sendBinary([]byte{1}) }},
		{"text while waiting for attachments", func(c *testClient) { c.send(`51-["x",{"_placeholder":true,"num":0}]`); c.send(`2["x"]`) }},
		{"too many attachments", func(c *testClient) { c.send(`53-["x"]`) }},
		{"placeholder out of range", func(c *testClient) {
			c.send(`51-["x",{"_placeholder":true,"num":3}]`, []byte{1})
		}},
		{"connect payload not an object", func(c *testClient) { c.send(`0[]`) }},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, url, "websocket")
			if tt.name != "binary without packet" {
				c.connect("/", "")
			}
			tt.send(c)
			c.waitClosed()
		})
	}
}

func TestConnectTimeout(t *testing.T) {
	// The joined client has ConnectTimeout to handshake and connect, on a
	// possibly loaded machine; the idle one is closed once it passes.
	_, url := newTestServer(t, &Options{ConnectTimeout: 3 * time.Second})
	joined := dial(t, url, "polling")
	joined.connect("/", "")
	idle := dial(t, url, "websocket")
	select {
	case <-idle.closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the connection that never joined a namespace is still open")
	}
	// The connection that joined a namespace stays open past the timeout.
	joined.send(`2["ping"]`)
	joined.expectNothing(300 * time.Millisecond)
	select {
	case <-joined.closed:
		t.Fatal("joined connection closed")
	default:
	}
}

func TestServerSideEmitHandler(t *testing.T) {
	srv, _ := newTestServer(t, nil)
	nsp := srv.Of("/")
	got := make(chan string, 1)
	nsp.OnServerSideEmit("sum", func(e *Event) {
		var a, b int
		if err := e.Bind(&a, &b); err != nil {
			t.Errorf("bind: %v", err)
		}
		if e.Socket() != nil {
			t.Error("server-side event has a socket")
		}
		if err := e.Ack(a + b); err != nil {
			t.Errorf("ack: %v", err)
		}
	})
	// An adapter delivers server-side events of other nodes through the
	// adapter.Namespace interface.
	var an adapter.Namespace = nsp.forAdapter()
	an.HandleServerSideEmit("sum", []json.RawMessage{json.RawMessage("2"), json.RawMessage("40")}, func(args []json.RawMessage) {
		got <- string(args[0])
	})
	if r := recv(t, got); r != "42" {
		t.Fatalf("reply = %q", r)
	}
	an.HandleServerSideEmit("unknown", nil, nil)
	// With the in-memory adapter there is no other node to reply.
	ctx := context.Background()
	if err := nsp.ServerSideEmit(ctx, "sum", 1, 2); err != nil {
		t.Fatal(err)
	}
	replies, err := nsp.ServerSideEmitWithAck(ctx, "sum", 1, 2)
	if err != nil || len(replies) != 0 {
		t.Fatalf("ServerSideEmitWithAck = %+v, %v", replies, err)
	}
	if err := nsp.ServerSideEmit(ctx, "connect"); !errors.Is(err, ErrReservedEvent) {
		t.Fatalf("reserved: %v", err)
	}
}

func TestAdapterFactoryError(t *testing.T) {
	boom := errors.New("boom")
	srv, url := newTestServer(t, &Options{Adapter: func(nsp adapter.Namespace) (adapter.Adapter, error) {
		if nsp.Name() == "/broken" {
			return nil, boom
		}
		return adapter.NewMemory(nsp)
	}})
	n := srv.Of("/broken")
	if !errors.Is(n.Err(), boom) || !errors.Is(n.Err(), ErrAdapter) {
		t.Fatalf("Err = %v", n.Err())
	}
	if err := n.Emit(context.Background(), "x"); !errors.Is(err, boom) {
		t.Fatalf("Emit = %v", err)
	}
	c := dial(t, url, "websocket")
	c.send("0/broken,")
	c.expect(`4/broken,{"message":"Namespace unavailable"}`)
}

// recordingAdapter is the in-memory adapter that also records the options of
// every broadcast, to check what the operator hands to an adapter.
type recordingAdapter struct {
	adapter.Adapter
	mu   sync.Mutex
	opts []adapter.Options
}

func (r *recordingAdapter) Broadcast(ctx context.Context, p *parser.Packet, opts adapter.Options) error {
	r.mu.Lock()
	r.opts = append(r.opts, opts)
	r.mu.Unlock()
	return r.Adapter.Broadcast(ctx, p, opts)
}

func TestOperatorOptions(t *testing.T) {
	var rec *recordingAdapter
	srv, url := newTestServer(t, &Options{Adapter: func(nsp adapter.Namespace) (adapter.Adapter, error) {
		m, err := adapter.NewMemory(nsp)
		if err != nil {
			return nil, err
		}
		rec = &recordingAdapter{Adapter: m}
		return rec, nil
	}})
	clients, sockets := clientGroup(t, srv, url, 1)
	ctx := context.Background()
	if err := sockets[0].To("a", "b").Except("c").Local().Volatile().Compress(false).Emit(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Of("/").Emit(ctx, "y", []byte{1}); err != nil {
		t.Fatal(err)
	}
	clients[0].expect(`51-["y",{"_placeholder":true,"num":0}]`)
	clients[0].expectBinary([]byte{1})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []adapter.Options{
		{Rooms: []string{"a", "b"}, Except: []string{sockets[0].ID(), "c"}, Local: true, Volatile: true, NoCompress: true},
		{},
	}
	if diff := cmp.Diff(want, rec.opts, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("adapter options (-want +got):\n%s", diff)
	}
}

func TestCloseIdempotent(t *testing.T) {
	srv := NewServer(nil)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	reasons := make(chan string, 1)
	srv.OnConnection(func(s *Socket) { s.OnDisconnect(func(r string) { reasons <- r }) })
	c := dial(t, hs.URL+"/socket.io/", "websocket")
	c.connect("/", "")
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if r := recv(t, reasons); r == "" {
		t.Fatal("empty reason")
	}
	c.waitClosed()
	got := make(chan bool, 1)
	srv.Of("/").OnServerSideEmit("late", func(*Event) { got <- true })
	srv.Of("/").forAdapter().HandleServerSideEmit("late", nil, nil)
	select {
	case <-got:
		t.Fatal("server-side event handled after Close")
	case <-time.After(50 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := srv.handlers.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestOnDisconnecting(t *testing.T) {
	srv, url := newTestServer(t, nil)
	type seen struct {
		what  string
		rooms []string
	}
	events := make(chan seen, 4)
	srv.OnConnection(func(s *Socket) {
		s.Join("room")
		s.OnDisconnecting(func(r string) { events <- seen{"disconnecting " + r, s.Rooms()} })
		s.OnDisconnect(func(r string) { events <- seen{"disconnect " + r, s.Rooms()} })
	})
	c := dial(t, url, "polling")
	id := c.connect("/", "")
	c.send("1")
	first, second := recv(t, events), recv(t, events)
	if first.what != "disconnecting client namespace disconnect" || !slices.Equal(first.rooms, sorted(id, "room")) {
		t.Fatalf("first = %+v", first)
	}
	if second.what != "disconnect client namespace disconnect" || len(second.rooms) != 0 {
		t.Fatalf("second = %+v", second)
	}
}

func TestDynamicChildMiddleware(t *testing.T) {
	srv, url := newTestServer(t, nil)
	parent := srv.OfRegexp(regexp.MustCompile(`^/org-`))
	var mu sync.Mutex
	var order []string
	parent.Use(func(ctx context.Context, s *Socket) error {
		mu.Lock()
		order = append(order, "parent "+s.Namespace().Name())
		mu.Unlock()
		return nil
	})
	c := dial(t, url, "websocket")
	c.connect("/org-a", "")
	srv.Of("/org-a").Use(func(ctx context.Context, s *Socket) error {
		mu.Lock()
		order = append(order, "child")
		mu.Unlock()
		return errors.New("child says no")
	})
	c2 := dial(t, url, "websocket")
	c2.send("0/org-a,")
	c2.expect(`4/org-a,{"message":"child says no"}`)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, []string{"parent /org-a", "parent /org-a", "child"}) {
		t.Fatalf("order = %q", order)
	}
}

// TestBindErrors: what Bind says when the arguments do not fit, so that a
// handler can tell a client's mistake from its own with errors.Is.
func TestBindErrors(t *testing.T) {
	e := &Event{Name: "e", Args: []json.RawMessage{json.RawMessage(`"text"`)}}
	var n int
	if err := e.Bind(&n); !errors.Is(err, ErrBadArgument) {
		t.Errorf("Bind of a string into an int: %v, want ErrBadArgument", err)
	}
	var s, more string
	if err := e.Bind(&s, &more); !errors.Is(err, ErrMissingArgument) || s != "text" {
		t.Errorf("Bind of one argument into two: %v (%q), want ErrMissingArgument", err, s)
	}
	var data struct{}
	if err := (&RemoteSocket{}).BindData(&data); !errors.Is(err, ErrMissingArgument) {
		t.Errorf("BindData without data: %v, want ErrMissingArgument", err)
	}
}
