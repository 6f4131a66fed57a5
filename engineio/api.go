package engineio

// This file fixes the API that package socketio builds on. The implementation may
// add to it but must not change these signatures without updating socketio.

import (
	"errors"
	"net/http"
)

// Errors returned by Session.Send.
var (
	// ErrClosed is returned when sending on a session that is closed.
	ErrClosed = errors.New("engineio: session closed")
	// ErrQueueFull is returned when a session's send queue is full. The session is
	// closed with the reason "send queue full" (a slow client never grows memory).
	ErrQueueFull = errors.New("engineio: send queue full")
	// ErrSlowClient is returned by Session.WaitRoom when the client took
	// nothing from its send queue within Options.SlowClientTimeout. The session
	// is closed with the reason "slow client".
	ErrSlowClient = errors.New("engineio: slow client")
)

// Message is one Engine.IO "message" packet (type 4) payload. Data is never modified
// by the server after Send, so one Message may be sent to many sessions: a broadcast
// is encoded once and the same bytes are written to every recipient.
type Message struct {
	Data   []byte
	Binary bool
	// NoCompress asks that this message not be compressed: a WebSocket
	// message is then written without permessage-deflate whatever its size,
	// and a polling response holding only such messages is not compressed
	// (see Options.HTTPCompressionThreshold). The reference server's
	// compress: false.
	NoCompress bool
}

// Handler receives the life cycle of every session. Calls for one session are never
// concurrent: OnOpen happens before any OnMessage, OnClose happens exactly once, last.
// OnMessage runs on the session's read goroutine; it must not block for long.
type Handler interface {
	OnOpen(s *Session)
	OnMessage(s *Session, m Message)
	OnClose(s *Session, reason string)
}

// Close reasons passed to Handler.OnClose, named as in the reference server.
const (
	ReasonTransportClose   = "transport close"
	ReasonTransportError   = "transport error"
	ReasonPingTimeout      = "ping timeout"
	ReasonParseError       = "parse error"
	ReasonForcedClose      = "forced close"
	ReasonServerShutdown   = "server shutting down"
	ReasonSendQueueFull    = "send queue full"
	ReasonSlowClient       = "slow client"
	ReasonPayloadTooLarge  = "payload too large"
	ReasonUpgradeTimeout   = "upgrade timeout"
	ReasonForcedServerExit = "forced server close"
)

// Compile-time reminders of the surface socketio relies on (implemented elsewhere in
// this package):
//
//	func NewServer(h Handler, opts *Options) *Server
//	func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request)
//	func (s *Server) Shutdown(ctx context.Context) error   // closes every session, waits
//	func (s *Server) Close() error                         // idempotent, immediate
//	func (s *Server) Count() int                           // open sessions
//
//	func (s *Session) ID() string
//	func (s *Session) Request() *http.Request              // the handshake request (headers, query, RemoteAddr)
//	func (s *Session) Transport() string                   // "polling" or "websocket"
//	func (s *Session) Send(msgs ...Message) error          // queued atomically, in order
//	func (s *Session) SendVolatile(msgs ...Message) bool   // dropped (false) when not writable right now
//	func (s *Session) Close() error                        // ReasonForcedClose, idempotent
//	func (s *Session) Done() <-chan struct{}
var _ http.Handler = (*Server)(nil)
