package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/parser"
)

// Close reasons given to OnDisconnect handlers, as the reference server names
// them. Reasons of the Engine.IO layer (engineio.ReasonTransportClose,
// engineio.ReasonPingTimeout, ...) are passed through unchanged.
const (
	ReasonServerNamespaceDisconnect = "server namespace disconnect"
	ReasonClientNamespaceDisconnect = "client namespace disconnect"
	ReasonParseError                = "parse error"
	ReasonServerShutdown            = engineio.ReasonServerShutdown
	ReasonTransportClose            = engineio.ReasonTransportClose
	ReasonTransportError            = engineio.ReasonTransportError
	ReasonPingTimeout               = engineio.ReasonPingTimeout
	ReasonForcedClose               = engineio.ReasonForcedClose
	// ReasonSendQueueFull: the connection's send queue overflowed (a client
	// that does not keep up with the node's own emits).
	ReasonSendQueueFull = engineio.ReasonSendQueueFull
	// ReasonSlowClient: a delivery that waits for room (the backlog of other
	// nodes) found the client taking nothing for the slow-client timeout.
	ReasonSlowClient = engineio.ReasonSlowClient
)

// transport is what a connection needs of an Engine.IO session. sessionTransport
// wraps an *engineio.Session; benchmarks use an in-process one.
type transport interface {
	ID() string
	Request() *http.Request
	// Context carries the values of the handshake request's context and
	// ends when the session closes.
	Context() context.Context
	// Protocol is the Engine.IO protocol of the client: 4, or 3 for a
	// Socket.IO 2.x client (see v2.go).
	Protocol() int
	Transport() string
	Close() error
	Done() <-chan struct{}
	// writePacket sends an encoded packet: its text and attachments in one Send,
	// so they stay together in the session's queue.
	writePacket(e *parser.Encoded, volatile, noCompress bool) error
	// waitRoom waits until the send queue has room for e among the deliveries
	// that may wait (engineio.Session.WaitRoom).
	waitRoom(ctx context.Context, e *parser.Encoded) error
}

type sessionTransport struct {
	*engineio.Session
	wire parser.Parser // nil for the JSON parser, which needs no translation
}

// messagesOf lists the Engine.IO messages of e in buf.
func messagesOf(buf *[4]engineio.Message, e *parser.Encoded) []engineio.Message {
	msgs := append(buf[:0], engineio.Message{Data: e.Text})
	for _, a := range e.Attachments {
		msgs = append(msgs, engineio.Message{Data: a, Binary: true})
	}
	return msgs
}

func (t sessionTransport) waitRoom(ctx context.Context, e *parser.Encoded) error {
	var buf [4]engineio.Message
	msgs, err := wireMessages(t.wire, &buf, e)
	if err != nil {
		return err
	}
	return t.WaitRoom(ctx, msgs...)
}

func (t sessionTransport) writePacket(e *parser.Encoded, volatile, noCompress bool) error {
	// The messages live on the stack: Send copies them into its queue.
	var buf [4]engineio.Message
	msgs, err := wireMessages(t.wire, &buf, e)
	if err != nil {
		return err
	}
	if noCompress {
		for i := range msgs {
			msgs[i].NoCompress = true
		}
	}
	if volatile {
		t.SendVolatile(msgs...)
		return nil
	}
	return t.Send(msgs...)
}

// conn is the Socket.IO side of one Engine.IO session: the sockets it has in its
// namespaces, its packet decoder and a handler runner per namespace.
type conn struct {
	srv *Server
	t   transport
	dec parser.FrameDecoder
	at  int64 // when the session opened, in Unix nanoseconds
	v2  bool  // a Socket.IO 2.x client (Engine.IO v3), see v2.go

	mu      sync.Mutex
	sockets []*Socket // one per namespace; few, so a slice beats a map
	runners []*runner // one per namespace the client asked for
	budget  budget    // of the packets queued in the runners
	reason  string    // why this side closed the connection, if it did
	closed  bool
	timer   *time.Timer
}

func newConn(srv *Server, t transport) *conn {
	c := &conn{srv: srv, t: t, at: time.Now().UnixNano(), v2: t.Protocol() == 3}
	c.dec = srv.opts.Parser.NewDecoder(srv.opts.MaxAttachments)
	if d, ok := c.dec.(*parser.Decoder); ok {
		// The JSON decoder holds attachments across messages; msgpack packets
		// come whole, within MaxPayload.
		d.MaxAttachmentBytes = srv.opts.MaxAttachmentBytes
	}
	return c
}

// runner returns the runner of namespace nsp on this connection. With create
// it makes one for a CONNECT; runners of namespaces that have no socket on the
// connection and nothing to run are dropped then, so that a client asking for
// many namespaces does not grow the list. Only the read goroutine creates
// runners, so packets of one namespace always reach the same one.
func (c *conn) runner(nsp string, create bool) *runner {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.runners {
		if r.nsp == nsp {
			return r
		}
	}
	if !create {
		return nil
	}
	c.runners = slices.DeleteFunc(c.runners, func(r *runner) bool {
		return r.idle() && c.socketLocked(r.nsp) == nil
	})
	r := &runner{srv: c.srv, nsp: nsp, budget: &c.budget}
	c.runners = append(c.runners, r)
	return r
}

// handshake describes the session's handshake request. It is built on demand so
// that an idle connection keeps no parsed copy of its query.
func (c *conn) handshake(auth json.RawMessage) adapter.Handshake {
	hs := adapter.Handshake{Time: time.Unix(0, c.at), Auth: auth}
	r := c.t.Request()
	if r == nil {
		return hs
	}
	hs.Headers = r.Header
	hs.Address = r.RemoteAddr
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		hs.Address = host
	}
	hs.Secure = r.TLS != nil
	if r.URL != nil {
		hs.Query = r.URL.Query()
		hs.URL = r.URL.RequestURI()
	}
	return hs
}

// start arms the connect timeout.
func (c *conn) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.timer = time.AfterFunc(c.srv.opts.ConnectTimeout, c.connectTimeout)
	}
}

func (c *conn) connectTimeout() {
	c.mu.Lock()
	idle := !c.closed && len(c.sockets) == 0
	c.mu.Unlock()
	if idle {
		c.srv.log.Debug("socketio: no namespace joined before connect timeout", "sid", c.t.ID())
		c.closeWith("")
	}
}

// closeWith closes the connection; a non-empty reason is what its sockets'
// OnDisconnect handlers receive instead of the Engine.IO reason.
func (c *conn) closeWith(reason string) {
	c.mu.Lock()
	if c.reason == "" {
		c.reason = reason
	}
	c.mu.Unlock()
	if err := c.t.Close(); err != nil {
		c.srv.log.Debug("socketio: close", "sid", c.t.ID(), "err", err)
	}
}

// fail closes the connection after a malformed packet, or attachments over
// the bounds, and counts it.
func (c *conn) fail(err error) {
	c.srv.log.Debug("socketio: malformed packet", "sid", c.t.ID(), "err", err)
	c.dec.Reset()
	reason := cutReason(err)
	if reason == ReasonParseError {
		c.srv.metrics.parseError()
	}
	c.srv.noteCut(reason, c.t.ID(), err)
	c.closeWith(reason)
}

func (c *conn) socket(nsp string) *Socket {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.socketLocked(nsp)
}

func (c *conn) socketLocked(nsp string) *Socket {
	for _, s := range c.sockets {
		if s.nsp.name == nsp {
			return s
		}
	}
	return nil
}

// onMessage runs on the session's read goroutine.
func (c *conn) onMessage(m engineio.Message) {
	p, err := c.dec.Add(m.Data, m.Binary)
	if err != nil {
		c.fail(err)
		return
	}
	if p == nil {
		return
	}
	c.onPacket(p)
}

// onPacket handles a decoded packet, on the session's read goroutine.
func (c *conn) onPacket(p *parser.Packet) {
	c.srv.metrics.received(p)
	size := len(p.Data)
	for _, a := range p.Attachments {
		size += len(a)
	}
	// Each namespace of the connection has its runner: a slow handler in one
	// namespace does not hold up the others, and the packets of one namespace
	// are handled in the order they arrived.
	switch p.Type {
	case parser.Connect:
		r := c.runner(c.namespaceName(p.Namespace), true)
		r.push(c.t, true, size, func() { c.connect(p, r) })
	case parser.Disconnect:
		if r := c.runner(p.Namespace, false); r != nil {
			r.push(c.t, true, size, func() {
				if s := c.socket(p.Namespace); s != nil {
					s.closeWith(ReasonClientNamespaceDisconnect, false)
				}
			})
		}
	case parser.Event, parser.BinaryEvent:
		if r := c.runner(p.Namespace, false); r != nil {
			r.push(c.t, true, size, func() {
				if s := c.socket(p.Namespace); s != nil {
					s.dispatch(p)
				}
			})
		} else {
			c.srv.log.Debug("socketio: event for a namespace not joined", "sid", c.t.ID(), "namespace", p.Namespace)
		}
	case parser.Ack, parser.BinaryAck:
		// Acks are resolved here, not queued behind handlers, so that a handler
		// waiting in EmitWithAck gets its answer.
		if s := c.socket(p.Namespace); s != nil {
			if err := s.resolveAck(p); err != nil {
				c.fail(err)
			}
		}
	default:
		// A client has no business sending CONNECT_ERROR; the reference server
		// ignores it too.
		c.srv.log.Debug("socketio: unexpected packet from client", "sid", c.t.ID(), "type", p.Type)
	}
}

// emptyAuth is the auth of a client that sent none, shared by every such socket
// (Handshake is read-only).
var emptyAuth = json.RawMessage("{}")

// connect handles a CONNECT packet on the namespace's runner r.
func (c *conn) connect(p *parser.Packet, r *runner) {
	name := p.Namespace
	auth := p.Data
	if c.v2 {
		name, auth = v2Connect(name)
	}
	if len(auth) == 0 {
		auth = emptyAuth
	}
	if c.isClosed() || c.socket(name) != nil {
		return
	}
	n, err := c.srv.lookupNamespace(name, auth)
	if errors.Is(err, errTooManyNamespaces) {
		c.srv.log.Warn("socketio: namespace refused", "namespace", name, "err", err,
			"limit", c.srv.opts.MaxChildNamespaces)
		c.connectError(name, json.RawMessage(`{"message":"Too many namespaces"}`))
		return
	}
	if n == nil {
		c.connectError(name, json.RawMessage(`{"message":"Invalid namespace"}`))
		return
	}
	if n.adapterErr != nil {
		c.connectError(name, connectErrorPayload(&ConnectError{Message: "Namespace unavailable"}))
		return
	}
	s := newSocket(n, c, r, auth)
	if c.v2 {
		s.id = v2SocketID(name, c.t.ID())
	}
	var old *Socket // the session this client asks to recover
	var pid, offset string
	if c.srv.recovery != nil && !c.v2 {
		pid, offset = recoveryRequest(auth)
		if old = n.awaySocket(pid); old != nil {
			s.id = old.id
		}
	}
	if old == nil || c.srv.recovery.RunMiddlewares {
		ctx := c.t.Context()
		for _, m := range n.middlewareList() {
			if err := m(ctx, s); err != nil {
				c.connectError(name, c.refusal(err))
				return
			}
		}
	}
	c.mu.Lock()
	if c.closed || c.socketLocked(name) != nil {
		c.mu.Unlock()
		return
	}
	c.sockets = append(c.sockets, s)
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	store := n.sessionStore()
	switch {
	case old != nil && n.takeOver(old, s, offset):
		c.srv.metrics.recovery(name, true)
		s.saveSession()
	case old == nil && pid != "" && store != nil && n.restoreRemote(store, s, pid, offset):
		c.srv.metrics.recovery(name, true)
	default:
		if old != nil {
			s.id = newID() // the session could not be recovered: a new one
		}
		if pid != "" {
			c.srv.metrics.recovery(name, false)
		}
		if err := c.join(n, s, auth); err != nil {
			c.removeSocket(name, s)
			if !errors.Is(err, ErrDisconnected) {
				c.connectError(name, connectErrorPayload(&ConnectError{Message: "Namespace unavailable"}))
			}
			return
		}
		s.saveSession()
	}
	// The client hears CONNECT once the handlers returned (connecthold.go).
	defer s.release()
	s.joinPending()
	for _, h := range n.connectionHandlers() {
		if !s.Connected() {
			return
		}
		h(s)
	}
}

// join adds s to n. When n, a dynamic namespace, was removed as empty meanwhile,
// s joins the namespace created afresh under the same name (same parent, same
// middleware); a few attempts, since each one needs a cleanup racing with it.
func (c *conn) join(n *Namespace, s *Socket, auth json.RawMessage) error {
	for range 3 {
		err := n.add(s)
		if !errors.Is(err, errRemoved) {
			return err
		}
		if n, err = c.srv.lookupNamespace(n.name, auth); err != nil {
			return err
		}
		if n == nil || n.adapterErr != nil {
			return ErrAdapter
		}
		s.nsp = n
	}
	return errRemoved
}

func (c *conn) connectError(nsp string, payload json.RawMessage) {
	c.write(parser.Encode(&parser.Packet{Type: parser.ConnectError, Namespace: nsp, Data: payload}), false, false)
}

func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *conn) removeSocket(nsp string, s *Socket) {
	c.mu.Lock()
	if i := slices.Index(c.sockets, s); i >= 0 {
		c.sockets = slices.Delete(c.sockets, i, i+1)
	}
	c.mu.Unlock()
}

// disconnectAll disconnects every socket of the connection, then closes it.
func (c *conn) disconnectAll() {
	c.mu.Lock()
	list := slices.Clone(c.sockets)
	c.mu.Unlock()
	for _, s := range list {
		s.closeWith(ReasonServerNamespaceDisconnect, true)
	}
	c.closeWith(ReasonForcedClose)
}

// onClose runs once, when the Engine.IO session closed.
func (c *conn) onClose(reason string) {
	c.mu.Lock()
	c.closed = true
	if c.reason != "" {
		reason = c.reason
	}
	list := slices.Clone(c.sockets)
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	for _, s := range list {
		s.closeWith(reason, false)
	}
}

// write sends an encoded packet to the client.
func (c *conn) write(e *parser.Encoded, volatile, noCompress bool) {
	c.srv.metrics.sent(e)
	if err := c.t.writePacket(e, volatile, noCompress); err != nil && !errors.Is(err, engineio.ErrClosed) {
		// ErrQueueFull: the session closes itself with ReasonSendQueueFull.
		c.srv.log.Debug("socketio: send", "sid", c.t.ID(), "err", err)
	}
}
