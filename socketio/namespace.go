package socketio

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// Middleware runs when a client asks to join a namespace, before the socket is
// connected: s.Handshake() has the auth payload. An error refuses the client with
// a CONNECT_ERROR packet (see ConnectError). ctx is cancelled when the client's
// connection closes.
type Middleware func(ctx context.Context, s *Socket) error

// Namespace is a Socket.IO namespace on this server: its middleware, connection
// handlers, local sockets and adapter.
//
// A namespace returned by OfFunc or OfRegexp is a parent: it has no sockets of
// its own, its middleware and handlers apply to every namespace created from it,
// and its broadcasts reach all of them.
type Namespace struct {
	srv        *Server
	name       string
	adapter    adapter.Adapter
	adapterErr error
	match      func(name string, auth json.RawMessage) bool // parents only
	parent     *Namespace                                   // namespaces made by a parent
	ackID      atomic.Uint64
	limit      atomic.Int32 // handler concurrency of each socket (SetConcurrency)
	observed   atomic.Bool  // room listeners exist
	roomRun    runner       // runs the room listeners in order

	mu             sync.RWMutex
	sockets        map[string]*Socket
	middlewares    []Middleware
	onConnection   []func(*Socket)
	serverHandlers map[string]func(*Event)
	children       []*Namespace
	rooms          roomListeners
	away           map[string]*Socket // disconnected sessions by pid (recovery)
	removed        bool               // an empty child taken out of the server
}

func newNamespace(srv *Server, name string, match func(string, json.RawMessage) bool) *Namespace {
	n := &Namespace{srv: srv, name: name, match: match, sockets: make(map[string]*Socket)}
	n.roomRun.srv = srv
	if match == nil {
		a, err := srv.opts.Adapter(n.forAdapter())
		switch {
		case err != nil:
			n.adapterErr = fmt.Errorf("%w: namespace %q: %w", ErrAdapter, name, err)
		case a == nil:
			n.adapterErr = fmt.Errorf("%w: namespace %q: factory returned no adapter", ErrAdapter, name)
		default:
			n.adapter = a
		}
		if n.adapterErr != nil {
			srv.log.Error("socketio: namespace adapter", "namespace", name, "err", err)
		}
	}
	return n
}

// Name returns the namespace name, for example "/" or "/chat"; "" for a parent.
func (n *Namespace) Name() string { return n.name }

// Err returns why the namespace cannot serve clients (its adapter could not be
// made), or nil.
func (n *Namespace) Err() error { return n.adapterErr }

// Adapter returns the namespace's adapter (nil for a parent namespace or when Err
// is not nil).
func (n *Namespace) Adapter() adapter.Adapter { return n.adapter }

// Use adds a connect middleware. Middleware runs in the order added.
func (n *Namespace) Use(m Middleware) {
	n.mu.Lock()
	n.middlewares = append(slices.Clip(n.middlewares), m)
	n.mu.Unlock()
}

// OnConnection registers a handler called for every socket that connects.
// Register the socket's event handlers here.
//
// As in the reference server, the handlers run before the client hears that
// it is connected: the socket is already in its rooms and reachable, but the
// CONNECT answer, and whatever the handlers or broadcasts send the socket
// meanwhile, are held and written, in order, when the handlers return. So a
// room joined here holds for every broadcast made after the client could have
// heard CONNECT. A handler that waits for the client (EmitWithAck) ends the
// hold at that point: the client is told it is connected, then asked.
func (n *Namespace) OnConnection(h func(*Socket)) {
	n.mu.Lock()
	n.onConnection = append(slices.Clip(n.onConnection), h)
	n.mu.Unlock()
}

// OnServerSideEmit registers the handler of a server-side event (see
// ServerSideEmit) sent by another server process. The handler runs on a
// goroutine of its own; Event.Socket is nil and Event.Ack answers the sender.
func (n *Namespace) OnServerSideEmit(event string, h func(*Event)) {
	n.mu.Lock()
	if n.serverHandlers == nil {
		n.serverHandlers = make(map[string]func(*Event))
	}
	n.serverHandlers[event] = h
	n.mu.Unlock()
}

// middlewareList returns the middleware to run: a parent's first, then the
// namespace's own.
func (n *Namespace) middlewareList() []Middleware {
	n.mu.RLock()
	own := n.middlewares
	n.mu.RUnlock()
	if n.parent != nil {
		return append(slices.Clip(n.parent.middlewareList()), own...)
	}
	return own
}

// connectionHandlers returns a parent's connection handlers, then the
// namespace's own.
func (n *Namespace) connectionHandlers() []func(*Socket) {
	n.mu.RLock()
	own := n.onConnection
	n.mu.RUnlock()
	if n.parent != nil {
		return append(slices.Clip(n.parent.connectionHandlers()), own...)
	}
	return own
}

func (n *Namespace) serverHandler(event string) func(*Event) {
	n.mu.RLock()
	h := n.serverHandlers[event]
	n.mu.RUnlock()
	if h == nil && n.parent != nil {
		return n.parent.serverHandler(event)
	}
	return h
}

func (n *Namespace) addChild(c *Namespace) {
	n.mu.Lock()
	n.children = append(n.children, c)
	n.mu.Unlock()
}

func (n *Namespace) removeChild(c *Namespace) {
	n.mu.Lock()
	if i := slices.Index(n.children, c); i >= 0 {
		n.children = slices.Delete(n.children, i, i+1)
	}
	n.mu.Unlock()
}

// targets returns the namespaces an operation on n applies to: n itself, or the
// namespaces created from a parent.
func (n *Namespace) targets() ([]*Namespace, error) {
	if n.match == nil {
		if n.adapterErr != nil {
			return nil, n.adapterErr
		}
		return []*Namespace{n}, nil
	}
	n.mu.RLock()
	list := slices.Clone(n.children)
	n.mu.RUnlock()
	out := list[:0]
	for _, c := range list {
		if c.adapterErr == nil {
			out = append(out, c)
		}
	}
	return out, nil
}

// LocalSocket returns the socket with this id connected to this server, or nil.
func (n *Namespace) LocalSocket(id string) *Socket {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.sockets[id]
}

// Sockets returns the sockets connected to this namespace on this server (not
// those waiting for their client to recover).
func (n *Namespace) Sockets() []*Socket {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]*Socket, 0, len(n.sockets))
	for _, s := range n.sockets {
		if s.Connected() {
			out = append(out, s)
		}
	}
	return out
}

// nextAckID returns a fresh ack id.
func (n *Namespace) nextAckID() uint64 { return n.ackID.Add(1) - 1 }

// handleServerSideEmit runs the handler registered with OnServerSideEmit for
// an event another server sent. It does not wait for the handler.
func (n *Namespace) handleServerSideEmit(event string, args []json.RawMessage, reply func(args []json.RawMessage)) {
	h := n.serverHandler(event)
	if h == nil {
		n.srv.log.Debug("socketio: server-side event without handler", "namespace", n.name, "event", event)
		return
	}
	in := unpackArgs(args)
	e := &Event{Name: event, Args: in.JSON, Attachments: in.Attachments}
	if reply != nil {
		e.ack = func(a []any) error {
			raw, atts, err := parser.MarshalArgs(a...)
			if err != nil {
				return err
			}
			reply(packArgs(parser.SplitValid(raw), atts))
			return nil
		}
	}
	if n.srv.isClosed() {
		n.srv.log.Debug("socketio: server-side event after shutdown", "namespace", n.name, "event", event)
		return
	}
	n.srv.handlers.Add()
	go func() {
		defer n.srv.handlers.Done()
		r := runner{srv: n.srv}
		r.call(func() { h(e) })
	}()
}

// add connects s: it makes s visible to broadcasts and holds its CONNECT
// answer until the connection handlers return (connecthold.go). It returns
// errRemoved when n was removed as empty meanwhile (the caller looks the name
// up again), and ErrDisconnected when s was disconnected.
func (n *Namespace) add(s *Socket) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrDisconnected
	}
	n.mu.Lock()
	if n.removed {
		n.mu.Unlock()
		return errRemoved
	}
	// In the namespace before it is connected: an empty-namespace cleanup
	// racing with this connection sees it.
	n.sockets[s.id] = s
	n.mu.Unlock()
	if s.rs != nil && s.rs.pid == "" {
		s.rs.pid = newID()
	}
	// In its rooms (with those joined in middleware) before the client learns
	// it is connected, so that whatever the client does next (and a
	// DisconnectSockets or FetchSockets right after) finds it there. Until
	// connected is set, broadcasts skip it, and s.mu keeps disconnections out
	// meanwhile; from then on, what reaches it is held behind the CONNECT
	// answer.
	n.adapter.Join(s.id, s.takePendingLocked()...)
	s.holdLocked(s.conn.connectAnswer(n.name, s.id, s.pid()), nil)
	return nil
}

// remove takes s out of the namespace; leaveRooms also takes it out of its rooms.
func (n *Namespace) remove(s *Socket, leaveRooms bool) {
	n.mu.Lock()
	if n.sockets[s.id] == s {
		delete(n.sockets, s.id)
	}
	n.mu.Unlock()
	if leaveRooms {
		n.adapter.LeaveAll(s.id)
		n.srv.removeIfEmpty(n)
	}
}

// To returns a broadcast to the sockets in any of rooms (every socket of the
// namespace when rooms is empty).
func (n *Namespace) To(rooms ...string) BroadcastOperator {
	return newBroadcast(n).To(rooms...)
}

// In is To.
func (n *Namespace) In(rooms ...string) BroadcastOperator { return n.To(rooms...) }

// Except returns a broadcast to every socket not in any of rooms.
func (n *Namespace) Except(rooms ...string) BroadcastOperator {
	return newBroadcast(n).Except(rooms...)
}

// Local returns a broadcast to the sockets of this server only.
func (n *Namespace) Local() BroadcastOperator { return newBroadcast(n).Local() }

// Volatile returns a broadcast that may be dropped for sockets not ready to write.
func (n *Namespace) Volatile() BroadcastOperator { return newBroadcast(n).Volatile() }

// Timeout returns a broadcast whose EmitWithAck waits at most d.
func (n *Namespace) Timeout(d time.Duration) BroadcastOperator {
	return newBroadcast(n).Timeout(d)
}

// Send emits a "message" event to every socket of the namespace, as the
// reference server's send and write.
func (n *Namespace) Send(ctx context.Context, args ...any) error {
	return n.Emit(ctx, "message", args...)
}

// Emit sends an event to every socket of the namespace.
func (n *Namespace) Emit(ctx context.Context, event string, args ...any) error {
	return newBroadcast(n).Emit(ctx, event, args...)
}

// Compress returns a broadcast whose events are compressed (true, the
// default) or not (see BroadcastOperator.Compress).
func (n *Namespace) Compress(compress bool) BroadcastOperator {
	return newBroadcast(n).Compress(compress)
}

// EmitWithAck sends an event to every socket of the namespace and collects their
// acknowledgements (see BroadcastOperator.EmitWithAck).
func (n *Namespace) EmitWithAck(ctx context.Context, event string, args ...any) ([]Reply, error) {
	return newBroadcast(n).EmitWithAck(ctx, event, args...)
}

// FetchSockets describes every socket of the namespace, on every server.
func (n *Namespace) FetchSockets(ctx context.Context) ([]*RemoteSocket, error) {
	return newBroadcast(n).FetchSockets(ctx)
}

// SocketsJoin makes every socket of the namespace join rooms.
func (n *Namespace) SocketsJoin(ctx context.Context, rooms ...string) error {
	return newBroadcast(n).SocketsJoin(ctx, rooms...)
}

// SocketsLeave makes every socket of the namespace leave rooms.
func (n *Namespace) SocketsLeave(ctx context.Context, rooms ...string) error {
	return newBroadcast(n).SocketsLeave(ctx, rooms...)
}

// DisconnectSockets disconnects every socket of the namespace.
func (n *Namespace) DisconnectSockets(ctx context.Context, closeConn bool) error {
	return newBroadcast(n).DisconnectSockets(ctx, closeConn)
}

// ServerSideEmit sends an event to this namespace on every other server process;
// their OnServerSideEmit handlers receive it. Arguments are marshalled as by
// Socket.Emit: binary stays binary (Event.Bind into a *[]byte, Event.Values
// gives a []byte), though it crosses the cluster base64-encoded inside JSON.
func (n *Namespace) ServerSideEmit(ctx context.Context, event string, args ...any) error {
	_, err := n.serverSideEmit(ctx, event, args, false)
	return err
}

// ServerSideEmitWithAck is ServerSideEmit collecting one reply per server until
// ctx is done (or Options.AckTimeout when ctx has no deadline).
func (n *Namespace) ServerSideEmitWithAck(ctx context.Context, event string, args ...any) ([]Reply, error) {
	ctx, cancel := n.srv.ackContext(ctx, 0)
	defer cancel()
	r, err := n.serverSideEmit(ctx, event, args, true)
	return replies(r), err
}

func (n *Namespace) serverSideEmit(ctx context.Context, event string, args []any, wantReplies bool) ([]adapter.Reply, error) {
	p, err := eventPacket(n.name, event, args)
	if err != nil {
		return nil, err
	}
	raw := packArgs(parser.SplitValid(p.Data)[1:], p.Attachments)
	targets, err := n.targets()
	if err != nil {
		return nil, err
	}
	var replies []adapter.Reply
	for _, t := range targets {
		r, err := t.adapter.ServerSideEmit(ctx, event, raw, wantReplies)
		replies = append(replies, r...)
		if err != nil {
			return replies, err
		}
	}
	return replies, nil
}
