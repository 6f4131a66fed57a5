package socketio

import (
	"context"
	"net/http"
	"time"
)

// Request returns the HTTP request that opened the client's connection (the
// Engine.IO handshake): headers with cookies, URL with query, RemoteAddr, TLS.
// Its context is the connection's (see Socket.Context), so values that HTTP
// middleware in front of the server stored in the request context are there.
// Each call builds a new copy of the request.
func (s *Socket) Request() *http.Request { return s.conn.t.Request() }

// Context returns the socket's context: it carries the values of the
// handshake request's context (what authentication middleware in front of
// the server stored there) and is cancelled when the socket disconnects. It
// costs no goroutine.
func (s *Socket) Context() context.Context { return socketContext{s} }

// socketContext is the context of a socket: the values of its connection's
// handshake request, the end of the socket.
type socketContext struct{ s *Socket }

func (c socketContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c socketContext) Done() <-chan struct{}       { return c.s.Done() }
func (c socketContext) Value(key any) any           { return c.s.conn.t.Context().Value(key) }
func (c socketContext) Err() error {
	select {
	case <-c.s.Done():
		return context.Canceled
	default:
		return nil
	}
}
