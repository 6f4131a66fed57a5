package socketio_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/socketio"
)

type ChatMessage struct {
	Room string `json:"room"`
	Text string `json:"text"`
}

func ExampleNewServer() {
	srv := socketio.NewServer(nil)
	srv.OnConnection(func(s *socketio.Socket) {
		s.On("chat", func(e *socketio.Event) {
			var m ChatMessage
			if err := e.Bind(&m); err != nil {
				_ = e.Ack(map[string]string{"error": err.Error()})
				return
			}
			s.Join(m.Room)
			_ = e.Ack("delivered to " + m.Room)
		})
	})
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	defer shutdown(srv)

	// What a Socket.IO client sends and receives on the wire.
	c := dialRaw(hs.URL)
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40`)                                           // CONNECT to "/"
	fmt.Println(strings.HasPrefix(c.read(), `40{"sid":"`)) // CONNECT answer
	c.send(`421["chat",{"room":"lobby","text":"hi"}]`)     // EVENT with ack id 1
	fmt.Println(c.read())                                  // ACK 1
	// Output:
	// true
	// 431["delivered to lobby"]
}

func ExampleSocket_EmitWithAck() {
	srv := socketio.NewServer(nil)
	answers := make(chan string, 1)
	srv.OnConnection(func(s *socketio.Socket) {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			args, err := s.EmitWithAck(ctx, "question", "6 x 7?")
			if err != nil {
				answers <- err.Error()
				return
			}
			var n int
			if err := args.Bind(&n); err != nil {
				answers <- err.Error()
				return
			}
			answers <- fmt.Sprint("answer: ", n)
		}()
	})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer shutdown(srv)

	c := dialRaw(hs.URL)
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40`)
	c.read()
	q := c.read() // 2<id>["question","6 x 7?"]
	id := strings.TrimSuffix(strings.TrimPrefix(q, "42"), `["question","6 x 7?"]`)
	c.send(`43` + id + `[42]`)
	fmt.Println(<-answers)
	// Output:
	// answer: 42
}

func ExampleServer_Use() {
	srv := socketio.NewServer(nil)
	srv.Use(func(ctx context.Context, s *socketio.Socket) error {
		var auth struct {
			Token string `json:"token"`
		}
		err := json.Unmarshal(s.Handshake().Auth, &auth)
		if err != nil || auth.Token != "secret" {
			return &socketio.ConnectError{Message: "not authorized", Data: map[string]string{"hint": "send a token"}}
		}
		return nil
	})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer shutdown(srv)

	c := dialRaw(hs.URL)
	defer c.Close(websocket.StatusNormalClosure, "")
	c.send(`40{"token":"guess"}`)
	fmt.Println(c.read())
	c.send(`40{"token":"secret"}`)
	fmt.Println(strings.HasPrefix(c.read(), `40{"sid":`))
	// Output:
	// 44{"message":"not authorized","data":{"hint":"send a token"}}
	// true
}

func ExampleNamespace_To() {
	srv := socketio.NewServer(nil)
	chat := srv.Of("/chat")
	chat.OnConnection(func(s *socketio.Socket) {
		s.On("join", func(e *socketio.Event) {
			var room string
			if err := e.Bind(&room); err != nil {
				return
			}
			s.Join(room)
			// To everybody in the room but the sender.
			if err := s.To(room).Emit(context.Background(), "joined", s.ID()); err != nil {
				log.Print(err)
			}
		})
	})
	// From anywhere in the program: to two rooms, except a third.
	ctx := context.Background()
	if err := chat.To("room1", "room2").Except("muted").Emit(ctx, "news", ChatMessage{Text: "hello"}); err != nil {
		log.Print(err)
	}
	// Volatile events may be dropped for clients that are not ready for them.
	if err := chat.Volatile().Emit(ctx, "tick", time.Now().Unix()); err != nil {
		log.Print(err)
	}
	shutdown(srv)
	// Output:
}

func ExampleBroadcastOperator_EmitWithAck() {
	srv := socketio.NewServer(nil)
	defer shutdown(srv)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	replies, err := srv.To("voters").EmitWithAck(ctx, "vote", "lunch?")
	var missing *adapter.MissingRepliesError
	if errors.As(err, &missing) {
		fmt.Printf("%d of %d answered\n", missing.Received, missing.Expected)
	}
	for _, r := range replies {
		var choice string
		if err := socketio.Args(r.Args).Bind(&choice); err == nil {
			fmt.Println(r.From, choice)
		}
	}
	fmt.Println(len(replies), err)
	// Output:
	// 0 <nil>
}

func ExampleNamespace_FetchSockets() {
	srv := socketio.NewServer(nil)
	defer shutdown(srv)
	ctx := context.Background()
	sockets, err := srv.To("admins").FetchSockets(ctx)
	if err != nil {
		log.Print(err)
		return
	}
	for _, s := range sockets {
		// Works wherever the socket is connected in the cluster.
		if err := s.Emit(ctx, "notice", "maintenance at noon"); err != nil {
			log.Print(err)
		}
	}
	fmt.Println(len(sockets))
	// Output:
	// 0
}

func shutdown(srv *socketio.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Print(err)
	}
}

// rawConn is a bare Engine.IO WebSocket connection, to show the wire format.
type rawConn struct{ *websocket.Conn }

func dialRaw(url string) rawConn {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1)+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		log.Fatal(err)
	}
	r := rawConn{c}
	r.read() // Engine.IO open packet
	return r
}

func (c rawConn) send(s string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		log.Fatal(err)
	}
}

func (c rawConn) read() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		log.Fatal(err)
	}
	return string(b)
}

func ExampleRecoveryOptions() {
	srv := socketio.NewServer(&socketio.Options{
		Recovery: &socketio.RecoveryOptions{MaxDisconnectionDuration: time.Minute},
	})
	srv.OnConnection(func(s *socketio.Socket) {
		if s.Recovered() {
			// Same id, rooms and data as before the break; missed events were sent.
			return
		}
		s.Join("news")
	})
	shutdown(srv)
	// Output:
}
