package interop

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/socketio"
)

// countingListener counts the bytes the server writes to every connection it
// accepts.
type countingListener struct {
	net.Listener
	written *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, written: l.written}, nil
}

type countingConn struct {
	net.Conn
	written *atomic.Int64
}

// Write counts b before it writes it: the client can read the bytes (and ask
// for the count) before the writing goroutine runs again after write(2), so a
// count taken after the write could miss them. A short write is taken back.
func (c countingConn) Write(b []byte) (int, error) {
	c.written.Add(int64(len(b)))
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n - len(b)))
	return n, err
}

// TestClientCompression runs js/compression.mjs: the official client gets a
// large event compressed by default (permessage-deflate, gzip of polling) and
// uncompressed after Compress(false), and decodes both.
func TestClientCompression(t *testing.T) {
	node := requireNode(t)
	srv := socketio.NewServer(&socketio.Options{Options: engineio.Options{PerMessageDeflate: true}})
	var written, mark atomic.Int64
	big := strings.Repeat("durasock compresses ", 5000) // 100 000 bytes
	errs := make(chan error, 8)
	report := func(err error) {
		if err != nil && !errors.Is(err, socketio.ErrDisconnected) {
			select {
			case errs <- err:
			default:
			}
		}
	}
	srv.OnConnection(func(s *socketio.Socket) {
		s.On("mark", func(e *socketio.Event) {
			mark.Store(written.Load())
			report(e.Ack())
		})
		s.On("send-big", func(e *socketio.Event) {
			var compress bool
			report(e.Bind(&compress))
			report(s.Compress(compress).Emit("big", big))
		})
		s.On("measure", func(e *socketio.Event) { report(e.Ack(written.Load() - mark.Load())) })
	})
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	hs := httptest.NewUnstartedServer(mux)
	hs.Listener = countingListener{Listener: hs.Listener, written: &written}
	hs.Start()
	t.Cleanup(hs.Close)
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("closing the server: %v", err)
		}
	})
	for _, mode := range []string{"polling", "websocket"} {
		t.Run(mode, func(t *testing.T) {
			runScenario(t, scenarioTimeout, hs.URL, node, "js/compression.mjs", mode)
		})
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// stickyBalancer sends a request that carries the "io" cookie to the backend
// that set it, and any other request to the next backend in turn: without
// the cookie, the second request of a session would reach the wrong server.
type stickyBalancer struct {
	backends []*httputil.ReverseProxy
	mu       sync.Mutex
	next     int
	bySID    map[string]int
	sticky   atomic.Int32 // requests routed by cookie
}

func newStickyBalancer(t *testing.T, urls []string) *stickyBalancer {
	b := &stickyBalancer{bySID: make(map[string]int)}
	for i, u := range urls {
		target, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		p := httputil.NewSingleHostReverseProxy(target)
		p.ModifyResponse = func(res *http.Response) error {
			for _, c := range res.Cookies() {
				if c.Name == "io" {
					b.mu.Lock()
					b.bySID[c.Value] = i
					b.mu.Unlock()
				}
			}
			return nil
		}
		b.backends = append(b.backends, p)
	}
	return b
}

func (b *stickyBalancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	i := -1
	if c, err := r.Cookie("io"); err == nil {
		if j, ok := b.bySID[c.Value]; ok {
			i = j
			b.sticky.Add(1)
		}
	}
	if i < 0 {
		i = b.next % len(b.backends)
		b.next++
	}
	b.mu.Unlock()
	b.backends[i].ServeHTTP(w, r)
}

// TestClientStickyCookie runs js/sticky.mjs through a cookie-sticky balancer
// in front of two servers that set Options.Cookie.
func TestClientStickyCookie(t *testing.T) {
	node := requireNode(t)
	var urls []string
	for _, name := range []string{"a", "b"} {
		srv := socketio.NewServer(&socketio.Options{Options: engineio.Options{Cookie: &http.Cookie{}}})
		srv.OnConnection(func(s *socketio.Socket) {
			s.On("whoami", func(e *socketio.Event) {
				if err := e.Ack(name); err != nil {
					t.Errorf("ack: %v", err)
				}
			})
		})
		mux := http.NewServeMux()
		mux.Handle("/socket.io/", srv)
		urls = append(urls, startHTTP(t, mux, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
			defer cancel()
			return srv.Shutdown(ctx)
		}))
	}
	lb := newStickyBalancer(t, urls)
	front := httptest.NewServer(lb)
	t.Cleanup(front.Close)
	runScenario(t, scenarioTimeout, front.URL, node, "js/sticky.mjs")
	if n := lb.sticky.Load(); n < 3 {
		t.Fatalf("%d requests carried the session cookie", n)
	}
	t.Logf("%d requests routed by the session cookie", lb.sticky.Load())
}

// TestClientV2 runs js/v2.mjs: socket.io-client 2.x (Engine.IO v3) against a
// server with AllowEIO3.
func TestClientV2(t *testing.T) {
	node := requireNode(t)
	srv := socketio.NewServer(&socketio.Options{Options: engineio.Options{
		AllowEIO3: true,
		// The client pings every second; a stall of up to 2 s (a loaded
		// machine) does not end the session. v2.mjs outlasts the sum.
		PingInterval: time.Second,
		PingTimeout:  2 * time.Second,
	}})
	errs := make(chan error, 8)
	report := func(err error) {
		if err != nil && !errors.Is(err, socketio.ErrDisconnected) {
			select {
			case errs <- err:
			default:
			}
		}
	}
	srv.OnConnection(func(s *socketio.Socket) {
		report(s.Emit("welcome", []byte{1, 2, 3}))
		s.On("echo", func(e *socketio.Event) { report(e.Ack(e.Values()...)) })
		s.On("ask", func(e *socketio.Event) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a, err := s.EmitWithAck(ctx, "question", "q1")
			report(err)
			report(e.Ack(a.Values()...))
		})
		s.On("join", func(e *socketio.Event) {
			var room string
			report(e.Bind(&room))
			s.Join(room)
			report(e.Ack())
		})
		s.On("shout", func(e *socketio.Event) {
			var room, text string
			report(e.Bind(&room, &text))
			report(s.To(room).Emit(context.Background(), "shouted", text))
			report(e.Ack())
		})
	})
	ns := srv.Of("/v2ns")
	ns.Use(func(ctx context.Context, s *socketio.Socket) error {
		var auth struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(s.Handshake().Auth, &auth); err != nil || auth.Token != "good" {
			return &socketio.ConnectError{Message: "bad token"}
		}
		return nil
	})
	ns.OnConnection(func(s *socketio.Socket) {
		s.On("whoami", func(e *socketio.Event) { report(e.Ack(s.ID())) })
	})
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	url := startHTTP(t, mux, srv.Close)
	for _, mode := range []string{"polling", "websocket"} {
		t.Run(mode, func(t *testing.T) {
			runScenario(t, scenarioTimeout, url, node, "js/v2.mjs", mode)
		})
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}
