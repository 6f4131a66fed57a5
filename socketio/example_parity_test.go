package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/socketio"
)

type userKey struct{}

// HTTP middleware in front of the server authenticates the handshake request
// and puts the user in its context; connect middleware, event listeners and
// the socket's Request see it.
func ExampleSocket_Context() {
	srv := socketio.NewServer(nil)
	srv.Use(func(ctx context.Context, s *socketio.Socket) error {
		if ctx.Value(userKey{}) == nil {
			return errors.New("not signed in")
		}
		return nil
	})
	srv.OnConnection(func(s *socketio.Socket) {
		s.On("whoami", func(e *socketio.Event) {
			_ = e.Ack(e.Context().Value(userKey{}), s.Request().Header.Get("X-Session"))
		})
	})
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A real application checks a cookie or a JWT here.
		ctx := context.WithValue(r.Context(), userKey{}, "alice")
		srv.ServeHTTP(w, r.WithContext(ctx))
	})
	hs := httptest.NewServer(auth)
	defer hs.Close()
	defer shutdown(srv)

	c := dialRawHeader(hs.URL, http.Header{"X-Session": {"s-42"}})
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40`)
	c.read() // CONNECT answer
	c.send(`421["whoami"]`)
	fmt.Println(c.read())
	// Output:
	// 431["alice","s-42"]
}

// A per-event middleware refuses events the user may not send; a client
// that asked for an ack gets the error as its answer.
func ExampleSocket_Use() {
	srv := socketio.NewServer(nil)
	srv.OnConnection(func(s *socketio.Socket) {
		s.Use(func(e *socketio.Event) error {
			if strings.HasPrefix(e.Name, "admin:") {
				return errors.New("unauthorized event")
			}
			return nil
		})
		s.OnError(func(err error) { fmt.Println("refused:", err) })
		s.On("admin:ban", func(e *socketio.Event) { _ = e.Ack("banned") })
	})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer shutdown(srv)

	c := dialRaw(hs.URL)
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40`)
	c.read()
	c.send(`421["admin:ban","bob"]`)
	fmt.Println(c.read())
	// Output:
	// refused: unauthorized event
	// 431[{"message":"unauthorized event"}]
}

// Several listeners of one event all run; the function On returns removes
// one, Off removes all. OnAnyOutgoing sees what is sent to the client.
func ExampleSocket_On() {
	srv := socketio.NewServer(nil)
	done := make(chan struct{})
	srv.OnConnection(func(s *socketio.Socket) {
		s.On("chat", func(e *socketio.Event) { fmt.Println("store") })
		stopAudit := s.On("chat", func(e *socketio.Event) { fmt.Println("audit") })
		s.OnAnyOutgoing(func(e *socketio.Event) { fmt.Println("sent", e.Name) })
		s.On("quiet", func(e *socketio.Event) {
			stopAudit()
			_ = s.Emit("ok")
		})
		s.On("bye", func(e *socketio.Event) { close(done) })
	})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer shutdown(srv)

	c := dialRaw(hs.URL)
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40`)
	c.read()
	c.send(`42["chat","hi"]`)
	c.send(`42["quiet"]`)
	c.read() // "ok"
	c.send(`42["chat","again"]`)
	c.send(`42["bye"]`)
	<-done
	// Output:
	// store
	// audit
	// sent ok
	// store
}

// Rooms joined in connect middleware are the socket's when it connects.
func ExampleSocket_Join() {
	srv := socketio.NewServer(nil)
	srv.Use(func(ctx context.Context, s *socketio.Socket) error {
		s.Join("team-blue") // for example from a claim of the user's token
		return nil
	})
	connected := make(chan *socketio.Socket, 1)
	srv.OnConnection(func(s *socketio.Socket) { connected <- s })
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer shutdown(srv)

	c := dialRaw(hs.URL)
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40`)
	c.read()
	<-connected
	_ = srv.To("team-blue").Emit(context.Background(), "news", "blue wins")
	fmt.Println(c.read())
	fmt.Println(srv.Of("/").LocalRooms())
	// Output:
	// 42["news","blue wins"]
	// [team-blue]
}

// An event whose handler waits on something slow runs on goroutines of its
// own, at most 4 at once per socket, so the socket's other events are not
// held up behind it.
func ExampleConcurrent() {
	srv := socketio.NewServer(nil)
	srv.OnConnection(func(s *socketio.Socket) {
		pinged := make(chan struct{})
		s.On("report", func(e *socketio.Event) {
			<-pinged // a slow query, which here ends only once "ping" was handled
			_ = e.Ack("report ready")
		}, socketio.Concurrent(4))
		s.On("ping", func(e *socketio.Event) {
			_ = e.Ack("pong")
			close(pinged)
		})
	})
	// The events of every socket of a namespace may run concurrently too:
	srv.Of("/batch").SetConcurrency(8)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer shutdown(srv)

	c := dialRaw(hs.URL)
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40`)
	c.read()
	c.send(`421["report"]`)
	c.send(`422["ping"]`)
	fmt.Println(c.read()) // the ping is answered first
	fmt.Println(c.read())
	// Output:
	// 432["pong"]
	// 431["report ready"]
}

// Room life-cycle listeners see rooms come and go on this server.
func ExampleNamespace_OnCreateRoom() {
	srv := socketio.NewServer(nil)
	nsp := srv.Of("/")
	events := make(chan string, 8)
	nsp.OnCreateRoom(func(room string) {
		if room == "game-1" {
			events <- "created " + room
		}
	})
	nsp.OnDeleteRoom(func(room string) {
		if room == "game-1" {
			events <- "deleted " + room
		}
	})
	srv.OnConnection(func(s *socketio.Socket) {
		s.Join("game-1")
		s.Leave("game-1")
	})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer shutdown(srv)

	c := dialRaw(hs.URL)
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40`)
	c.read()
	fmt.Println(<-events)
	fmt.Println(<-events)
	// Output:
	// created game-1
	// deleted game-1
}

// Compress(false) sends an event without per-message compression, for data
// that does not compress (already compressed images, random tokens).
func ExampleSocket_Compress() {
	srv := socketio.NewServer(nil)
	srv.OnConnection(func(s *socketio.Socket) {
		_ = s.Compress(false).Emit("thumbnail", []byte{0xff, 0xd8, 0xff})
		_ = srv.Compress(false).Emit(context.Background(), "noise", "x7Gq")
	})
	shutdown(srv)
	// Output:
}

func dialRawHeader(url string, h http.Header) rawConn {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1)+"/socket.io/?EIO=4&transport=websocket",
		&websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		panic(err)
	}
	r := rawConn{c}
	r.read() // Engine.IO open packet
	return r
}

// OnNewNamespace sees every namespace made after it. This server also lets
// Socket.IO 2.x clients in (AllowEIO3: Engine.IO v3, common in older mobile
// apps): they are in the main namespace at once, their socket id is their
// connection's, and other namespaces get their query as auth.
func ExampleServer_OnNewNamespace() {
	srv := socketio.NewServer(&socketio.Options{Options: engineio.Options{AllowEIO3: true}})
	srv.OnNewNamespace(func(n *socketio.Namespace) {
		fmt.Println("new namespace", n.Name())
	})
	srv.Of("/admin")
	srv.OnConnection(func(s *socketio.Socket) {})
	shutdown(srv)
	// Output:
	// new namespace /admin
}

// Binary in a client's acknowledgement stays binary.
func ExampleArgs_Bind() {
	srv := socketio.NewServer(nil)
	got := make(chan []byte, 1)
	srv.OnConnection(func(s *socketio.Socket) {
		go func() {
			args, err := s.EmitWithAck(context.Background(), "thumbnail?")
			var img []byte
			if err == nil && args.Bind(&img) == nil {
				got <- img
			}
		}()
	})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer shutdown(srv)

	c := dialRaw(hs.URL)
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40`)
	c.read()
	id := strings.TrimSuffix(strings.TrimPrefix(c.read(), "42"), `["thumbnail?"]`)
	c.send(`461-` + id + `[{"_placeholder":true,"num":0}]`) // BINARY_ACK with one attachment
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Write(ctx, websocket.MessageBinary, []byte{0x89, 'P', 'N', 'G'})
	fmt.Printf("%q\n", <-got)
	// Output:
	// "\x89PNG"
}
