package engineio

import (
	"context"
	"net"
	"net/http"
	"time"
)

// requestValues returns what a session keeps of its handshake request's
// context: its values, without its cancellation.
//
// Behind a plain http.Server (no BaseContext, no ConnContext, no middleware
// that adds to the context) that context holds only net/http's two values,
// the server and the local address, but keeping it keeps net/http's
// per-connection and per-request cancel contexts and a done channel too,
// about 300 bytes per session. For that context the session keeps the two
// values alone. It is recognised by its description (the String of Go's
// context types names every layer, with its keys), compared with the one of
// a context built the same way from the same values: anything else in the
// chain — a value, a layer of another type, another base — makes them
// differ, and then the whole context is kept as it is.
func requestValues(ctx context.Context) context.Context {
	if v, ok := plainHTTPValues(ctx); ok {
		return v
	}
	return context.WithoutCancel(ctx)
}

func plainHTTPValues(ctx context.Context) (httpValues, bool) {
	srv, ok := ctx.Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return httpValues{}, false
	}
	local, ok := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return httpValues{}, false
	}
	// net/http's Server.Serve and conn.serve, as of Go 1.26.
	ref := context.WithValue(context.Background(), http.ServerContextKey, srv)
	ref = context.WithValue(ref, http.LocalAddrContextKey, local)
	ref, cancelConn := context.WithCancel(ref)
	ref, cancelRequest := context.WithCancel(ref)
	same := describe(ref) == describe(ctx)
	cancelRequest()
	cancelConn()
	if !same {
		return httpValues{}, false
	}
	return httpValues{srv: srv, local: local}, true
}

// describe returns the String of a context of Go's context package: the
// context it was derived from, then this layer with its key if any.
func describe(ctx context.Context) string {
	s, ok := ctx.(interface{ String() string })
	if !ok {
		return ""
	}
	return s.String()
}

// httpValues is a context with the values net/http puts in the context of
// every request it serves, and nothing else.
type httpValues struct {
	srv   *http.Server
	local net.Addr
}

func (httpValues) Deadline() (time.Time, bool) { return time.Time{}, false }
func (httpValues) Done() <-chan struct{}       { return nil }
func (httpValues) Err() error                  { return nil }

func (v httpValues) Value(key any) any {
	switch key {
	case http.ServerContextKey:
		return v.srv
	case http.LocalAddrContextKey:
		return v.local
	}
	return nil
}
