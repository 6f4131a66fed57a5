package interop

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/socketio"
)

// contract is the Socket.IO server the client scripts (js/*.mjs, py/client.py)
// talk to; each script's header comment lists the part of it that it uses.
type contract struct {
	srv *socketio.Server
	mux *http.ServeMux

	mu   sync.Mutex
	errs []error // handler failures, reported by check
}

// newContract builds the server with its handlers; opts may be nil.
func newContract(opts *socketio.Options) *contract {
	c := &contract{srv: socketio.NewServer(opts), mux: http.NewServeMux()}
	c.mux.Handle("/socket.io/", c.srv)

	main := c.srv.Of("/")
	main.OnConnection(func(s *socketio.Socket) {
		c.emit(s, "welcome", "/")
		c.emit(s, "bin-hello", "bytes", byteRange(0, 256, 1), byteRange(255, -1, -1))

		s.On("echo", func(e *socketio.Event) { c.ack(e, e.Values()...) })
		s.On("message", func(e *socketio.Event) { c.emit(s, "message-back", e.Values()...) })
		s.On("whoami", func(e *socketio.Event) { c.ack(e, "/", s.ID()) })
		s.On("sum", func(e *socketio.Event) {
			var sum float64
			for i, a := range e.Args {
				var n float64
				if err := json.Unmarshal(a, &n); err != nil {
					c.fail(fmt.Errorf("sum: argument %d %s: %w", i, a, err))
					return
				}
				sum += n
			}
			c.ack(e, sum)
		})
		s.On("bin", func(e *socketio.Event) {
			c.emit(s, "bin-back", e.Values()...)
			c.ack(e, e.Values()...)
		})
		s.On("bin-nested", func(e *socketio.Event) {
			var v struct {
				Label string `json:"label"`
				Data  []byte `json:"data"`
				Inner struct {
					Blob []byte `json:"blob"`
				} `json:"inner"`
			}
			if err := e.Bind(&v); err != nil {
				c.fail(fmt.Errorf("bin-nested: %w", err))
				return
			}
			sum := sha256.Sum256(v.Data)
			c.ack(e, v.Label, len(v.Data), hex.EncodeToString(sum[:]), v.Inner.Blob)
		})
		s.On("ask-me", func(e *socketio.Event) {
			var text string
			if err := e.Bind(&text); err != nil {
				c.fail(fmt.Errorf("ask-me: %w", err))
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			reply, err := s.EmitWithAck(ctx, "question", map[string]string{"text": text})
			if err != nil {
				c.fail(fmt.Errorf("ask-me: question: %w", err))
				return
			}
			c.ack(e, reply.Values()...)
		})
		s.On("ask-me-silent", func(e *socketio.Event) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := s.EmitWithAck(ctx, "silent-question")
			switch {
			case errors.Is(err, socketio.ErrAckTimeout):
				c.ack(e, "timeout")
			case err != nil:
				c.fail(fmt.Errorf("ask-me-silent: want ErrAckTimeout, got %w", err))
			default:
				c.ack(e, "answered")
			}
		})
		s.On("join", func(e *socketio.Event) {
			var room string
			if err := e.Bind(&room); err != nil {
				c.fail(fmt.Errorf("join: %w", err))
				return
			}
			s.Join(room)
			c.ack(e, "joined")
		})
		s.On("leave", func(e *socketio.Event) {
			var room string
			if err := e.Bind(&room); err != nil {
				c.fail(fmt.Errorf("leave: %w", err))
				return
			}
			s.Leave(room)
			c.ack(e, "left")
		})
		s.On("to-room", func(e *socketio.Event) {
			var room, text string
			if err := e.Bind(&room, &text); err != nil {
				c.fail(fmt.Errorf("to-room: %w", err))
				return
			}
			if err := main.To(room).Emit(context.Background(), "news", text); err != nil {
				c.fail(fmt.Errorf("to-room: %w", err))
			}
			c.ack(e, "sent")
		})
		s.On("to-all", func(e *socketio.Event) {
			var text string
			if err := e.Bind(&text); err != nil {
				c.fail(fmt.Errorf("to-all: %w", err))
				return
			}
			if err := main.Emit(context.Background(), "news-all", text); err != nil {
				c.fail(fmt.Errorf("to-all: %w", err))
			}
			c.ack(e, "sent")
		})
		s.On("poll-room", func(e *socketio.Event) {
			var room string
			if err := e.Bind(&room); err != nil {
				c.fail(fmt.Errorf("poll-room: %w", err))
				return
			}
			replies, err := main.To(room).Timeout(5*time.Second).EmitWithAck(context.Background(), "vote")
			if err != nil {
				c.fail(fmt.Errorf("poll-room: %w", err))
			}
			votes := []string{}
			for _, r := range replies {
				var v string
				if err := r.Args.Bind(&v); err != nil {
					c.fail(fmt.Errorf("poll-room: reply of %s: %w", r.From, err))
					continue
				}
				votes = append(votes, v)
			}
			slices.Sort(votes)
			c.ack(e, votes)
		})
	})

	chat := c.srv.Of("/chat")
	chat.OnConnection(func(s *socketio.Socket) {
		c.emit(s, "welcome", "/chat")
		s.On("whoami", func(e *socketio.Event) { c.ack(e, "/chat", s.ID()) })
	})

	secure := c.srv.Of("/secure")
	secure.Use(func(_ context.Context, s *socketio.Socket) error {
		var auth struct {
			Token string `json:"token"`
		}
		if a := s.Handshake().Auth; len(a) > 0 {
			if err := json.Unmarshal(a, &auth); err != nil {
				return &socketio.ConnectError{Message: "bad auth payload"}
			}
		}
		if auth.Token != "s3cret" {
			return &socketio.ConnectError{
				Message: "unauthorized",
				Data:    map[string]any{"code": 401, "reason": "bad token"},
			}
		}
		return nil
	})
	secure.OnConnection(func(s *socketio.Socket) {
		c.emit(s, "hello", s.Handshake().Auth)
	})
	return c
}

// start serves the contract on a new 127.0.0.1 port until the test ends and
// returns its URL.
func (c *contract) start(t *testing.T) string {
	t.Helper()
	url := startHTTP(t, c.mux, c.srv.Close)
	t.Cleanup(func() { c.check(t) })
	return url
}

func (c *contract) emit(s *socketio.Socket, event string, args ...any) {
	if err := s.Emit(event, args...); err != nil && !errors.Is(err, socketio.ErrDisconnected) {
		c.fail(fmt.Errorf("emit %q: %w", event, err))
	}
}

func (c *contract) ack(e *socketio.Event, args ...any) {
	if err := e.Ack(args...); err != nil && !errors.Is(err, socketio.ErrDisconnected) {
		c.fail(fmt.Errorf("ack of %q: %w", e.Name, err))
	}
}

func (c *contract) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, err)
}

// check reports the handler failures seen so far.
func (c *contract) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		t.Errorf("server handler: %v", err)
	}
	c.errs = nil
}

// byteRange returns the bytes from, from+step, ... up to but not including to.
func byteRange(from, to, step int) []byte {
	var b []byte
	for i := from; i != to; i += step {
		b = append(b, byte(i))
	}
	return b
}
