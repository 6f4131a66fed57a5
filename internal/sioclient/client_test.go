package sioclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/parser"
	"github.com/durasock/durasock/socketio"
)

const wait = 10 * time.Second

func newServer(t *testing.T, opts *socketio.Options, setup func(*socketio.Server)) string {
	t.Helper()
	srv := socketio.NewServer(opts)
	setup(srv)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return hs.URL + "/socket.io/"
}

func dial(t *testing.T, url string, opts *Options) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func recv(t *testing.T, c *Client) Event {
	t.Helper()
	select {
	case e, ok := <-c.Events():
		if !ok {
			t.Fatalf("events closed: %v", c.Err())
		}
		return e
	case <-time.After(wait):
		t.Fatal("no event")
	}
	return Event{}
}

func TestEventsAndAcks(t *testing.T) {
	url := newServer(t, nil, func(srv *socketio.Server) {
		srv.OnConnection(func(s *socketio.Socket) {
			if err := s.Emit("hello", map[string]string{"id": s.ID()}, 7); err != nil {
				t.Errorf("Emit: %v", err)
			}
			s.On("echo", func(e *socketio.Event) {
				vals := e.Values()
				if err := e.Ack(vals...); err != nil {
					t.Errorf("Ack: %v", err)
				}
			})
			s.On("relay", func(e *socketio.Event) {
				var text string
				if err := e.Bind(&text); err != nil {
					t.Errorf("Bind: %v", err)
				}
				if err := s.Emit("relayed", text); err != nil {
					t.Errorf("Emit: %v", err)
				}
			})
		})
	})
	c := dial(t, url, nil)
	if c.ID() == "" || c.EngineID() == "" || c.Namespace() != "/" {
		t.Fatalf("ids %q %q %q", c.ID(), c.EngineID(), c.Namespace())
	}
	e := recv(t, c)
	var hello struct{ ID string }
	var n int
	if err := e.Bind(&hello, &n); err != nil || e.Name != "hello" || hello.ID != c.ID() || n != 7 {
		t.Fatalf("hello = %q %+v %d %v", e.Name, hello, n, err)
	}
	if e.HasAck() {
		t.Fatal("hello has an ack")
	}

	ack, err := c.EmitWithAck(ctxT(t), "echo", "a\"b\\c\n", json.RawMessage(`{"k":[1,2]}`), 3)
	if err != nil {
		t.Fatalf("EmitWithAck: %v", err)
	}
	var s string
	var obj struct{ K []int }
	var i int
	if err := ack.Bind(&s, &obj, &i); err != nil || s != "a\"b\\c\n" || len(obj.K) != 2 || i != 3 {
		t.Fatalf("ack = %s: %q %+v %d %v", ack.Data, s, obj, i, err)
	}

	got := make(chan string, 1)
	if err := c.EmitAck(ctxT(t), "echo", func(a Ack, err error) {
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(a.Data)
	}, "x"); err != nil {
		t.Fatalf("EmitAck: %v", err)
	}
	select {
	case v := <-got:
		if v != `["x"]` {
			t.Fatalf("ack callback got %s", v)
		}
	case <-time.After(wait):
		t.Fatal("no ack callback")
	}

	if err := c.Emit(ctxT(t), "relay", "héllo"); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	e = recv(t, c)
	var text string
	if err := e.Bind(&text); err != nil || e.Name != "relayed" || text != "héllo" {
		t.Fatalf("relayed = %q %q %v", e.Name, text, err)
	}
	if c.PendingAcks() != 0 {
		t.Fatalf("PendingAcks = %d", c.PendingAcks())
	}
}

func TestServerAckAndBinary(t *testing.T) {
	replies := make(chan string, 1)
	url := newServer(t, nil, func(srv *socketio.Server) {
		srv.OnConnection(func(s *socketio.Socket) {
			s.On("bin", func(e *socketio.Event) {
				var label string
				var data []byte
				if err := e.Bind(&label, &data); err != nil {
					t.Errorf("Bind: %v", err)
					return
				}
				if err := s.Emit("bin-back", label, data); err != nil {
					t.Errorf("Emit: %v", err)
				}
			})
			s.On("ask-me", func(*socketio.Event) {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				args, err := s.EmitWithAck(ctx, "question", 41)
				if err != nil {
					replies <- "error: " + err.Error()
					return
				}
				var n int
				if err := args.Bind(&n); err != nil {
					replies <- "error: " + err.Error()
					return
				}
				replies <- strings.Repeat("x", n)
			})
		})
	})
	var onEvent sync.Mutex
	events := make(chan Event, 4)
	c := dial(t, url, &Options{OnEvent: func(e *Event) {
		onEvent.Lock()
		defer onEvent.Unlock()
		if e.Name == "question" {
			var n int
			if err := e.Bind(&n); err != nil {
				t.Errorf("Bind: %v", err)
			}
			cp := *e // an Event copied out of OnEvent may be acked later
			go func() {
				if err := cp.Ack(context.Background(), n+1); err != nil {
					t.Errorf("Ack: %v", err)
				}
			}()
			return
		}
		cp := *e
		cp.Data = bytes.Clone(e.Data)
		events <- cp
	}})
	if c.Events() != nil {
		t.Fatal("Events not nil with OnEvent")
	}
	payload := []byte{0, 1, 2, 255}
	if err := c.Emit(ctxT(t), "bin", "label", payload); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	select {
	case e := <-events:
		var label string
		var data []byte
		if err := e.Bind(&label, &data); err != nil || label != "label" || !bytes.Equal(data, payload) || len(e.Attachments) != 1 {
			t.Fatalf("bin-back: %s %q %v %v", e.Data, label, data, err)
		}
	case <-time.After(wait):
		t.Fatal("no bin-back")
	}
	if err := c.Emit(ctxT(t), "bin", json.RawMessage(`{"not":`)); !errors.Is(err, ErrInvalidArgument) || !errors.Is(err, parser.ErrInvalidArgument) {
		t.Fatalf("Emit with invalid JSON: %v, want ErrInvalidArgument (the parser's)", err)
	}
	if err := c.Emit(ctxT(t), "ask-me"); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	select {
	case r := <-replies:
		if r != strings.Repeat("x", 42) {
			t.Fatalf("server got %q", r)
		}
	case <-time.After(wait):
		t.Fatal("no reply")
	}
}

func TestNamespaceAuth(t *testing.T) {
	url := newServer(t, nil, func(srv *socketio.Server) {
		nsp := srv.Of("/admin")
		nsp.Use(func(_ context.Context, s *socketio.Socket) error {
			var auth struct{ Token string }
			if err := json.Unmarshal(s.Handshake().Auth, &auth); err != nil || auth.Token != "secret" {
				return &socketio.ConnectError{Message: "unauthorized", Data: map[string]int{"code": 401}}
			}
			return nil
		})
		nsp.OnConnection(func(s *socketio.Socket) {
			if err := s.Emit("welcome", s.Namespace().Name()); err != nil {
				t.Errorf("Emit: %v", err)
			}
		})
	})
	c := dial(t, url, &Options{Namespace: "/admin", Auth: map[string]string{"token": "secret"}})
	e := recv(t, c)
	var name string
	if err := e.Bind(&name); err != nil || name != "/admin" {
		t.Fatalf("welcome %q %v", name, err)
	}

	_, err := Dial(ctxT(t), url, &Options{Namespace: "/admin", Auth: json.RawMessage(`{"token":"wrong"}`)})
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Message != "unauthorized" || string(ce.Data) != `{"code":401}` {
		t.Fatalf("Dial with a wrong token: %v", err)
	}
	_, err = Dial(ctxT(t), url, &Options{Namespace: "/nowhere"})
	if !errors.As(err, &ce) || ce.Message != "Invalid namespace" {
		t.Fatalf("Dial to an unknown namespace: %v", err)
	}
	if _, err := Dial(ctxT(t), url, &Options{Auth: "not an object"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Dial with a string auth: %v", err)
	}
	if _, err := Dial(ctxT(t), "ftp://x/", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Dial ftp: %v", err)
	}
}

func TestServerDisconnectAndClose(t *testing.T) {
	url := newServer(t, nil, func(srv *socketio.Server) {
		srv.OnConnection(func(s *socketio.Socket) {
			s.On("kick", func(*socketio.Event) { s.Disconnect(false) })
			s.On("ignore", func(*socketio.Event) {})
		})
	})
	reasons := make(chan error, 1)
	c := dial(t, url, &Options{OnDisconnect: func(err error) { reasons <- err }, MaxPendingAcks: 2})
	ctx := ctxT(t)
	// The server never answers "ignore": the bound of pending acks holds.
	var timeouts atomic.Int32
	for range 2 {
		if err := c.EmitAck(ctx, "ignore", func(_ Ack, err error) {
			if errors.Is(err, ErrServerDisconnect) {
				timeouts.Add(1)
			}
		}); err != nil {
			t.Fatalf("EmitAck: %v", err)
		}
	}
	if err := c.EmitAck(ctx, "ignore", func(Ack, error) {}); !errors.Is(err, ErrTooManyAcks) {
		t.Fatalf("third EmitAck: %v", err)
	}
	if err := c.Emit(ctx, "kick"); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("not disconnected")
	}
	if err := <-reasons; !errors.Is(err, ErrServerDisconnect) || !errors.Is(c.Err(), ErrServerDisconnect) {
		t.Fatalf("reason %v, Err %v", err, c.Err())
	}
	if timeouts.Load() != 2 {
		t.Fatalf("%d pending acks failed, want 2", timeouts.Load())
	}
	if _, ok := <-c.Events(); ok {
		t.Fatal("Events not closed")
	}
	if err := c.Emit(ctx, "x"); err == nil {
		t.Fatal("Emit after disconnect succeeded")
	}

	c2 := dial(t, url, nil)
	if err := c2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c2.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !errors.Is(c2.Err(), ErrClosed) {
		t.Fatalf("Err after Close = %v", c2.Err())
	}
	if err := c2.Emit(ctx, "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Emit after Close = %v", err)
	}
	if _, err := c2.EmitWithAck(ctx, "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("EmitWithAck after Close = %v", err)
	}
}

func TestAckTimeoutAndContext(t *testing.T) {
	url := newServer(t, nil, func(srv *socketio.Server) {
		srv.OnConnection(func(s *socketio.Socket) { s.On("ignore", func(*socketio.Event) {}) })
	})
	c := dial(t, url, &Options{AckTimeout: 50 * time.Millisecond})
	got := make(chan error, 1)
	if err := c.EmitAck(ctxT(t), "ignore", func(_ Ack, err error) { got <- err }); err != nil {
		t.Fatalf("EmitAck: %v", err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, ErrAckTimeout) {
			t.Fatalf("callback error %v", err)
		}
	case <-time.After(wait):
		t.Fatal("callback not called")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.EmitWithAck(ctx, "ignore"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("EmitWithAck = %v", err)
	}
	if c.PendingAcks() != 0 {
		t.Fatalf("PendingAcks = %d", c.PendingAcks())
	}
}

// TestHeartbeat keeps a client connected over many short ping intervals: it must
// answer every ping.
func TestHeartbeat(t *testing.T) {
	url := newServer(t, &socketio.Options{Options: engineio.Options{
		// A timeout long enough for a loaded machine's stalls; the loop below
		// outlasts interval + timeout, so a client that never answers is closed
		// while it runs.
		PingInterval: 20 * time.Millisecond, PingTimeout: time.Second,
	}}, func(srv *socketio.Server) {
		srv.OnConnection(func(s *socketio.Socket) {
			s.On("ping-me", func(e *socketio.Event) {
				if err := e.Ack("pong"); err != nil {
					t.Errorf("Ack: %v", err)
				}
			})
		})
	})
	c := dial(t, url, nil)
	deadline := time.Now().Add(2 * time.Second) // 100 ping intervals, past interval + timeout
	for time.Now().Before(deadline) {
		if _, err := c.EmitWithAck(ctxT(t), "ping-me"); err != nil {
			t.Fatalf("EmitWithAck: %v", err)
		}
	}
	if err := c.Err(); err != nil {
		t.Fatalf("client stopped: %v", err)
	}
}

// TestPingTimeout: a server that announces a short heartbeat and then goes silent
// is left by the client.
func TestPingTimeout(t *testing.T) {
	var wg sync.WaitGroup
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		defer wg.Done()
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		if err := ws.Write(ctx, websocket.MessageText, []byte(`0{"sid":"e1","upgrades":[],"pingInterval":30,"pingTimeout":30,"maxPayload":1000}`)); err != nil {
			return
		}
		if _, _, err := ws.Read(ctx); err != nil { // CONNECT
			return
		}
		if err := ws.Write(ctx, websocket.MessageText, []byte(`40{"sid":"s1"}`)); err != nil {
			return
		}
		for { // silent from now on; read until the client leaves
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
		}
	}))
	defer func() { hs.Close(); wg.Wait() }()
	c := dial(t, hs.URL, nil)
	if c.ID() != "s1" {
		t.Fatalf("ID %q", c.ID())
	}
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("no ping timeout")
	}
	if !errors.Is(c.Err(), ErrPingTimeout) {
		t.Fatalf("Err = %v", c.Err())
	}
}

func TestDialContext(t *testing.T) {
	// A server that accepts and never sends the open packet: ctx ends Dial.
	var wg sync.WaitGroup
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		defer wg.Done()
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer func() { close(release); hs.Close(); wg.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, hs.URL+"/socket.io/", nil); err == nil {
		t.Fatal("Dial succeeded")
	}
}

func TestEndpointURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://h:1":            "ws://h:1/socket.io/?EIO=4&transport=websocket",
		"https://h/custom/":     "wss://h/custom/?EIO=4&transport=websocket",
		"ws://h/socket.io/?a=b": "ws://h/socket.io/?EIO=4&a=b&transport=websocket",
		"wss://h:2/":            "wss://h:2/socket.io/?EIO=4&transport=websocket",
	} {
		got, err := endpointURL(in)
		if err != nil || got != want {
			t.Errorf("endpointURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "h:1", "ftp://h/", "http:///x", "://"} {
		if _, err := endpointURL(in); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("endpointURL(%q) err = %v", in, err)
		}
	}
}
