package socketio

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/parser"
)

// Handshake is what a client presented when it connected: the headers, query and
// address of its first HTTP request and the auth payload of its CONNECT packet.
// Treat it as read-only.
type Handshake = adapter.Handshake

// Socket is one client connected to one namespace. Its id is fresh for every
// namespace connection (it is not the Engine.IO session id), and it is in the
// room named by its id.
//
// Register event handlers in the namespace's connection handler. Handlers of one
// connection run one at a time in the order the client sent the packets.
type Socket struct {
	id   string
	nsp  *Namespace
	conn *conn
	auth json.RawMessage

	connected atomic.Bool
	outgoing  atomic.Bool // OnAnyOutgoing listeners exist
	holding   atomic.Bool // hold is not nil (connecthold.go)
	// Guarded by mu; next to connected so that the flags share one word.
	closed    bool
	recovered bool
	away      bool // the connection broke; the session waits for its client

	mu       sync.Mutex
	handlers listenerTable
	acks     map[uint64]func([]json.RawMessage)
	extra    *socketExtra // nil until used
	run      *runner      // runs the handlers of the socket's namespace on its connection
	hold     *connectHold // the CONNECT answer and what follows it, until the connection handlers return

	rs *recoveryState // nil when connection state recovery is off
}

// recoveryState is what connection state recovery keeps of a socket (see
// RecoveryOptions).
type recoveryState struct {
	pid       string
	history   []*parser.Encoded // recent events, or those kept while away
	successor *Socket           // the socket that recovered this session
	expiry    *time.Timer
}

// pid returns the session id a client presents to recover the socket, or "".
func (s *Socket) pid() string {
	if s.rs == nil {
		return ""
	}
	return s.rs.pid
}

// socketExtra holds what many sockets never use, so that an idle socket does
// not pay for it.
type socketExtra struct {
	done          chan struct{} // made on first use: most sockets are never waited for
	reason        string        // why the socket disconnected
	anyIn         []listener    // OnAny, PrependAny
	anyOut        []listener    // OnAnyOutgoing, PrependAnyOutgoing
	middlewares   []EventMiddleware
	onError       []func(error)
	pending       []string                 // rooms joined before the socket connected
	sems          map[string]chan struct{} // bounds of concurrent events, by event ("" for the namespace's)
	onDisconnect  []func(reason string)
	disconnecting []func(reason string)
	data          any
	dataJSON      json.RawMessage
}

// extraLocked returns s.extra, making it on first use. s.mu is held.
func (s *Socket) extraLocked() *socketExtra {
	if s.extra == nil {
		s.extra = new(socketExtra)
	}
	return s.extra
}

func newSocket(n *Namespace, c *conn, run *runner, auth json.RawMessage) *Socket {
	s := &Socket{id: newID(), nsp: n, conn: c, auth: auth, run: run}
	if n.srv.recovery != nil {
		s.rs = new(recoveryState)
	}
	return s
}

// newID returns a random id of 26 base32 characters (130 bits).
func newID() string { return rand.Text() }

// ID returns the socket's id, unique across the cluster.
func (s *Socket) ID() string { return s.id }

// Namespace returns the namespace the socket is connected to.
func (s *Socket) Namespace() *Namespace { return s.nsp }

// Handshake returns what the client presented when it connected.
func (s *Socket) Handshake() Handshake { return s.conn.handshake(s.auth) }

// Transport returns the current Engine.IO transport, "polling" or "websocket".
func (s *Socket) Transport() string { return s.conn.t.Transport() }

// Connected reports whether the socket is still connected.
func (s *Socket) Connected() bool { return s.connected.Load() }

// Done is closed when the socket disconnects.
func (s *Socket) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.extraLocked()
	if x.done == nil {
		x.done = make(chan struct{})
		if s.closed {
			close(x.done)
		}
	}
	return x.done
}

// OnDisconnect registers a handler called once, with the reason, when the socket
// disconnects. When it runs the socket has left every room. If the socket is
// already disconnected, h is called at once.
func (s *Socket) OnDisconnect(h func(reason string)) {
	s.mu.Lock()
	if !s.closed {
		x := s.extraLocked()
		x.onDisconnect = append(x.onDisconnect, h)
		s.mu.Unlock()
		return
	}
	reason := s.extra.reason // set by closeWith
	s.mu.Unlock()
	h(reason)
}

// OnDisconnecting registers a handler called once, with the reason, when the
// socket disconnects, before it leaves its rooms: Rooms still lists them. It runs
// before the OnDisconnect handlers.
func (s *Socket) OnDisconnecting(h func(reason string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		x := s.extraLocked()
		x.disconnecting = append(x.disconnecting, h)
	}
}

// SetData stores application data on the socket. It is marshalled to JSON at
// once, so that FetchSockets can describe the socket on any node.
func (s *Socket) SetData(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("socketio: socket data: %w", err)
	}
	s.mu.Lock()
	x := s.extraLocked()
	x.data, x.dataJSON = v, b
	s.mu.Unlock()
	s.saveSession()
	return nil
}

// Data returns what SetData stored, or nil.
func (s *Socket) Data() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.extra == nil {
		return nil
	}
	return s.extra.data
}

// Join adds the socket to rooms. From a connect middleware, before the socket
// is connected, the rooms are joined when it connects (and not if it is
// refused).
func (s *Socket) Join(rooms ...string) {
	if s.Connected() {
		s.nsp.adapter.Join(s.id, rooms...)
		s.saveSession()
		return
	}
	s.mu.Lock()
	if !s.closed && !s.connected.Load() {
		x := s.extraLocked()
		for _, r := range rooms {
			if !slices.Contains(x.pending, r) {
				x.pending = append(x.pending, r)
			}
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if s.Connected() { // connected meanwhile
		s.nsp.adapter.Join(s.id, rooms...)
		s.saveSession()
	}
}

// takePendingLocked returns the rooms joined before the socket connected and
// forgets them. s.mu is held.
func (s *Socket) takePendingLocked() []string {
	if s.extra == nil {
		return nil
	}
	p := s.extra.pending
	s.extra.pending = nil
	return p
}

// joinPending joins the rooms joined before the socket connected, once it is.
func (s *Socket) joinPending() {
	s.mu.Lock()
	rooms := s.takePendingLocked()
	s.mu.Unlock()
	if len(rooms) > 0 && s.Connected() {
		s.nsp.adapter.Join(s.id, rooms...)
		s.saveSession()
	}
}

// Leave removes the socket from rooms. A session that waits for its client to
// come back (connection state recovery) keeps the rooms it had when its
// connection broke, as in the reference server: Leave from its OnDisconnect
// handlers does not change them.
func (s *Socket) Leave(rooms ...string) {
	s.mu.Lock()
	away := s.away
	if !s.connected.Load() && !s.closed && s.extra != nil {
		s.extra.pending = slices.DeleteFunc(s.extra.pending, func(r string) bool { return slices.Contains(rooms, r) })
	}
	s.mu.Unlock()
	if away {
		return
	}
	s.nsp.adapter.Leave(s.id, rooms...)
	s.saveSession()
}

// Rooms returns the rooms the socket is in, its own id room included. In a
// connect middleware they are the rooms it will join when it connects. After
// the socket disconnected (from OnDisconnect on) it is in none.
func (s *Socket) Rooms() []string {
	s.mu.Lock()
	if !s.connected.Load() && !s.closed {
		var rooms []string
		if s.extra != nil {
			rooms = slices.Clone(s.extra.pending)
		}
		s.mu.Unlock()
		rooms = append(rooms, s.id)
		slices.Sort(rooms)
		return rooms
	}
	s.mu.Unlock()
	return s.nsp.adapter.Rooms(s.id)
}

// To returns a broadcast to the sockets in any of rooms, except this one.
func (s *Socket) To(rooms ...string) BroadcastOperator {
	return s.nsp.To(rooms...).Except(s.id)
}

// In is To.
func (s *Socket) In(rooms ...string) BroadcastOperator { return s.To(rooms...) }

// Except returns a broadcast to every socket of the namespace in none of
// rooms, except this one.
func (s *Socket) Except(rooms ...string) BroadcastOperator {
	return s.Broadcast().Except(rooms...)
}

// Local returns a broadcast to every socket of the namespace on this server
// except this one.
func (s *Socket) Local() BroadcastOperator { return s.Broadcast().Local() }

// Broadcast returns a broadcast to every socket of the namespace except this one.
func (s *Socket) Broadcast() BroadcastOperator { return s.nsp.To().Except(s.id) }

// Emit sends an event to this socket. Arguments are marshalled as by
// parser.EventPacket: a json.RawMessage is sent as it is, a []byte as a binary
// attachment, any other value through encoding/json. Emit never blocks.
func (s *Socket) Emit(event string, args ...any) error {
	return SocketEmitter{s: s}.Emit(event, args...)
}

// Send emits a "message" event, as the reference server's send and write.
func (s *Socket) Send(args ...any) error { return s.Emit("message", args...) }

// EmitWithAck sends an event and waits for the client's acknowledgement, until ctx
// is done (or Options.AckTimeout when ctx has no deadline) or the socket
// disconnects. Binary arguments of the answer stay binary (see Args).
func (s *Socket) EmitWithAck(ctx context.Context, event string, args ...any) (Args, error) {
	return SocketEmitter{s: s}.EmitWithAck(ctx, event, args...)
}

// Compress returns an emitter to this socket whose events are compressed
// (true, the default) or not (false): with false a WebSocket message is sent
// without permessage-deflate and a polling response holding only such
// messages is not compressed.
func (s *Socket) Compress(compress bool) SocketEmitter {
	return SocketEmitter{s: s}.Compress(compress)
}

// Volatile returns an emitter to this socket whose events are dropped when
// the connection is not ready to write them at once.
func (s *Socket) Volatile() SocketEmitter { return SocketEmitter{s: s}.Volatile() }

// Timeout returns an emitter to this socket whose EmitWithAck waits at most d.
func (s *Socket) Timeout(d time.Duration) SocketEmitter { return SocketEmitter{s: s}.Timeout(d) }

// SocketEmitter emits to one socket with flags (Socket.Compress, Volatile,
// Timeout). It is a value: every method returns a new one.
type SocketEmitter struct {
	s          *Socket
	volatile   bool
	noCompress bool
	timeout    time.Duration
}

// Compress sets whether the events are compressed (the default is true).
func (e SocketEmitter) Compress(compress bool) SocketEmitter {
	e.noCompress = !compress
	return e
}

// Volatile lets the events be dropped when the connection is not ready.
func (e SocketEmitter) Volatile() SocketEmitter {
	e.volatile = true
	return e
}

// Timeout bounds EmitWithAck, in addition to its ctx.
func (e SocketEmitter) Timeout(d time.Duration) SocketEmitter {
	e.timeout = d
	return e
}

// Emit sends an event to the socket (see Socket.Emit).
func (e SocketEmitter) Emit(event string, args ...any) error {
	s := e.s
	p, err := eventPacket(s.nsp.name, event, args)
	if err != nil {
		return err
	}
	if !s.Connected() {
		return ErrDisconnected
	}
	if s.nsp.srv.recovery != nil {
		if !e.volatile && s.nsp.sessionStore() != nil {
			// Through the adapter, so that every node can replay it.
			return s.nsp.adapter.Broadcast(context.Background(), p, adapter.Options{Rooms: []string{s.id}, Recoverable: true, NoCompress: e.noCompress})
		}
		if !e.volatile {
			s.nsp.srv.withOffset(p)
		}
		enc := parser.Encode(p)
		s.recordedWrite(enc, e.volatile, e.noCompress)
		s.notifyOutgoing(enc)
		return nil
	}
	enc := parser.Encode(p)
	s.connWrite(enc, e.volatile, e.noCompress)
	s.notifyOutgoing(enc)
	return nil
}

// EmitWithAck sends an event and waits for the acknowledgement (see
// Socket.EmitWithAck).
func (e SocketEmitter) EmitWithAck(ctx context.Context, event string, args ...any) (Args, error) {
	s := e.s
	p, err := eventPacket(s.nsp.name, event, args)
	if err != nil {
		return Args{}, err
	}
	ctx, cancel := s.nsp.srv.ackContext(ctx, e.timeout)
	defer cancel()
	p.ID, p.HasID = s.nsp.nextAckID(), true
	reply := make(chan []json.RawMessage, 1)
	if !s.expectAck(p.ID, func(a []json.RawMessage) { reply <- a }) {
		return Args{}, ErrDisconnected
	}
	enc := parser.Encode(p)
	s.connWrite(enc, e.volatile, e.noCompress)
	s.notifyOutgoing(enc)
	select {
	case a := <-reply:
		return unpackArgs(a), nil
	case <-ctx.Done():
		s.forgetAck(p.ID)
		return Args{}, fmt.Errorf("%w: event %q to socket %s: %w", ErrAckTimeout, event, s.id, ctx.Err())
	case <-s.Done():
		return Args{}, ErrDisconnected
	}
}

// Disconnect disconnects the socket from its namespace with the reason "server
// namespace disconnect". With closeConn the client's connection is closed too,
// which disconnects its sockets in every namespace.
func (s *Socket) Disconnect(closeConn bool) {
	if s.nsp.srv.recovery != nil {
		s.mu.Lock()
		away := s.away
		s.mu.Unlock()
		if away {
			s.expire()
			return
		}
	}
	if closeConn {
		s.conn.disconnectAll()
		return
	}
	s.closeWith(ReasonServerNamespaceDisconnect, true)
}

func (s *Socket) write(e *parser.Encoded, volatile, noCompress bool) {
	if s.nsp.srv.recovery != nil {
		s.recordedWrite(e, volatile, noCompress)
		s.notifyOutgoing(e)
		return
	}
	if s.connectedSync() {
		s.connWrite(e, volatile, noCompress)
		s.notifyOutgoing(e)
	}
}

// connectedSync is Connected for a write: a socket that is in its rooms but
// not connected yet is being connected by Namespace.add, which holds s.mu
// until it is, so waiting for s.mu puts the write after the CONNECT answer
// instead of dropping it.
func (s *Socket) connectedSync() bool {
	if s.connected.Load() {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected.Load()
}

// writePaced queues an encoded packet for the client as write does,
// after waiting while the connection's send queue has no room for it in the
// share kept for deliveries that may wait (adapter.PacedSocket). A cluster node
// delivers what other nodes broadcast this way, so that a backlog reaches the
// client at its own pace. It returns ErrDisconnected when the socket is not
// connected (or disconnects meanwhile), an error wrapping
// engineio.ErrSlowClient when the client took nothing for the slow-client
// timeout (the connection is then closed with ReasonSlowClient), or ctx's
// error. For a client that is away, with connection state recovery, the
// packet is kept for it without waiting.
func (s *Socket) writePaced(ctx context.Context, e *parser.Encoded, noCompress bool) error {
	if s.nsp.srv.recovery != nil {
		s.mu.Lock()
		successor, away := s.rs.successor, s.away
		s.mu.Unlock()
		switch {
		case successor != nil:
			return successor.writePaced(ctx, e, noCompress)
		case away:
			s.recordedWrite(e, false, noCompress)
			return nil
		}
	}
	if !s.connectedSync() {
		return ErrDisconnected
	}
	if err := s.conn.t.waitRoom(ctx, e); err != nil {
		if errors.Is(err, engineio.ErrClosed) {
			return ErrDisconnected
		}
		return fmt.Errorf("socketio: socket %s: %w", s.id, err)
	}
	s.write(e, false, noCompress)
	return nil
}

// expectAck registers fn for the client's ACK with this id; it reports false
// when the socket is closed. fn runs on the connection's read goroutine and
// must not block. Whoever expects an ack waits for the client, so a CONNECT
// answer still held is written now (connecthold.go).
func (s *Socket) expectAck(id uint64, fn func(args []json.RawMessage)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.releaseLocked()
	if s.acks == nil {
		s.acks = make(map[uint64]func([]json.RawMessage))
	}
	s.acks[id] = fn
	return true
}

// forgetAck removes the registration of ack id.
func (s *Socket) forgetAck(id uint64) {
	s.mu.Lock()
	delete(s.acks, id)
	s.mu.Unlock()
}

// info describes the socket for FetchSockets.
func (s *Socket) info() adapter.SocketInfo {
	s.mu.Lock()
	var data json.RawMessage
	if s.extra != nil {
		data = s.extra.dataJSON
	}
	s.mu.Unlock()
	return adapter.SocketInfo{ID: s.id, Rooms: s.Rooms(), Data: data, Handshake: s.Handshake()}
}

// resolveAck delivers an ACK packet to the waiting registration. Binary
// arguments stay binary: their placeholders are kept and the attachments ride
// along as a last argument (see packArgs), which crosses a cluster as JSON.
func (s *Socket) resolveAck(p *parser.Packet) error {
	s.mu.Lock()
	fn := s.acks[p.ID]
	delete(s.acks, p.ID)
	s.mu.Unlock()
	args := packArgs(parser.SplitValid(p.Data), p.Attachments) // validated by Decode
	if fn != nil {
		fn(args)
	} else {
		s.nsp.srv.log.Debug("socketio: ack with unknown id", "socket", s.id, "id", p.ID)
	}
	return nil
}

// dispatch runs the handlers of an event, on the namespace's runner of the
// connection: in place, or on a goroutine of its own for an event that runs
// concurrently (Concurrent, Namespace.SetConcurrency), once one of its slots
// is free.
func (s *Socket) dispatch(p *parser.Packet) {
	if !s.Connected() {
		return
	}
	// Decode validated the payload: an array starting with the event name.
	all := parser.SplitValid(p.Data)
	name, err := parser.EventName(p.Data)
	if err != nil || len(all) == 0 {
		s.conn.fail(fmt.Errorf("%w: event payload: %w", parser.ErrInvalidPayload, err))
		return
	}
	e := &Event{Name: name, Args: all[1:], Attachments: p.Attachments, socket: s}
	if p.HasID {
		id := p.ID
		e.ack = func(args []any) error {
			ap, err := parser.AckPacket(s.nsp.name, id, args...)
			if err != nil {
				return err
			}
			if !s.Connected() {
				return ErrDisconnected
			}
			s.conn.write(parser.Encode(ap), false, false)
			return nil
		}
	}
	key, limit := s.concurrency(name)
	if limit < 2 {
		s.handle(e)
		return
	}
	sem := s.semaphore(key, limit)
	select {
	case sem <- struct{}{}:
	case <-s.Done():
		return
	}
	srv := s.nsp.srv
	srv.handlers.Add()
	go func() {
		defer srv.handlers.Done()
		defer func() { <-sem }()
		s.run.call(func() { s.handle(e) })
	}()
}

// concurrency returns how many events named name the socket may handle at
// once, and the key of the bound: the event's own, or the namespace's ("").
func (s *Socket) concurrency(name string) (key string, limit int) {
	s.mu.Lock()
	for _, l := range s.handlers.get(name) {
		if l.limit > 0 {
			s.mu.Unlock()
			return name, l.limit
		}
	}
	s.mu.Unlock()
	return "", s.nsp.concurrencyLimit()
}

// semaphore returns the bound of the events of key.
func (s *Socket) semaphore(key string, limit int) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.extraLocked()
	sem := x.sems[key]
	if sem == nil || cap(sem) != limit {
		if x.sems == nil {
			x.sems = make(map[string]chan struct{})
		}
		sem = make(chan struct{}, limit)
		x.sems[key] = sem
	}
	return sem
}

// handle runs the middleware, the OnAny listeners and the listeners of e.
func (s *Socket) handle(e *Event) {
	s.mu.Lock()
	var anys []listener
	var mws []EventMiddleware
	if x := s.extra; x != nil {
		anys, mws = x.anyIn, x.middlewares
	}
	s.mu.Unlock()
	for _, m := range mws {
		if err := m(e); err != nil {
			s.refuse(e, err)
			return
		}
	}
	s.mu.Lock()
	list := s.handlers.get(e.Name)
	s.mu.Unlock()
	for _, a := range anys {
		a.h(e)
	}
	for _, l := range list {
		l.h(e)
	}
	if len(list) == 0 && len(anys) == 0 {
		s.nsp.srv.log.Debug("socketio: event without handler", "socket", s.id, "event", e.Name)
	}
}

// refuse answers an event an EventMiddleware refused: the OnError handlers
// run, then a client that asked for an ack gets the error.
func (s *Socket) refuse(e *Event, err error) {
	s.mu.Lock()
	var hs []func(error)
	if s.extra != nil {
		hs = s.extra.onError
	}
	s.mu.Unlock()
	if len(hs) == 0 {
		s.nsp.srv.log.Debug("socketio: event refused by middleware", "socket", s.id, "event", e.Name, "err", err)
	}
	for _, h := range hs {
		h(err)
	}
	if e.HasAck() {
		if aErr := e.Ack(connectErrorPayload(err)); aErr != nil && !errors.Is(aErr, ErrAckSent) {
			s.nsp.srv.log.Debug("socketio: refusal ack", "socket", s.id, "err", aErr)
		}
	}
}

// closeWith disconnects the socket once: it leaves its rooms and namespace, its
// pending acks fail, and its OnDisconnect handlers run on the connection's
// runner. With notify the client is sent a DISCONNECT packet.
func (s *Socket) closeWith(reason string, notify bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.extraLocked().reason = reason
	was := s.connected.Swap(false)
	away := was && s.nsp.srv.recovery != nil && recoverable(reason)
	if away {
		s.nsp.mu.Lock()
		if s.nsp.away == nil {
			s.nsp.away = make(map[string]*Socket)
		}
		s.nsp.away[s.rs.pid] = s
		s.nsp.mu.Unlock()
		s.goAwayLocked()
	}
	if st := s.nsp.sessionStore(); st != nil && was {
		if away {
			st.SessionAway(s.rs.pid, s.nsp.srv.recovery.MaxDisconnectionDuration)
		} else {
			st.DropSession(s.rs.pid)
		}
	}
	s.acks = nil
	if notify {
		s.releaseLocked() // the client hears CONNECT, then DISCONNECT
	} else {
		s.dropHoldLocked()
	}
	x := s.extra // made above
	handlers, disconnecting := x.onDisconnect, x.disconnecting
	x.onDisconnect, x.disconnecting = nil, nil
	if x.done != nil {
		close(x.done)
	}
	s.mu.Unlock()
	if !was {
		return
	}
	if notify {
		s.conn.write(parser.Encode(&parser.Packet{Type: parser.Disconnect, Namespace: s.nsp.name}), false, false)
	}
	// Broadcasts skip the socket from now on (it is not connected); it stays in
	// its rooms until its OnDisconnecting handlers have run.
	if !away {
		s.nsp.remove(s, len(disconnecting) == 0)
	}
	s.conn.removeSocket(s.nsp.name, s)
	for _, h := range disconnecting {
		s.run.push(nil, false, 0, func() { h(reason) })
	}
	if len(disconnecting) > 0 && !away {
		s.run.push(nil, false, 0, func() {
			s.nsp.adapter.LeaveAll(s.id)
			s.nsp.srv.removeIfEmpty(s.nsp)
		})
	}
	for _, h := range handlers {
		s.run.push(nil, false, 0, func() { h(reason) })
	}
}

// eventPacket builds an EVENT packet after checking the event name.
func eventPacket(nsp, event string, args []any) (*parser.Packet, error) {
	switch event {
	case "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener":
		return nil, fmt.Errorf("%w: %q", ErrReservedEvent, event)
	}
	return parser.EventPacket(nsp, event, args...)
}
