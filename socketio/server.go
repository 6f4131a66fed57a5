package socketio

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/gotrack"
	"github.com/durasock/durasock/parser"
)

// Server is a Socket.IO v5 server. It is an http.Handler: mount it on the path
// clients use, "/socket.io/" by default. Create it with NewServer.
type Server struct {
	opts     Options
	log      *slog.Logger
	engine   *engineio.Server
	recovery *RecoveryOptions // nil when disabled
	offsets  *offsets

	mu      sync.RWMutex
	nsps    map[string]*Namespace // static and created dynamic namespaces
	parents []*Namespace          // dynamic namespace matchers, in registration order
	conns   map[*engineio.Session]*conn
	closed  bool
	dynamic int // namespaces created by parents that exist

	onNew     []func(*Namespace) // OnNewNamespace listeners
	handlers  gotrack.Group      // handler goroutines of connections and server-side events
	closeOnce sync.Once
	metrics   *metrics // nil without Options.Registerer (metrics.go)
	cuts      serverCuts
}

var _ http.Handler = (*Server)(nil)

// NewServer returns a server with the main namespace "/". opts may be nil.
func NewServer(opts *Options) *Server {
	o := opts.resolved()
	s := &Server{
		opts:  o,
		nsps:  make(map[string]*Namespace),
		conns: make(map[*engineio.Session]*conn),
	}
	s.recovery = o.Recovery
	s.offsets = newOffsets()
	s.log = o.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	eo := o.Options
	s.engine = engineio.NewServer((*engineHandler)(s), &eo)
	s.metrics = newMetrics(s, o.Registerer, s.log)
	s.registerMetrics(o.Registerer)
	s.Of("/")
	return s
}

// ServeHTTP serves the Engine.IO transports.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.engine.ServeHTTP(w, r)
}

// Engine returns the Engine.IO server underneath.
func (s *Server) Engine() *engineio.Server { return s.engine }

// normalizeNamespace gives a namespace name its leading slash.
func normalizeNamespace(name string) string {
	if !strings.HasPrefix(name, "/") {
		return "/" + name
	}
	return name
}

// Of returns the namespace with this name, creating it on first use. A name
// without a leading "/" gets one.
func (s *Server) Of(name string) *Namespace {
	name = normalizeNamespace(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nsps[name]; n != nil {
		return n
	}
	n := newNamespace(s, name, nil)
	s.nsps[name] = n
	s.announce(n)
	return n
}

// OnNewNamespace registers a listener called with every namespace created
// after it, by Of or for a client of an OfFunc or OfRegexp parent (the
// reference server's "new_namespace" event). It runs with the server's lock
// held: it may configure the namespace (Use, OnConnection, room listeners)
// but not call methods of the Server.
func (s *Server) OnNewNamespace(h func(*Namespace)) {
	s.mu.Lock()
	s.onNew = append(s.onNew, h)
	s.mu.Unlock()
}

// announce runs the OnNewNamespace listeners; s.mu is held.
func (s *Server) announce(n *Namespace) {
	for _, h := range s.onNew {
		h(n)
	}
}

// OfFunc registers a dynamic namespace: a client may connect to any namespace
// name for which match returns true. auth is the client's CONNECT payload ({} when
// it sent none). The namespace is created on the first such connection and gets
// the middleware and connection handlers of the returned parent; broadcasts on the
// parent reach every namespace created from it.
func (s *Server) OfFunc(match func(name string, auth json.RawMessage) bool) *Namespace {
	p := newNamespace(s, "", match)
	s.mu.Lock()
	s.parents = append(s.parents, p)
	s.mu.Unlock()
	return p
}

// OfRegexp registers a dynamic namespace for names that re matches.
func (s *Server) OfRegexp(re *regexp.Regexp) *Namespace {
	return s.OfFunc(func(name string, _ json.RawMessage) bool { return re.MatchString(name) })
}

// lookupNamespace returns the namespace a client asks for, creating a dynamic
// one if a parent matches, or nil. It returns errTooManyNamespaces when a parent
// matches but Options.MaxChildNamespaces namespaces exist already.
func (s *Server) lookupNamespace(name string, auth json.RawMessage) (*Namespace, error) {
	s.mu.RLock()
	n := s.nsps[name]
	parents := s.parents
	closed := s.closed
	s.mu.RUnlock()
	if n != nil || closed {
		return n, nil
	}
	for _, p := range parents {
		if !p.match(name, auth) {
			continue
		}
		s.mu.Lock()
		if n = s.nsps[name]; n == nil {
			if limit := s.opts.MaxChildNamespaces; limit > 0 && s.dynamic >= limit {
				s.mu.Unlock()
				return nil, errTooManyNamespaces
			}
			n = newNamespace(s, name, nil)
			n.parent = p
			s.nsps[name] = n
			s.dynamic++
			p.addChild(n)
			s.announce(n)
		}
		s.mu.Unlock()
		return n, nil
	}
	return nil, nil
}

// removeIfEmpty removes n, a namespace created by a parent, when it has no
// socket left and Options.CleanupEmptyChildNamespaces is on. Its adapter is
// closed on a goroutine of its own (a cluster adapter talks to its bus), which
// Shutdown waits for.
func (s *Server) removeIfEmpty(n *Namespace) {
	if n.parent == nil || !s.opts.CleanupEmptyChildNamespaces {
		return
	}
	s.mu.Lock()
	n.mu.Lock()
	empty := !n.removed && len(n.sockets) == 0 && len(n.away) == 0
	if empty {
		n.removed = true
		if s.nsps[n.name] == n {
			delete(s.nsps, n.name)
		}
		s.dynamic--
	}
	n.mu.Unlock()
	s.mu.Unlock()
	if !empty {
		return
	}
	n.parent.removeChild(n)
	if n.adapter == nil {
		return
	}
	s.handlers.Add()
	go func() {
		defer s.handlers.Done()
		if err := n.adapter.Close(); err != nil {
			s.log.Warn("socketio: closing the adapter of an empty namespace", "namespace", n.name, "err", err)
		}
	}()
}

// Use adds a connect middleware to the main namespace.
func (s *Server) Use(m Middleware) { s.Of("/").Use(m) }

// OnConnection registers a connection handler of the main namespace.
func (s *Server) OnConnection(h func(*Socket)) { s.Of("/").OnConnection(h) }

// To selects sockets of the main namespace in any of rooms.
func (s *Server) To(rooms ...string) BroadcastOperator { return s.Of("/").To(rooms...) }

// In is To.
func (s *Server) In(rooms ...string) BroadcastOperator { return s.To(rooms...) }

// Except selects sockets of the main namespace in none of rooms.
func (s *Server) Except(rooms ...string) BroadcastOperator { return s.Of("/").Except(rooms...) }

// Local selects the sockets of the main namespace on this server only.
func (s *Server) Local() BroadcastOperator { return s.Of("/").Local() }

// Volatile returns a broadcast of the main namespace that may be dropped for
// sockets not ready to write.
func (s *Server) Volatile() BroadcastOperator { return s.Of("/").Volatile() }

// Compress returns a broadcast of the main namespace whose events are
// compressed (true, the default) or not (see BroadcastOperator.Compress).
func (s *Server) Compress(compress bool) BroadcastOperator { return s.Of("/").Compress(compress) }

// Timeout returns a broadcast of the main namespace whose EmitWithAck waits at
// most d.
func (s *Server) Timeout(d time.Duration) BroadcastOperator { return s.Of("/").Timeout(d) }

// FetchSockets describes every socket of the main namespace, on every server.
func (s *Server) FetchSockets(ctx context.Context) ([]*RemoteSocket, error) {
	return s.Of("/").FetchSockets(ctx)
}

// EmitWithAck sends an event to every socket of the main namespace and collects
// their acknowledgements.
func (s *Server) EmitWithAck(ctx context.Context, event string, args ...any) ([]Reply, error) {
	return s.Of("/").EmitWithAck(ctx, event, args...)
}

// Send emits a "message" event to every socket of the main namespace.
func (s *Server) Send(ctx context.Context, args ...any) error {
	return s.Of("/").Send(ctx, args...)
}

// Emit sends an event to every socket of the main namespace.
func (s *Server) Emit(ctx context.Context, event string, args ...any) error {
	return s.Of("/").Emit(ctx, event, args...)
}

// Shutdown disconnects every client with the reason "server shutting down",
// waits for the running handlers to return, and closes the adapters. It returns
// ctx.Err() if ctx ends first (the remaining sessions are then closed at once).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.engine.Shutdown(ctx)
	if err != nil {
		_ = s.engine.Close() // Shutdown ran out of time: Close reports no error of its own.
	}
	if wErr := s.handlers.Wait(ctx); err == nil {
		err = wErr
	}
	if cErr := s.closeAdapters(); err == nil {
		err = cErr
	}
	return err
}

// Close closes every connection at once and the adapters. It does not wait for
// running handlers. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.engine.Close()
	if cErr := s.closeAdapters(); err == nil {
		err = cErr
	}
	return err
}

func (s *Server) closeAdapters() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.RLock()
		list := make([]*Namespace, 0, len(s.nsps))
		for _, n := range s.nsps {
			list = append(list, n)
		}
		s.mu.RUnlock()
		for _, n := range list {
			n.expireAll()
			if n.adapter != nil {
				if cErr := n.adapter.Close(); cErr != nil && err == nil {
					err = cErr
				}
			}
		}
	})
	return err
}

func (s *Server) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// engineHandler receives the Engine.IO session events of a Server.
type engineHandler Server

func (h *engineHandler) OnOpen(sess *engineio.Session) {
	s := (*Server)(h)
	c := newConn(s, sessionTransport{Session: sess, wire: wireParser(s.opts.Parser)})
	s.mu.Lock()
	s.conns[sess] = c
	s.mu.Unlock()
	c.start()
	if c.v2 {
		// A Socket.IO 2.x client is in the main namespace without asking.
		c.onPacket(&parser.Packet{Type: parser.Connect, Namespace: "/"})
	}
}

func (h *engineHandler) OnMessage(sess *engineio.Session, m engineio.Message) {
	s := (*Server)(h)
	s.mu.RLock()
	c := s.conns[sess]
	s.mu.RUnlock()
	if c != nil {
		c.onMessage(m)
	}
}

func (h *engineHandler) OnClose(sess *engineio.Session, reason string) {
	s := (*Server)(h)
	s.mu.Lock()
	c := s.conns[sess]
	delete(s.conns, sess)
	s.mu.Unlock()
	if c != nil {
		c.onClose(reason)
	}
}
