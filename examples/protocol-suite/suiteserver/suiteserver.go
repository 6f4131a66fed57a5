package suiteserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/socketio"
)

// Settings the official suites hard-code.
const (
	PingInterval   = 300 * time.Millisecond
	PingTimeout    = 200 * time.Millisecond
	MaxPayload     = 1_000_000
	ConnectTimeout = 1000 * time.Millisecond
)

// Server serves both suites. Create it with New; stop it with Shutdown or Close.
type Server struct {
	mux    *http.ServeMux
	engine *engineio.Server
	io     *socketio.Server
	log    *slog.Logger
}

// New returns a Server ready to be mounted at the root of an http.Server. log
// receives the errors of emits to clients that went away; nil discards them.
func New(log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{mux: http.NewServeMux(), log: log}
	engineOpts := engineio.Options{
		PingInterval: PingInterval,
		PingTimeout:  PingTimeout,
		MaxPayload:   MaxPayload,
		CORS:         &engineio.CORSOptions{Origins: []string{"*"}},
	}
	s.engine = engineio.NewServer(echo{}, &engineOpts)
	s.mux.Handle("/engine.io/", s.engine)

	s.io = socketio.NewServer(&socketio.Options{
		Options:        engineOpts,
		ConnectTimeout: ConnectTimeout,
	})
	s.io.OnConnection(func(sock *socketio.Socket) {
		s.emit(sock, "auth", authOf(sock))
		sock.On("message", func(e *socketio.Event) {
			s.emit(sock, "message-back", e.Values()...)
		})
		sock.On("message-with-ack", func(e *socketio.Event) {
			if err := e.Ack(e.Values()...); err != nil {
				s.log.Debug("ack failed", "socket", sock.ID(), "err", err)
			}
		})
	})
	s.io.Of("/custom").OnConnection(func(sock *socketio.Socket) {
		s.emit(sock, "auth", authOf(sock))
	})
	s.mux.Handle("/socket.io/", s.io)
	return s
}

// authOf returns the auth object the client sent in its CONNECT packet, {} when it
// sent none.
func authOf(sock *socketio.Socket) json.RawMessage {
	if auth := sock.Handshake().Auth; len(auth) > 0 {
		return auth
	}
	return json.RawMessage("{}")
}

// emit sends an event; a failure only means the client is gone.
func (s *Server) emit(sock *socketio.Socket, event string, args ...any) {
	if err := sock.Emit(event, args...); err != nil {
		s.log.Debug("emit failed", "socket", sock.ID(), "event", event, "err", err)
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Shutdown closes every session and waits for them to end, or returns ctx.Err()
// when ctx ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	return errors.Join(s.io.Shutdown(ctx), s.engine.Shutdown(ctx))
}

// Close closes every session at once. It is idempotent.
func (s *Server) Close() error {
	return errors.Join(s.io.Close(), s.engine.Close())
}

// echo is the Engine.IO handler of the engine.io suite: every message goes back to
// the session that sent it, with its type (text or binary) kept.
type echo struct{}

func (echo) OnOpen(*engineio.Session) {}

func (echo) OnMessage(s *engineio.Session, m engineio.Message) {
	// The message is queued for writing after OnMessage returns, so it gets its own
	// copy of the bytes.
	reply := engineio.Message{Data: append([]byte(nil), m.Data...), Binary: m.Binary}
	// An error means the session is closed or was closed for a full queue: the
	// session's end is reported through OnClose, there is nobody left to tell.
	_ = s.Send(reply)
}

func (echo) OnClose(*engineio.Session, string) {}
