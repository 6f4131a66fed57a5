package engineio

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// Buffer sizes of the bufio.Reader and bufio.Writer that coder/websocket
// requires, the smallest bufio allows. net/http hands over 4 KiB each, which an
// idle connection does not need: reads and writes use pooled buffers while
// they happen (see pooledReader and batchWriter).
const (
	wsReadBufferSize  = 16
	wsWriteBufferSize = 16
)

// wsDirectReadBufferSize is the read buffer of a connection that is never
// parked: its reader waits in reads, so it keeps a buffer of its own, small
// for an idle connection, instead of holding a pooled one.
const wsDirectReadBufferSize = 256

var errServerClosing = errors.New("engineio: server closing")

// Reader states of a wsConn.
const (
	readerRunning int32 = iota // a goroutine reads, or will
	readerParked               // the poller watches the connection; no goroutine reads
)

// wsConn is an accepted WebSocket connection with its raw network connection,
// which Server.Close can cut at any time.
//
// While idle, a session's connection is parked: its reader goroutine has
// returned and the server's poller watches the socket. When the socket becomes
// readable, or is closed, a new reader goroutine continues where the last one
// stopped. The hand-over is the atomic reader state: only the goroutine that
// moves it from readerParked to readerRunning may read.
type wsConn struct {
	*websocket.Conn
	nc   netConn
	br   *bufio.Reader // the reader coder/websocket reads frames from
	src  pooledReader  // what br reads from
	w    batchWriter   // what coder/websocket writes to
	srv  *Server
	sess *Session // whose reader runs; set before the connection first parks
	poll *poller  // nil: the connection is never parked
	id   uint64
	refs atomic.Int32 // goroutines using the connection; the last one ends it

	reader atomic.Int32
	// rmu keeps the reader's look into br (before parking) apart from the reads
	// of the close handshake, which coder/websocket does on the closing
	// goroutine.
	rmu   sync.Mutex
	added bool // registered with the poller; touched only by the reader

	fd int32 // the socket's descriptor, for the poller
	// deflateFrom is the smallest message permessage-deflate compresses on
	// this connection, 0 when it was not negotiated.
	deflateFrom int32
	// fdmu keeps the descriptor from being closed, and its number from being
	// reused, while the poller arms it.
	fdmu     sync.Mutex
	fdClosed bool
}

// netConn is the hijacked connection as coder/websocket and kill see it:
// closing it also wakes a parked reader, which then sees the end and releases
// the connection.
type netConn struct {
	net.Conn
	ws *wsConn
}

func (n *netConn) Close() error {
	n.ws.fdmu.Lock()
	n.ws.fdClosed = true
	n.ws.fdmu.Unlock()
	err := n.Conn.Close()
	n.ws.wake()
	return err
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
		_ = c.nc.Close() // usually closed already by the WebSocket close
	}
}

// kill cuts the connection without a close handshake. Nil-safe.
func (c *wsConn) kill() {
	if c != nil {
		_ = c.nc.Close() // idempotent in effect
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
	if c.br.Buffered() > 0 || c.src.buffered() > 0 {
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

// closeAsync runs the close handshake on a goroutine of the server.
func (c *wsConn) closeAsync(code websocket.StatusCode, reason string) {
	if !c.acquire() {
		return
	}
	c.srv.goTracked(func() {
		defer c.release()
		c.rmu.Lock()
		defer c.rmu.Unlock()
		_ = c.Close(code, reason) // the peer may be gone; the connection ends either way
	})
}

func closeStatus(reason string) websocket.StatusCode {
	switch reason {
	case ReasonServerShutdown, ReasonForcedServerExit:
		return websocket.StatusGoingAway
	case ReasonPayloadTooLarge:
		return websocket.StatusMessageTooBig
	case ReasonSendQueueFull, ReasonSlowClient:
		return websocket.StatusPolicyViolation
	}
	return websocket.StatusNormalClosure
}

// hijackWriter gives coder/websocket small buffers instead of net/http's, and
// the hijacked connection wrapped in c.nc.
type hijackWriter struct {
	http.ResponseWriter
	c *wsConn
}

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.c.nc = netConn{Conn: c, ws: h.c}
	h.c.w.conn = c
	h.c.src.conn = c
	// Bytes the client sent right after the handshake (an upgrade probe) may sit
	// in net/http's buffer: they are the first the new reader returns.
	if n := brw.Reader.Buffered(); n > 0 {
		b, err := brw.Reader.Peek(n)
		if err != nil {
			_ = c.Close() // unusable; the Peek error is what matters
			return nil, nil, err
		}
		h.c.src.fill(b)
	}
	size := wsReadBufferSize
	compressed := h.Header().Get("Sec-WebSocket-Extensions") != ""
	h.c.w.raw = compressed
	if compressed {
		h.c.deflateFrom = int32(min(h.c.srv.opts.CompressionThreshold, math.MaxInt32))
	}
	if !h.c.setPoller(compressed) {
		// The reader blocks in reads while the connection is idle: it keeps a
		// buffer of its own rather than a pooled one.
		h.c.src.direct = true
		size = wsDirectReadBufferSize
	}
	h.c.br = bufio.NewReaderSize(&h.c.src, size)
	return &h.c.nc, bufio.NewReadWriter(h.c.br, bufio.NewWriterSize(&h.c.w, wsWriteBufferSize)), nil
}

// setPoller gives c the server's poller if c can be parked: only plain sockets
// without compression can, as TLS and the decompressor keep bytes of their
// own that the socket's readiness does not show.
func (c *wsConn) setPoller(compressed bool) bool {
	sc, ok := c.nc.Conn.(syscall.Conn)
	if !ok || compressed {
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

// accept completes a WebSocket handshake.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) (*wsConn, error) {
	opts := &websocket.AcceptOptions{
		// Origins are checked by ServeHTTP (CORSOptions, AllowRequest); the
		// reference server accepts WebSocket connections from any origin.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	}
	if s.opts.PerMessageDeflate {
		opts.CompressionMode = websocket.CompressionNoContextTakeover
		opts.CompressionThreshold = s.opts.CompressionThreshold
	}
	wc := &wsConn{srv: s}
	hw := &hijackWriter{ResponseWriter: w, c: wc}
	c, err := websocket.Accept(hw, r, opts)
	if err != nil {
		s.log.Debug("engineio: websocket handshake failed", "remote", r.RemoteAddr, "err", err)
		return nil, err
	}
	c.SetReadLimit(s.opts.MaxPayload)
	wc.Conn = c
	wc.refs.Store(1) // the reader
	// coder/websocket put a reader of what was buffered at hijack in front of
	// the connection; nothing was (the handshake tail is in wc.src), so read
	// from wc.src directly.
	wc.br.Reset(&wc.src)
	if !s.trackConn(wc) {
		s.refuse(wc.nc.Conn, r)
		return nil, errServerClosing
	}
	return wc, nil
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
	f = binary.BigEndian.AppendUint16(f, uint16(websocket.StatusGoingAway))
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
		sess.timer.Stop()
		s.refuse(&c.nc, r)
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
			c.release()
			return
		}
		if c.park() {
			return
		}
	}
}

// readOne reads and handles one message; it reports false when the
// connection has ended.
func (s *Session) readOne(c *wsConn) bool {
	typ, data, err := c.Read(context.Background())
	if err != nil {
		reason := ReasonTransportClose
		if errors.Is(err, websocket.ErrMessageTooBig) {
			reason = ReasonPayloadTooLarge
			s.srv.noteRefusal(RefusedPayloadTooLarge, nil, s.id, "limit", s.srv.opts.MaxPayload)
		}
		s.closeNow(reason, closeDone)
		return false
	}
	if typ == websocket.MessageBinary {
		if s.v3 {
			// v3 binary messages start with their packet type.
			if len(data) == 0 || data[0] != packetMessage-'0' {
				s.srv.log.Debug("engineio: v3 binary message of another type", "sid", s.id)
				s.closeNow(ReasonParseError, closeTransport)
				return false
			}
			data = data[1:]
		}
		s.deliver(Message{Data: data, Binary: true})
		return true
	}
	if !utf8.Valid(data) {
		s.refuseInvalidText(c)
		return false
	}
	p, err := decodePacket(data)
	if err != nil {
		s.srv.noteRefusal(RefusedBadPacket, nil, s.id, "err", err)
		s.closeNow(ReasonParseError, closeTransport)
		return false
	}
	return s.handlePacket(p)
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
		var err error
		if c.w.raw {
			err = writeRaw(c, batch, s.v3)
		} else {
			err = c.w.writeFrames(batch, s.v3)
		}
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

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledFrame keeps rare large frames out of the pool.
const maxPooledFrame = 64 << 10

// writeRaw writes a batch through coder/websocket, which compresses it: the
// writer of connections with permessage-deflate. The frames' bytes leave in
// one write at the end (see batchWriter).
func writeRaw(c *wsConn, batch []frame, v3 bool) error {
	c.w.begin()
	var err error
	for i := range batch {
		if err = writeFrame(c.Conn, &batch[i], int(c.deflateFrom), v3); err != nil {
			break
		}
	}
	if endErr := c.w.end(); err == nil {
		err = endErr
	}
	return err
}

// writeFrame writes one packet as one WebSocket message through
// coder/websocket: binary messages as binary frames, others as text with the
// packet type first. The text is built in a pooled buffer because
// coder/websocket's streaming Writer would fragment the message into several
// frames.
func writeFrame(c *websocket.Conn, f *frame, deflateFrom int, v3 bool) error {
	ctx := context.Background()
	if f.msg.Binary && v3 {
		// v3 binary messages start with their packet type: built like text.
		bp := framePool.Get().(*[]byte)
		b := append(append((*bp)[:0], packetMessage-'0'), f.msg.Data...)
		var err error
		if f.msg.NoCompress && deflateFrom > 0 && len(b) >= deflateFrom {
			err = writeUncompressed(ctx, c, websocket.MessageBinary, b)
		} else {
			err = c.Write(ctx, websocket.MessageBinary, b)
		}
		if cap(b) <= maxPooledFrame {
			*bp = b
			framePool.Put(bp)
		}
		return err
	}
	if f.msg.Binary {
		if f.msg.NoCompress && deflateFrom > 0 && len(f.msg.Data) >= deflateFrom {
			return writeUncompressed(ctx, c, websocket.MessageBinary, f.msg.Data)
		}
		return c.Write(ctx, websocket.MessageBinary, f.msg.Data)
	}
	bp := framePool.Get().(*[]byte)
	b := append(append((*bp)[:0], f.typ), f.msg.Data...)
	var err error
	if f.msg.NoCompress && deflateFrom > 0 && len(b) >= deflateFrom {
		err = writeUncompressed(ctx, c, websocket.MessageText, b)
	} else {
		err = c.Write(ctx, websocket.MessageText, b)
	}
	if cap(b) <= maxPooledFrame {
		*bp = b
		framePool.Put(bp)
	}
	return err
}

// writeOne writes one packet on c, as the session's writer does.
func (c *wsConn) writeOne(f frame, v3 bool) error {
	fs := [1]frame{f}
	if c.w.raw {
		return writeRaw(c, fs[:], v3)
	}
	return c.w.writeFrames(fs[:], v3)
}

// writeUncompressed writes p as one message that permessage-deflate leaves
// alone, for a Message with NoCompress. coder/websocket decides on
// compression from the first frame of a message, which is compressed only
// when it reaches the threshold: a first frame of one byte keeps the whole
// message uncompressed. The message is then fragmented (a one-byte frame, the
// rest, an empty final frame), which every client reassembles. A message that
// would not be compressed anyway does not come here (see writeFrame).
func writeUncompressed(ctx context.Context, c *websocket.Conn, typ websocket.MessageType, p []byte) error {
	w, err := c.Writer(ctx, typ)
	if err != nil {
		return err
	}
	if _, err := w.Write(p[:1]); err != nil {
		_ = w.Close() // the write error says it all
		return err
	}
	if _, err := w.Write(p[1:]); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
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
		c.closeAsync(websocket.StatusPolicyViolation, "upgrade refused")
		c.release()
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
	ctx := context.Background()
	for {
		typ, data, err := c.Read(ctx)
		if err != nil || typ != websocket.MessageText {
			s.abortUpgrade(c)
			c.release()
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
				c.release()
				return
			}
		case err == nil && p.typ == packetUpgrade:
			s.mu.Lock()
			if s.probe != c || s.state != stateOpen {
				s.mu.Unlock()
				s.abortUpgrade(c)
				c.release()
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
			c.release()
			return
		}
	}
}
