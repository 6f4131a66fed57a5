package engineio

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
)

var errServerClosing = errors.New("engineio: server closing")

// closeHandshakeTimeout bounds the wait for the peer's close frame once the
// server sent its own.
const closeHandshakeTimeout = 5 * time.Second

// Reader states of a wsConn.
const (
	readerRunning int32 = iota // a goroutine reads, or will
	readerParked               // the poller watches the connection; no goroutine reads
)

// wsConn is an accepted WebSocket connection on its hijacked network
// connection, which Server.Close can cut at any time. Its frames are read
// (readMessage) and written (batchWriter) here, RFC 6455 and 7692 directly.
//
// While idle, a session's connection is parked: its reader goroutine has
// returned, no read buffer is held, and the server's poller watches the
// socket. When the socket becomes readable, or is closed, a new reader
// goroutine continues where the last one stopped. The hand-over is the atomic
// reader state: only the goroutine that moves it from readerParked to
// readerRunning may read.
type wsConn struct {
	src  pooledReader // what frames are read from
	w    batchWriter  // its conn is the hijacked connection
	srv  *Server
	sess *Session // whose reader runs; set before the connection first parks
	poll *poller  // nil: the connection is never parked
	id   uint64
	skip uint64       // payload bytes of a refused frame the reader still discards
	refs atomic.Int32 // goroutines using the connection; the last one ends it

	reader atomic.Int32
	// rmu keeps the reader's look into its buffer (before parking) apart from
	// other goroutines, and guards the two fields below.
	rmu sync.Mutex
	// readerDone: the reader has ended; closeWait, when set, is closed then
	// (a close handshake waits for it).
	readerDone bool
	added      bool // registered with the poller; touched only by the reader
	closeWait  chan struct{}

	fd int32 // the socket's descriptor, for the poller
	// deflateFrom is the smallest message permessage-deflate compresses on
	// this connection, 0 when it was not negotiated.
	deflateFrom int32
	// fdmu keeps the descriptor from being closed, and its number from being
	// reused, while the poller arms it.
	fdmu     sync.Mutex
	fdClosed bool
}

// closeConn closes the hijacked connection; this also wakes a parked reader,
// which then sees the end and releases the connection.
func (c *wsConn) closeConn() {
	c.fdmu.Lock()
	c.fdClosed = true
	c.fdmu.Unlock()
	_ = c.w.conn.Close() // closing twice is harmless here
	c.wake()
}

// acquire adds a user unless the connection has already ended.
func (c *wsConn) acquire() bool {
	for {
		n := c.refs.Load()
		if n <= 0 {
			return false
		}
		if c.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a user; the last one closes and forgets the connection.
func (c *wsConn) release() {
	if c.refs.Add(-1) == 0 {
		c.srv.untrackConn(c)
		c.closeConn() // usually closed already by the WebSocket close
	}
}

// endReader ends the connection's reader: a close handshake waiting for the
// peer's answer is over, and the reader's use of the connection ends.
func (c *wsConn) endReader() {
	c.rmu.Lock()
	c.src.drop()
	c.readerDone = true
	if c.closeWait != nil {
		close(c.closeWait)
	}
	c.rmu.Unlock()
	c.release()
}

// kill cuts the connection without a close handshake. Nil-safe.
func (c *wsConn) kill() {
	if c != nil {
		c.closeConn()
	}
}

// park hands the idle connection to the poller and reports true when the
// calling reader must return: another goroutine reads when there is something
// to read. It reports false when the caller must go on reading itself: bytes
// are buffered already, or the connection cannot be parked.
func (c *wsConn) park() bool {
	if c.poll == nil {
		return false
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.src.buffered() > 0 {
		return false
	}
	add := !c.added
	c.added = true
	// From this store on, another goroutine may own the reader.
	c.reader.Store(readerParked)
	if err := c.arm(add); err != nil {
		if !c.reader.CompareAndSwap(readerParked, readerRunning) {
			return true // closed meanwhile; the woken reader sees it
		}
		// Closed (the next read says so) or the poller cannot take more: this
		// connection keeps its reader goroutine.
		c.srv.log.Debug("engineio: connection not parked", "err", err)
		c.poll = nil
		c.src.direct = true // the reader waits in reads from now on
		return false
	}
	return true
}

// arm asks the poller for one report of readiness of the open socket.
func (c *wsConn) arm(add bool) error {
	c.fdmu.Lock()
	defer c.fdmu.Unlock()
	if c.fdClosed {
		return net.ErrClosed
	}
	return c.poll.arm(int(c.fd), c.id, add)
}

// wake starts a reader for a parked connection. Spurious calls do nothing.
func (c *wsConn) wake() {
	if c.reader.CompareAndSwap(readerParked, readerRunning) {
		c.srv.goroutines.Add()
		go c.resume()
	}
}

// resume reads after a wake, on a goroutine of the server.
func (c *wsConn) resume() {
	defer c.srv.goroutines.Done()
	c.sess.readLoop(c, false)
}

// closeAsync runs the close handshake on a goroutine of the server: the close
// frame with code and reason, then a wait of at most closeHandshakeTimeout
// for the connection's reader to see the peer's close frame; then the
// connection ends. The reader goes on reading meanwhile (parked when idle),
// discarding messages.
func (c *wsConn) closeAsync(code uint16, reason string) {
	if !c.acquire() {
		return
	}
	c.srv.goTracked(func() {
		defer c.release()
		// A peer that reads nothing must not hold the close frame's write.
		_ = c.w.conn.SetWriteDeadline(time.Now().Add(closeHandshakeTimeout)) // fails only once closed; the write then fails too
		if err := c.w.writeClose(code, reason); err != nil {
			if !errors.Is(err, net.ErrClosed) || !c.w.isClosed() {
				c.kill()
			}
			return // another close frame, or none can be written
		}
		c.rmu.Lock()
		if c.readerDone {
			c.rmu.Unlock()
			c.kill()
			return
		}
		wait := make(chan struct{})
		c.closeWait = wait
		c.rmu.Unlock()
		t := time.NewTimer(closeHandshakeTimeout)
		defer t.Stop()
		select {
		case <-wait:
		case <-t.C:
			c.kill()
		}
	})
}

// readUntilClosed reads and discards until the connection ends, for a
// connection that has no session but is in its close handshake.
func (c *wsConn) readUntilClosed() {
	for {
		if _, _, err := c.readMessage(); err != nil && !errors.Is(err, errWSTooBig) {
			return
		}
	}
}

func closeStatus(reason string) uint16 {
	switch reason {
	case ReasonServerShutdown, ReasonForcedServerExit:
		return closeGoingAway
	case ReasonPayloadTooLarge:
		return closeTooBig
	case ReasonSendQueueFull, ReasonSlowClient:
		return closePolicy
	}
	return closeNormal
}

// websocketGUID is the key suffix of Sec-WebSocket-Accept (RFC 6455 section 4.2.2).
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptKey is the Sec-WebSocket-Accept of a Sec-WebSocket-Key.
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + websocketGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// accept completes a WebSocket handshake (RFC 6455 section 4.2) on a request
// that asks for an upgrade (isWebSocketRequest): the 101 response, with the
// headers set on w before, then the connection is the server's. Origins are
// checked by ServeHTTP (CORSOptions, AllowRequest); the reference server
// accepts WebSocket connections from any origin.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) (*wsConn, error) {
	fail := func(status int, msg string) (*wsConn, error) {
		s.log.Debug("engineio: websocket handshake failed", "remote", r.RemoteAddr, "err", msg)
		http.Error(w, msg, status)
		return nil, errors.New("engineio: " + msg)
	}
	if r.Method != http.MethodGet {
		return fail(http.StatusMethodNotAllowed, "websocket handshake must be a GET")
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		return fail(http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version")
	}
	key := strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		return fail(http.StatusBadRequest, "invalid Sec-WebSocket-Key")
	}
	deflate := s.opts.PerMessageDeflate && acceptDeflate(r.Header)
	h := w.Header()
	h.Set("Upgrade", "websocket")
	h.Set("Connection", "Upgrade")
	h.Set("Sec-WebSocket-Accept", acceptKey(key))
	if deflate {
		h.Set("Sec-WebSocket-Extensions", deflateResponse)
	}
	w.WriteHeader(http.StatusSwitchingProtocols)
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.log.Debug("engineio: websocket hijack failed", "remote", r.RemoteAddr, "err", err)
		return nil, err
	}
	if err := setTCPKeepAlive(nc, s.opts.TCPKeepAlive); err != nil {
		// The connection works without it: its heartbeat still runs.
		s.log.Debug("engineio: websocket keepalive not set", "remote", r.RemoteAddr, "err", err)
	}
	c := &wsConn{srv: s}
	c.w.conn = nc
	c.src.conn = nc
	// Bytes the client sent right after the handshake (an upgrade probe) may sit
	// in net/http's buffer: they are the first the reader returns. net/http's
	// buffers are not kept.
	if n := brw.Reader.Buffered(); n > 0 {
		b, err := brw.Reader.Peek(n)
		if err != nil {
			_ = nc.Close() // unusable; the Peek error is what matters
			return nil, err
		}
		c.src.fill(b)
	}
	if deflate {
		c.deflateFrom = int32(min(s.opts.CompressionThreshold, math.MaxInt32))
	}
	if !c.setPoller() {
		c.src.direct = true // the reader blocks in reads while the connection is idle
	}
	c.refs.Store(1) // the reader
	if !s.trackConn(c) {
		s.refuse(nc, r)
		return nil, errServerClosing
	}
	return c, nil
}

// keepAliver is what setTCPKeepAlive needs of a connection: *net.TCPConn,
// or a type that embeds one.
type keepAliver interface {
	SetKeepAlive(bool) error
	SetKeepAliveConfig(net.KeepAliveConfig) error
}

// errNoKeepAlive: the connection under a WebSocket offers no TCP keepalive
// to set (a unix socket, a listener's wrapper that hides the TCP
// connection).
var errNoKeepAlive = errors.New("connection has no TCP keepalive to set")

// setTCPKeepAlive applies Options.TCPKeepAlive (already resolved) to the
// TCP connection under nc, through TLS: 0 turns keepalive off, a positive d
// probes after d of idle time and then every d, -1 leaves it.
func setTCPKeepAlive(nc net.Conn, d time.Duration) error {
	if d < 0 {
		return nil
	}
	for {
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	tc, ok := nc.(keepAliver)
	if !ok {
		return errNoKeepAlive
	}
	if d == 0 {
		return tc.SetKeepAlive(false)
	}
	return tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: d, Interval: d})
}

// setPoller gives c the server's poller if c can be parked: plain sockets
// can, TLS connections cannot, as TLS keeps bytes of its own that the
// socket's readiness does not show.
func (c *wsConn) setPoller() bool {
	sc, ok := c.w.conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	if err := rc.Control(func(fd uintptr) { c.fd = int32(fd) }); err != nil {
		return false
	}
	c.poll = c.srv.poller()
	return c.poll != nil
}

// refuseTimeout bounds the write of the close frame to a refused connection.
const refuseTimeout = time.Second

// refuse ends a connection whose WebSocket handshake completed (the client
// has its 101) but which gets no session because the server started closing
// meanwhile: the client gets a close frame with status 1001 (going away) and
// the reason "server shutting down", without waiting for its answer, and the
// connection is cut.
func (s *Server) refuse(nc net.Conn, r *http.Request) {
	s.log.Debug("engineio: websocket refused, server closing", "remote", r.RemoteAddr)
	const reason = "server shutting down"
	// A server's close frame is unmasked: FIN|close, length, status, reason.
	f := make([]byte, 0, 4+len(reason))
	f = append(f, 0x88, byte(2+len(reason)))
	f = binary.BigEndian.AppendUint16(f, closeGoingAway)
	f = append(f, reason...)
	_ = nc.SetWriteDeadline(time.Now().Add(refuseTimeout)) // fails only once closed; the write then fails too
	_, _ = nc.Write(f)                                     // the client may be gone; it is cut either way
	_ = nc.Close()
}

// handshakeWebSocket opens a session directly over WebSocket.
//
// The client has its 101 before accept returns, so Shutdown may start between
// the two: the handshake runs as a tracked goroutine, which Shutdown and Close
// wait for, and a connection that gets no session then is refused (see
// refuse). Otherwise every accepted connection becomes a session: OnOpen, and
// later exactly one OnClose.
func (s *Server) handshakeWebSocket(w http.ResponseWriter, r *http.Request) {
	s.goroutines.Add()
	defer s.goroutines.Done()
	if s.isClosing() {
		http.Error(w, "engineio: server shutting down", http.StatusServiceUnavailable)
		return
	}
	id := newSessionID()
	s.setHeaders(w, r, id, true)
	c, err := s.accept(w, r)
	if err != nil {
		return
	}
	if s.testAfterAccept != nil {
		s.testAfterAccept()
	}
	sess := s.newSessionID(id, r, c)
	if !s.register(sess) {
		s.hb.unschedule(sess)
		s.refuse(c.w.conn, r)
		c.release()
		return
	}
	sess.mu.Lock()
	sess.flushLocked() // the open packet
	sess.mu.Unlock()
	sess.open()
	c.sess = sess
	if c.poll == nil {
		// A fresh goroutine: the handshake's holds net/http's state of the
		// request and a grown stack, which an idle reader would keep.
		s.goTracked(func() { sess.readLoop(c, false) })
		return
	}
	// The handshake's goroutine is the first reader; it usually parks the
	// connection at once and returns.
	sess.readLoop(c, true)
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// readLoop reads the session's WebSocket while there is something to read,
// parking the connection when there is not (first, with parkFirst), until the
// connection ends.
func (s *Session) readLoop(c *wsConn, parkFirst bool) {
	if parkFirst && c.park() {
		return
	}
	for {
		if !s.readOne(c) {
			c.endReader()
			return
		}
		if c.park() {
			return
		}
	}
}

// readOne reads and handles one message; it reports false when the
// connection has ended. A message that ends the session (and starts the close
// handshake) is not the end of the connection: the reader goes on until the
// peer's close frame.
func (s *Session) readOne(c *wsConn) bool {
	op, data, err := c.readMessage()
	if err != nil {
		reason := ReasonTransportClose
		if errors.Is(err, errWSTooBig) {
			reason = ReasonPayloadTooLarge
			s.srv.noteRefusal(RefusedPayloadTooLarge, nil, s.id, "limit", s.srv.opts.MaxPayload)
			s.closeNow(reason, closeDone) // the close frame is sent
			return true
		}
		var perr *wsProtocolError
		if errors.As(err, &perr) {
			// Frames no client may send: the close frame (1002 or 1007) is
			// out, and the operator hears of it.
			reason = ReasonParseError
			s.srv.noteRefusal(RefusedBadPacket, nil, s.id, "err", err)
		}
		s.closeNow(reason, closeDone)
		return false
	}
	if op == opBinary {
		if s.v3 {
			// v3 binary messages start with their packet type.
			if len(data) == 0 || data[0] != packetMessage-'0' {
				s.srv.log.Debug("engineio: v3 binary message of another type", "sid", s.id)
				s.closeNow(ReasonParseError, closeTransport)
				return true
			}
			data = data[1:]
		}
		s.deliver(Message{Data: data, Binary: true})
		return true
	}
	if !utf8.Valid(data) {
		s.refuseInvalidText(c)
		return true
	}
	p, err := decodePacket(data)
	if err != nil {
		s.srv.noteRefusal(RefusedBadPacket, nil, s.id, "err", err)
		s.closeNow(ReasonParseError, closeTransport)
		return true
	}
	s.handlePacket(p) // when it ends the session, the close handshake follows
	return true
}

// writeLoop writes the queue to the WebSocket until it is empty, then exits; a
// closing session is closed once its queue is written.
func (s *Session) writeLoop() {
	for {
		s.mu.Lock()
		batch := s.takeQueueLocked()
		c := s.ws
		state := s.state
		if len(batch) == 0 || state == stateClosed {
			s.writing = false
			s.mu.Unlock()
			if state == stateClosing {
				s.finishClose()
			}
			return
		}
		s.mu.Unlock()
		err := c.w.writeFrames(batch, s.v3, int(c.deflateFrom))
		putQueue(batch)
		if err != nil {
			s.mu.Lock()
			s.writing = false
			s.mu.Unlock()
			s.closeNow(ReasonTransportError, closeKill)
			return
		}
	}
}

// finishClose ends a graceful close of a WebSocket session whose queue is
// written; the close handshake runs in the background, as the session is over.
func (s *Session) finishClose() {
	s.closeNow("", closeTransport)
}

// writeOne writes one packet on c, as the session's writer does.
func (c *wsConn) writeOne(f frame, v3 bool) error {
	fs := [1]frame{f}
	return c.w.writeFrames(fs[:], v3, int(c.deflateFrom))
}

// serveUpgrade runs the upgrade of a polling session to WebSocket: the client
// sends "2probe", gets "3probe", then sends "5" once its last poll is done.
func (s *Server) serveUpgrade(w http.ResponseWriter, r *http.Request, sess *Session) {
	s.goroutines.Add() // see handshakeWebSocket
	defer s.goroutines.Done()
	s.setHeaders(w, r, sess.id, false)
	c, err := s.accept(w, r)
	if err != nil {
		return
	}
	sess.mu.Lock()
	if s.upgrades == nil || sess.state != stateOpen || sess.ws != nil || sess.probe != nil {
		// Already upgraded or upgrading: like the reference server, accept and
		// close this connection without touching the session.
		sess.mu.Unlock()
		c.closeAsync(closePolicy, "upgrade refused")
		c.readUntilClosed()
		c.endReader()
		return
	}
	sess.probe = c
	sess.upgradeTimer = time.AfterFunc(s.opts.UpgradeTimeout, func() {
		s.log.Debug("engineio: upgrade timeout", "sid", sess.id)
		sess.abortUpgrade(c)
	})
	sess.mu.Unlock()
	s.goTracked(func() { sess.probeLoop(c) })
}

// abortUpgradeLocked forgets the upgrade under way and returns its connection
// for the caller to kill after unlocking.
func (s *Session) abortUpgradeLocked() *wsConn {
	probe := s.probe
	s.probe = nil
	s.probed = false
	if s.upgradeTimer != nil {
		s.upgradeTimer.Stop()
		s.upgradeTimer = nil
	}
	return probe
}

// abortUpgrade ends the upgrade attempt on c; the session stays on polling.
func (s *Session) abortUpgrade(c *wsConn) {
	s.mu.Lock()
	if s.probe == c {
		s.abortUpgradeLocked()
	}
	s.mu.Unlock()
	c.kill()
}

// probeLoop reads the probe connection of an upgrade until the upgrade
// completes, then continues as the session's reader.
func (s *Session) probeLoop(c *wsConn) {
	for {
		op, data, err := c.readMessage()
		if err != nil || op != opText {
			s.abortUpgrade(c)
			c.endReader()
			return
		}
		p, err := decodePacket(data)
		switch {
		case err == nil && p.typ == packetPing && string(p.data) == "probe":
			// Marked probed before the answer goes out, so that a poll the
			// client sends once it has the answer is held as during an upgrade.
			s.mu.Lock()
			if s.probe == c {
				s.probed = true
				// End a waiting poll so the client can pause polling.
				if ch := s.pollCh; ch != nil && len(s.queue) == 0 {
					s.pollCh = nil
					ch <- []frame{{typ: packetNoop}}
				}
			}
			s.mu.Unlock()
			if err := c.writeOne(frame{typ: packetPong, msg: Message{Data: []byte("probe")}}, s.v3); err != nil {
				s.abortUpgrade(c)
				c.endReader()
				return
			}
		case err == nil && p.typ == packetUpgrade:
			s.mu.Lock()
			if s.probe != c || s.state != stateOpen {
				s.mu.Unlock()
				s.abortUpgrade(c)
				c.endReader()
				return
			}
			s.abortUpgradeLocked()
			s.ws = c
			if ch := s.pollCh; ch != nil {
				// A poll held during the upgrade: nil refuses it (see servePoll).
				s.pollCh = nil
				ch <- nil
			}
			s.flushLocked()
			s.mu.Unlock()
			s.srv.log.Debug("engineio: session upgraded", "sid", s.id)
			c.sess = s
			s.readLoop(c, true)
			return
		default:
			s.abortUpgrade(c)
			c.endReader()
			return
		}
	}
}
