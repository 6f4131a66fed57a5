package engineio

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/internal/gotrack"
)

// Short names of the error codes (hooks.go) inside the package.
const (
	codeUnknownTransport    = CodeUnknownTransport
	codeUnknownSID          = CodeUnknownSID
	codeBadHandshakeMethod  = CodeBadHandshakeMethod
	codeBadRequest          = CodeBadRequest
	codeForbidden           = CodeForbidden
	codeUnsupportedProtocol = CodeUnsupportedProtocol
)

var errorMessages = [...]string{
	codeUnknownTransport:    "Transport unknown",
	codeUnknownSID:          "Session ID unknown",
	codeBadHandshakeMethod:  "Bad handshake method",
	codeBadRequest:          "Bad request",
	codeForbidden:           "Forbidden",
	codeUnsupportedProtocol: "Unsupported protocol version",
}

// Server is an Engine.IO v4 server. Mount it as an http.Handler on the path clients
// use (for example "/engine.io/" or "/socket.io/"); it serves both transports on
// that path. Create it with NewServer.
type Server struct {
	handler  Handler
	opts     Options
	log      *slog.Logger
	upgrades []string  // announced to polling sessions
	epoch    time.Time // start of the clock of now

	upgradeSettle time.Duration // see servePoll; a field for tests
	// testAfterAccept, if set, runs between the WebSocket handshake and the
	// session's registration; a field for tests.
	testAfterAccept func()

	mu        sync.Mutex
	sessions  map[string]*Session
	lingering map[string]*Session // closed by the client, see Session.lingering
	conns     map[uint64]*wsConn  // hijacked connections by id, closable at shutdown
	lastConn  uint64
	closing   bool    // Shutdown or Close started: no new sessions
	poll      *poller // watches parked connections; started with the first one
	pollErr   error   // why there is no poller, once known

	hb         heartbeats    // the heartbeat deadlines of all sessions
	goroutines gotrack.Group // goroutines the server started for sessions
	closeOnce  sync.Once

	// The waiting share of a send queue (see Session.WaitRoom); waitBytes is
	// -1 without a byte bound.
	waitMsgs, waitBytes int
	stats               serverStats
	refused             refusals
	queued              atomic.Int64 // bytes in the send queues of all sessions
}

// NewServer returns a server that reports session events to h. opts may be nil.
func NewServer(h Handler, opts *Options) *Server {
	o := opts.resolved()
	s := &Server{
		handler:       h,
		epoch:         time.Now(),
		upgradeSettle: upgradeSettle,
		opts:          o,
		log:           o.Logger,
		sessions:      make(map[string]*Session),
		lingering:     make(map[string]*Session),
		conns:         make(map[uint64]*wsConn),
	}
	s.hb.srv = s
	if !o.DisableUpgrades && s.transportEnabled(TransportWebSocket) {
		s.upgrades = []string{TransportWebSocket}
	}
	s.waitMsgs, s.waitBytes = max(1, o.SendQueueSize/2), -1
	if o.SendQueueBytes > 0 {
		s.waitBytes = max(1, o.SendQueueBytes/2)
	}
	s.registerMetrics(o.Registerer)
	s.registerRefusalMetrics(o.Registerer)
	o.CORS.warnIgnored(s.log)
	return s
}

// now reads the server's monotonic clock: the time since NewServer.
func (s *Server) now() time.Duration { return time.Since(s.epoch) }

// Count returns the number of open sessions.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

func (s *Server) transportEnabled(t string) bool {
	return t != "" && slices.Contains(s.opts.Transports, t)
}

// ServeHTTP serves Engine.IO polling requests and WebSocket handshakes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.CORS != nil && s.opts.CORS.apply(w, r) {
		return
	}
	q := r.URL.Query()
	transport := q.Get("transport")
	if !s.transportEnabled(transport) {
		s.refuseRequest(w, r, http.StatusBadRequest, CodeUnknownTransport, "", map[string]any{"transport": transport})
		return
	}
	upgrade := isWebSocketRequest(r)
	if sid := q.Get("sid"); sid != "" {
		sess := s.lookup(sid)
		if sess == nil {
			s.refuseRequest(w, r, http.StatusBadRequest, CodeUnknownSID, "", map[string]any{"sid": sid})
			return
		}
		if transport == TransportWebSocket {
			if !upgrade {
				s.refuseRequest(w, r, http.StatusBadRequest, CodeBadRequest, "", map[string]any{
					"name": "TRANSPORT_MISMATCH", "transport": transport, "previousTransport": sess.Transport()})
				return
			}
			s.serveUpgrade(w, r, sess)
			return
		}
		sess.servePolling(w, r)
		return
	}
	if r.Method != http.MethodGet {
		s.refuseRequest(w, r, http.StatusBadRequest, CodeBadHandshakeMethod, "", map[string]any{"method": r.Method})
		return
	}
	if transport == TransportWebSocket && !upgrade {
		s.refuseRequest(w, r, http.StatusBadRequest, CodeBadRequest, "", map[string]any{"name": "TRANSPORT_HANDSHAKE_ERROR"})
		return
	}
	if c := s.opts.CORS; c != nil && transport == TransportWebSocket && !c.allowsWebSocket(r) {
		s.noteRefusal(RefusedOrigin, r, "", "origin", r.Header.Get("Origin"))
		s.refuseRequest(w, r, http.StatusForbidden, CodeForbidden, "", map[string]any{"message": "origin not allowed"})
		return
	}
	if s.opts.AllowRequest != nil {
		if err := s.opts.AllowRequest(r); err != nil {
			s.log.Debug("engineio: handshake refused", "remote", r.RemoteAddr, "err", err)
			s.refuseRequest(w, r, http.StatusForbidden, CodeForbidden, err.Error(), map[string]any{"message": err.Error()})
			return
		}
	}
	if q.Get("EIO") != "4" && !s.opts.AllowEIO3 {
		// Any other value is protocol 3 to the reference server.
		s.refuseRequest(w, r, http.StatusBadRequest, CodeUnsupportedProtocol, "", map[string]any{"protocol": 3})
		return
	}
	if transport == TransportWebSocket {
		s.handshakeWebSocket(w, r)
		return
	}
	s.handshakePolling(w, r)
}

// isWebSocketRequest reports whether r asks for a WebSocket upgrade.
func isWebSocketRequest(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// writeError answers with the JSON error body of the reference server.
func writeError(w http.ResponseWriter, status, code int, message string) {
	if message == "" {
		message = errorMessages[code]
	}
	b := make([]byte, 0, 48+len(message))
	b = append(b, `{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b = strconv.AppendQuote(b, message)
	b = append(b, '}')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client may be gone; nothing else to tell it
}

func (s *Server) lookup(sid string) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess := s.sessions[sid]; sess != nil {
		return sess
	}
	return s.lingering[sid]
}

// newSessionID returns 15 random bytes in base64url: 20 characters, as the
// reference server's ids.
func newSessionID() string {
	var b [15]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// register adds sess to the server unless it is shutting down.
func (s *Server) register(sess *Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[sess.id] = sess
	return true
}

// unregister removes a closed session. With linger, its sid stays known to
// lookup for lingerTimeout (see Session.lingering).
func (s *Server) unregister(sess *Session, linger bool) {
	s.mu.Lock()
	if s.sessions[sess.id] == sess {
		delete(s.sessions, sess.id)
	}
	if linger {
		s.lingering[sess.id] = sess
	}
	s.mu.Unlock()
	if linger {
		time.AfterFunc(lingerTimeout, func() { s.forgetLingering(sess) })
	}
}

func (s *Server) forgetLingering(sess *Session) {
	s.mu.Lock()
	if s.lingering[sess.id] == sess {
		delete(s.lingering, sess.id)
	}
	s.mu.Unlock()
}

// trackConn records a hijacked connection so that Close can end it; it
// reports false when the server is closing.
func (s *Server) trackConn(c *wsConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.lastConn++
	c.id = s.lastConn
	s.conns[c.id] = c
	return true
}

// poller returns the poller, started with the first connection that can be
// parked, or nil when there is none (not available, or the server is closing).
func (s *Server) poller() *poller {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil
	}
	if s.poll == nil && s.pollErr == nil {
		s.poll, s.pollErr = newPoller(s)
		if s.pollErr != nil {
			s.log.Debug("engineio: idle connections keep their reader goroutine", "err", s.pollErr)
		}
	}
	return s.poll
}

func (s *Server) untrackConn(c *wsConn) {
	s.mu.Lock()
	delete(s.conns, c.id)
	s.mu.Unlock()
}

// wakeConns wakes the parked connections with the given ids; ids of
// connections that are gone are ignored. It returns conns, a buffer for the
// next call.
func (s *Server) wakeConns(ids []uint64, conns []*wsConn) []*wsConn {
	s.mu.Lock()
	for _, id := range ids {
		if c := s.conns[id]; c != nil {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	for i, c := range conns {
		c.wake()
		conns[i] = nil
	}
	return conns
}

// cutParked closes the connections that are still parked, whose readers then
// see the end and release them.
func (s *Server) cutParked() {
	s.mu.Lock()
	var conns []*wsConn
	for _, c := range s.conns {
		if c.reader.Load() == readerParked {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.kill()
	}
}

// stopPoller stops the poller once no session is left; connections still
// parked then are cut.
func (s *Server) stopPoller() {
	s.cutParked()
	_ = s.goroutines.Wait(context.Background())
	s.mu.Lock()
	p := s.poll
	s.poll = nil
	s.pollErr = errServerClosing
	s.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// go runs f on a goroutine the server waits for in Shutdown and Close.
func (s *Server) goTracked(f func()) {
	s.goroutines.Add()
	go func() {
		defer s.goroutines.Done()
		f()
	}()
}

// Shutdown stops accepting sessions and closes every session properly: queued
// messages are written first, then WebSocket connections get a close frame
// (status 1001) and a waiting polling request gets the close packet. Sessions get
// ReasonServerShutdown. Shutdown waits until all of them are closed or ctx is done;
// then it closes what is left at once (as Close) and returns ctx.Err().
//
// http.Server.Shutdown does not know hijacked WebSocket connections: call this
// Shutdown too, for example from http.Server.RegisterOnShutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	list := s.sessionList()
	s.mu.Unlock()
	for _, sess := range list {
		sess.closeGraceful(ReasonServerShutdown)
	}
	done := make(chan struct{})
	go func() {
		s.waitSessions(ctx)
		_ = s.goroutines.Wait(context.Background())
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.forceClose()
		<-done
		err = ctx.Err()
	}
	_ = s.goroutines.Wait(context.Background())
	s.stopPoller()
	return err
}

// waitSessions waits until no session is left or ctx is done. Sessions in
// closing state without goroutines (a polling session waiting for its last
// request) end by their own timer.
func (s *Server) waitSessions(ctx context.Context) {
	for {
		s.mu.Lock()
		list := s.sessionList()
		s.mu.Unlock()
		if len(list) == 0 {
			return
		}
		for _, sess := range list {
			select {
			case <-sess.Done():
			case <-ctx.Done():
				return
			}
		}
	}
}

func (s *Server) sessionList() []*Session {
	list := make([]*Session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		list = append(list, sess)
	}
	return list
}

// Close closes every session at once with ReasonForcedServerExit, without writing
// queued messages, and waits for the server's goroutines to end. It is idempotent.
func (s *Server) Close() error {
	s.forceClose()
	_ = s.goroutines.Wait(context.Background())
	s.stopPoller()
	return nil
}

func (s *Server) forceClose() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		list := s.sessionList()
		s.mu.Unlock()
		for _, sess := range list {
			sess.closeNow(ReasonForcedServerExit, closeKill)
		}
	})
	// Connections still in a close handshake, or probes of an upgrade, end now.
	s.mu.Lock()
	conns := make([]*wsConn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.kill() // closing an already closed connection is harmless
	}
}
