package engineio

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"sync"
	"time"
)

type sessionState uint8

const (
	stateOpen    sessionState = iota
	stateClosing              // flushing queued frames before the transport closes
	stateClosed
)

// Heartbeat phases: one deadline per session (see heartbeats) serves all three.
const (
	phasePing  uint8 = iota // next fire sends a ping
	phasePong               // next fire is the ping timeout
	phaseClose              // next fire ends a graceful close that did not finish
)

// closeTimeout bounds a graceful close: the flush of queued frames to a WebSocket,
// or the wait for the polling request that picks up the close packet.
const closeTimeout = 5 * time.Second

// lingerTimeout is how long the sid of a polling session closed by the client
// stays known for the poll that may be in flight.
const lingerTimeout = time.Second

// closeMode says how a closing session ends its transport.
type closeMode uint8

const (
	closeTransport closeMode = iota // WebSocket close frame; waiting poll gets "1"
	closeByClient                   // the client sent "1": waiting poll gets noop
	closeKill                       // connections are cut at once
	closeDone                       // the transport is already closed
)

// Session is one Engine.IO client connection, over polling or WebSocket. It is
// safe for concurrent use.
type Session struct {
	srv  *Server
	id   string
	hs   handshake
	tls  *tls.ConnectionState
	vals context.Context // the values of the handshake request's context
	done chan struct{}   // made by the first Done call

	dmu sync.Mutex // serializes Handler calls

	mu           sync.Mutex
	state        sessionState
	phase        uint8
	writing      bool // a WebSocket writer goroutine is running
	posting      bool // a polling POST is being read
	probed       bool // an upgrade probe was answered
	lingering    bool // closed by the client, kept for one last poll
	inHandler    bool // a Handler call other than OnClose is running
	v3           bool // the client speaks protocol v3 (see eio3.go)
	b64          bool // a v3 polling client that wants binary as base64
	closePending bool // OnClose waits for that call to return
	ws           *wsConn
	probe        *wsConn
	pollCh       chan []frame // the waiting polling GET, if any
	queue        []frame
	queueBytes   int           // bytes of message data in queue
	full         bool          // queue reached the waiting share (see WaitRoom)
	fullSince    time.Duration // when it did, on the server's clock
	room         chan struct{} // closed when the queue is taken or the session closes; made by WaitRoom
	upgradeTimer *time.Timer
	due          time.Duration // when onTimer is due, on the server's clock (see heartbeats)
	hbPos        int32         // position in the server's heartbeats, see sessionHeap
	reason       string
}

func (s *Server) newSession(r *http.Request, ws *wsConn) *Session {
	return s.newSessionID(newSessionID(), r, ws)
}

// newSessionID makes a session with this id.
func (s *Server) newSessionID(id string, r *http.Request, ws *wsConn) *Session {
	sess := &Session{
		srv:       s,
		id:        id,
		hs:        newHandshake(r),
		tls:       r.TLS,
		vals:      requestValues(r.Context()),
		ws:        ws,
		inHandler: true, // until OnOpen has returned
	}
	upgrades := s.upgrades
	if ws != nil {
		upgrades = nil
	}
	sess.queue = []frame{{typ: packetOpen, msg: Message{Data: openPacketData(sess.id, upgrades, s.opts.PingInterval, s.opts.PingTimeout, s.opts.MaxPayload)}}}
	if s.opts.AllowEIO3 && r.URL != nil {
		if q := r.URL.Query(); q.Get("EIO") != "4" {
			sess.v3, sess.b64 = true, q.Has("b64")
		}
	}
	if sess.v3 {
		// The client pings: wait for its first ping.
		wait := s.opts.PingInterval + s.opts.PingTimeout
		sess.phase = phasePong
		s.hb.schedule(sess, wait)
		return sess
	}
	s.hb.schedule(sess, s.opts.PingInterval)
	return sess
}

// open calls OnOpen. The session must be registered.
func (s *Session) open() {
	s.srv.log.Debug("engineio: session open", "sid", s.id, "transport", s.Transport(), "remote", s.hs.field(hsRemote))
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.srv.handler.OnOpen(s)
	s.afterHandler()
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// Request returns the handshake request: headers, URL with query, RemoteAddr, TLS.
// Its body is empty and its context is the session's (see Context): the values
// that handlers in front of the server put in the handshake request's context
// are there. The headers of the WebSocket handshake itself (Connection,
// Upgrade, Sec-WebSocket-*) are left out.
//
// The session keeps the request in a compact form, so every call builds a new
// copy: callers that need it often should keep the one they got.
func (s *Session) Request() *http.Request {
	return s.hs.request(s.tls).WithContext(s.Context())
}

// Context returns a context that carries the values of the handshake
// request's context (what authentication middleware in front of the server
// stored there) and is cancelled when the session closes. It costs no
// goroutine or timer.
func (s *Session) Context() context.Context { return sessionContext{s} }

// sessionContext is the context of a session: its values are the handshake
// request's, its end the session's.
type sessionContext struct{ s *Session }

func (c sessionContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c sessionContext) Done() <-chan struct{}       { return c.s.Done() }
func (c sessionContext) Value(key any) any           { return c.s.vals.Value(key) }
func (c sessionContext) Err() error {
	select {
	case <-c.s.Done():
		return context.Canceled
	default:
		return nil
	}
}

// Protocol returns the Engine.IO protocol version of the session's client: 4,
// or 3 for a client let in by Options.AllowEIO3.
func (s *Session) Protocol() int {
	if s.v3 {
		return 3
	}
	return 4
}

// Transport returns the current transport, TransportPolling or TransportWebSocket.
func (s *Session) Transport() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ws != nil {
		return TransportWebSocket
	}
	return TransportPolling
}

// closedChan is what Done returns for a session that closed before anyone asked.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// Done is closed when the session is closed.
func (s *Session) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		if s.state == stateClosed {
			return closedChan
		}
		s.done = make(chan struct{})
	}
	return s.done
}

// Send queues msgs to be written in order, contiguously, by the session's writer.
// It never blocks on the network. It returns ErrClosed when the session is closed
// or closing, and ErrQueueFull, closing the session with ReasonSendQueueFull,
// when the queue cannot take all of msgs (Options.SendQueueSize messages,
// Options.SendQueueBytes bytes). The session keeps a reference to every
// Message.Data until written; the data must not be modified meanwhile.
func (s *Session) Send(msgs ...Message) error {
	s.mu.Lock()
	if s.state != stateOpen {
		s.mu.Unlock()
		return ErrClosed
	}
	if bound := s.overflowLocked(msgs); bound != "" {
		queued, bytes := len(s.queue), s.queueBytes
		s.mu.Unlock()
		s.srv.cut(s, ReasonSendQueueFull, bound, queued, bytes)
		s.closeNow(ReasonSendQueueFull, closeTransport)
		return ErrQueueFull
	}
	s.appendLocked(msgs)
	s.flushLocked()
	s.mu.Unlock()
	return nil
}

// overflowLocked names the bound ("messages", "bytes" or "process budget") that msgs would
// exceed, or returns "". An empty queue takes any msgs within the message bound.
func (s *Session) overflowLocked(msgs []Message) string {
	o := &s.srv.opts
	if len(s.queue)+len(msgs) > o.SendQueueSize {
		return "messages"
	}
	if len(s.queue) == 0 {
		return "" // a client that keeps up is never cut for its size
	}
	size := sizeOf(msgs)
	if o.SendQueueBytes > 0 && s.queueBytes+size > o.SendQueueBytes {
		return "bytes"
	}
	if o.SendQueueBudget > 0 && s.srv.queued.Load()+int64(size) > o.SendQueueBudget {
		// The process is over its budget: clients that are behind go first.
		return "process budget"
	}
	return ""
}

// WaitRoom waits until the send queue has room for msgs within the share kept
// for senders that can wait: half of Options.SendQueueSize and half of
// Options.SendQueueBytes (an empty queue always has room). It queues nothing:
// the caller sends msgs with Send next, which the other half of the queue, kept
// for senders that never wait, absorbs should one of them queue meanwhile.
//
// A cluster node uses it to deliver what other nodes published: a backlog that
// arrives at once after an outage is then paced by the clients' own speed
// instead of overflowing their queues, while the node's own emits, which never
// wait, keep the other half.
//
// It returns nil when there is room; ErrClosed when the session is closed or
// closing; ctx's error (wrapped) when ctx is done first; and ErrSlowClient,
// closing the session with ReasonSlowClient, when the queue has stayed at or
// above the waiting share for Options.SlowClientTimeout without the transport
// taking it. That time counts from when the queue reached the share, not from
// the call, so a client that reads nothing is cut once within the timeout
// however many senders wait on it, one after the other.
func (s *Session) WaitRoom(ctx context.Context, msgs ...Message) error {
	size := sizeOf(msgs)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	s.mu.Lock()
	for {
		if s.state != stateOpen {
			s.mu.Unlock()
			return ErrClosed
		}
		if s.roomLocked(len(msgs), size) {
			s.mu.Unlock()
			return nil
		}
		now := s.srv.now()
		if !s.full {
			s.full, s.fullSince = true, now
		}
		var expired <-chan time.Time
		if limit := s.srv.opts.SlowClientTimeout; limit > 0 {
			left := s.fullSince + limit - now
			if left <= 0 {
				queued, bytes := len(s.queue), s.queueBytes
				s.mu.Unlock()
				s.srv.cut(s, ReasonSlowClient, "time", queued, bytes)
				s.closeNow(ReasonSlowClient, closeTransport)
				return ErrSlowClient
			}
			if timer == nil {
				timer = time.NewTimer(left)
			} else {
				timer.Reset(left)
			}
			expired = timer.C
		}
		if s.room == nil {
			s.room = make(chan struct{})
		}
		room := s.room
		s.mu.Unlock()
		select {
		case <-room:
		case <-expired:
		case <-ctx.Done():
			return fmt.Errorf("engineio: waiting for room in the send queue: %w", ctx.Err())
		}
		s.mu.Lock()
	}
}

// roomLocked says whether n messages of size bytes fit in the waiting share of
// the queue. An empty queue has room for anything: waiting would not help, and
// Send then applies the bounds.
func (s *Session) roomLocked(n, size int) bool {
	if len(s.queue) == 0 {
		return true
	}
	if len(s.queue)+n > s.srv.waitMsgs {
		return false
	}
	return s.srv.waitBytes <= 0 || s.queueBytes+size <= s.srv.waitBytes
}

func sizeOf(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Data)
	}
	return n
}

// SendVolatile queues msgs only when they would be written at once: the
// WebSocket writer is idle, or a polling request is waiting. Otherwise, or when
// the session is not open, it drops them and returns false.
func (s *Session) SendVolatile(msgs ...Message) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateOpen {
		return false
	}
	if len(msgs) > s.srv.opts.SendQueueSize || (s.ws != nil && (s.writing || len(s.queue) > 0)) || (s.ws == nil && s.pollCh == nil) {
		// Volatile messages never wait in the queue: they are the first to go
		// when a client is behind.
		s.srv.stats.volatileDropped.Add(uint64(len(msgs)))
		return false
	}
	s.appendLocked(msgs)
	s.flushLocked()
	return true
}

func (s *Session) appendLocked(msgs []Message) {
	if s.queue == nil {
		s.queue = getQueue(len(msgs))
	}
	added := 0
	for _, m := range msgs {
		s.queue = append(s.queue, frame{typ: packetMessage, msg: m})
		added += len(m.Data)
	}
	s.queueBytes += added
	s.srv.queued.Add(int64(added))
	if !s.full && (len(s.queue) >= s.srv.waitMsgs || (s.srv.waitBytes > 0 && s.queueBytes >= s.srv.waitBytes)) {
		// The waiting share is used up: the slow-client clock of WaitRoom starts.
		s.full, s.fullSince = true, s.srv.now()
	}
}

// Send queues come from a pool and go back once the WebSocket writer has
// written them: a client that keeps up empties its queue at every batch, and
// a fresh slice grown from a few frames at each batch was, with the garbage
// it left, a fifth of a relay node's CPU while it delivered a backlog. A
// queue that grew past maxPooledQueue frames is left to the collector, so
// the pool holds no more than that per processor; idle sessions hold none.
const (
	pooledQueueCap = 16
	maxPooledQueue = 1024
)

var queuePool = sync.Pool{New: func() any { q := make([]frame, 0, pooledQueueCap); return &q }}

// getQueue returns an empty queue with room for at least n frames.
func getQueue(n int) []frame {
	if n > maxPooledQueue {
		return make([]frame, 0, n)
	}
	q := *queuePool.Get().(*[]frame)
	if cap(q) < n {
		q = make([]frame, 0, max(n, pooledQueueCap))
	}
	return q
}

// putQueue gives back a queue whose frames are written; it keeps no
// reference to their data.
func putQueue(q []frame) {
	if cap(q) > maxPooledQueue || cap(q) == 0 {
		return
	}
	clear(q)
	q = q[:0]
	queuePool.Put(&q)
}

// takeQueueLocked hands the queue over to the transport: the queue is empty
// again and senders waiting for room are woken.
func (s *Session) takeQueueLocked() []frame {
	q := s.queue
	s.queue = nil
	s.srv.queued.Add(-int64(s.queueBytes))
	s.queueBytes = 0
	s.full = false
	s.wakeLocked()
	return q
}

// wakeLocked wakes the senders waiting in WaitRoom.
func (s *Session) wakeLocked() {
	if s.room != nil {
		close(s.room)
		s.room = nil
	}
}

// flushLocked hands the queue to the transport: it starts the WebSocket writer,
// or answers the waiting polling request.
func (s *Session) flushLocked() {
	if len(s.queue) == 0 {
		return
	}
	if s.ws != nil {
		if !s.writing {
			s.writing = true
			s.srv.goTracked(s.writeLoop)
		}
		return
	}
	if ch := s.pollCh; ch != nil {
		s.pollCh = nil
		ch <- s.takeQueueLocked() // buffered: never blocks
	}
}

// Close closes the session with ReasonForcedClose after writing what is queued.
// It is idempotent and does not wait for the client.
func (s *Session) Close() error {
	s.closeGraceful(ReasonForcedClose)
	return nil
}

// closeGraceful stops accepting messages, writes the queue, then closes the
// transport, within closeTimeout.
func (s *Session) closeGraceful(reason string) {
	s.mu.Lock()
	if s.state != stateOpen {
		s.mu.Unlock()
		return
	}
	s.state = stateClosing
	s.reason = reason
	s.wakeLocked() // waiting senders get ErrClosed
	s.phase = phaseClose
	s.srv.hb.schedule(s, closeTimeout)
	probe := s.abortUpgradeLocked()
	if s.ws != nil {
		if !s.writing {
			s.writing = true
			s.srv.goTracked(s.writeLoop)
		}
		s.mu.Unlock()
		probe.kill()
		return
	}
	ch := s.pollCh
	if ch == nil {
		empty := len(s.queue) == 0
		s.mu.Unlock()
		probe.kill()
		if reason == ReasonServerShutdown && empty {
			// Nothing to deliver: do not hold the shutdown for the next poll, which
			// will learn from the unknown sid.
			s.closeNow(reason, closeTransport)
		}
		// Otherwise the next polling request takes the queue and the close packet.
		return
	}
	s.pollCh = nil
	ch <- append(s.takeQueueLocked(), frame{typ: packetClose})
	s.mu.Unlock()
	probe.kill()
	s.closeNow(reason, closeDone)
}

// closeNow closes the session at once: the queue is dropped, the session is
// removed, Done is closed and OnClose runs (after a running Handler call).
// If the session was closing, the reason given first is kept.
func (s *Session) closeNow(reason string, mode closeMode) {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	if s.state == stateClosing {
		reason = s.reason
	}
	s.state = stateClosed
	s.reason = reason
	done := s.done
	s.takeQueueLocked()
	s.srv.hb.unschedule(s)
	probe := s.abortUpgradeLocked()
	ws := s.ws
	ch := s.pollCh
	s.pollCh = nil
	notify := !s.inHandler
	if !notify {
		s.closePending = true
	}
	// A client closing a polling session may have its last GET in flight,
	// racing with the POST that carried the close packet: that GET still gets
	// the noop packet, any later request finds the sid unknown.
	linger := mode == closeByClient && ch == nil && ws == nil
	s.lingering = linger
	s.mu.Unlock()

	s.srv.unregister(s, linger)
	s.srv.log.Debug("engineio: session closed", "sid", s.id, "reason", reason)
	if ch != nil {
		last := packetClose
		if mode == closeByClient {
			last = packetNoop
		}
		ch <- []frame{{typ: last}}
	}
	probe.kill()
	if ws != nil {
		switch mode {
		case closeKill:
			ws.kill()
		case closeDone:
		default:
			ws.closeAsync(closeStatus(reason), reason)
		}
	}
	if done != nil {
		close(done)
	}
	if notify {
		s.srv.handler.OnClose(s, reason)
	}
}

// deliver passes a message to the handler if the session is open.
func (s *Session) deliver(m Message) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.mu.Lock()
	if s.state != stateOpen {
		s.mu.Unlock()
		return
	}
	s.inHandler = true
	s.mu.Unlock()
	s.srv.handler.OnMessage(s, m)
	s.afterHandler()
}

// afterHandler runs OnClose if the session closed during a Handler call.
func (s *Session) afterHandler() {
	s.mu.Lock()
	s.inHandler = false
	fire := s.closePending
	s.closePending = false
	reason := s.reason
	s.mu.Unlock()
	if fire {
		s.srv.handler.OnClose(s, reason)
	}
}

// handlePacket acts on one packet from the client and reports whether the
// session is still open.
func (s *Session) handlePacket(p packet) bool {
	switch p.typ {
	case packetMessage:
		s.deliver(Message{Data: p.data, Binary: p.binary})
	case packetPong:
		s.onPong()
	case packetClose:
		s.closeNow(ReasonTransportClose, closeByClient)
		return false
	case packetPing:
		if s.v3 {
			s.onClientPing(p.data)
			return true
		}
		// In protocol v4 only the server pings (the probe of an upgrade aside).
		s.srv.log.Debug("engineio: ping from client", "sid", s.id)
		s.closeNow(ReasonTransportError, closeTransport)
		return false
	}
	// open, upgrade and noop packets mean nothing here and are ignored, as the
	// reference server does.
	return true
}

// onTimer sends a ping, ends a session whose pong is late, or ends a graceful
// close that did not finish, depending on the phase.
func (s *Session) onTimer() {
	s.mu.Lock()
	now := s.srv.now()
	if s.state == stateClosed || now < s.due {
		// Closed, or the timer was reset while this call was starting.
		s.mu.Unlock()
		return
	}
	switch s.phase {
	case phasePing:
		if s.state != stateOpen {
			s.mu.Unlock()
			return
		}
		s.phase = phasePong
		s.srv.hb.schedule(s, s.srv.opts.PingTimeout)
		s.queue = append(s.queue, frame{typ: packetPing})
		s.flushLocked()
		s.mu.Unlock()
	case phasePong:
		s.mu.Unlock()
		s.closeNow(ReasonPingTimeout, closeTransport)
	default:
		s.mu.Unlock()
		s.closeNow("", closeKill)
	}
}

func (s *Session) onPong() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateOpen || s.phase != phasePong {
		return
	}
	s.phase = phasePing
	s.srv.hb.schedule(s, s.srv.opts.PingInterval)
}
