package engineio

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Transport names as they appear in the "transport" query parameter and in the
// "upgrades" list of the open packet.
const (
	TransportPolling   = "polling"
	TransportWebSocket = "websocket"
)

// Defaults applied to zero fields of Options. They are the defaults of the
// reference server, except SendQueueSize, which it does not have.
const (
	DefaultPingInterval         = 25 * time.Second
	DefaultPingTimeout          = 20 * time.Second
	DefaultUpgradeTimeout       = 10 * time.Second
	DefaultMaxPayload           = 1_000_000
	DefaultCompressionThreshold = 1024
	DefaultSendQueueSize        = 4096
	DefaultSendQueueBytes       = 4 << 20
	DefaultSlowClientTimeout    = 10 * time.Second
	DefaultPollingBodyTimeout   = 20 * time.Second
)

// Options configures a Server. The zero value of every field means its default, so
// a nil *Options or Options{} gives a server that behaves like the reference one.
type Options struct {
	// PingInterval is how often the server sends a ping packet. Default 25s.
	PingInterval time.Duration
	// PingTimeout is how long the server waits for the pong that answers a ping
	// before it closes the session with ReasonPingTimeout. There is no extra grace
	// period. Default 20s.
	PingTimeout time.Duration
	// UpgradeTimeout bounds an upgrade from polling to WebSocket: a probe connection
	// that has not sent the upgrade packet by then is closed and the session stays on
	// polling. Default 10s.
	UpgradeTimeout time.Duration
	// MaxPayload is the largest HTTP POST body (polling) or WebSocket message a client
	// may send, in bytes. A larger polling body is answered with 413 and a larger
	// WebSocket message closes the connection with status 1009; both close the
	// session with ReasonPayloadTooLarge. Default 1 000 000.
	MaxPayload int64
	// PollingBodyTimeout bounds the read of one polling POST body, from the
	// moment the server starts reading it. A body not complete by then is
	// answered with 408, counted (durasock_engineio_refused_total{reason="body
	// timeout"}) and closes the session with ReasonTransportError. Bodies are
	// read as they arrive, never into a buffer sized by Content-Length, so a
	// client that announces much and sends little holds only what it sent, and
	// only this long. Default 20s, as long as a pong may be late: a client that
	// cannot deliver a body in that time is no better off. An http.Server
	// ReadTimeout shorter than it wins. -1 removes the bound (the server's
	// ReadTimeout, if any, then applies).
	PollingBodyTimeout time.Duration
	// Transports lists the enabled transports, TransportPolling and/or
	// TransportWebSocket. Default both. With only TransportWebSocket, clients must
	// connect with WebSocket directly. Other names enable nothing; requests for
	// them are answered with error code 0 "Transport unknown".
	Transports []string
	// DisableUpgrades stops polling sessions from upgrading to WebSocket: the open
	// packet then announces no upgrades and upgrade requests are refused.
	DisableUpgrades bool
	// CORS, when not nil, adds CORS headers to polling responses and answers
	// preflight (OPTIONS) requests. Nil adds no CORS headers.
	CORS *CORSOptions
	// AllowRequest, when not nil, is called for every handshake request (polling or
	// WebSocket) before a session is created. An error refuses the request with HTTP
	// 403 and {"code":4,"message":err.Error()}, as the reference server does. The
	// request's context has what HTTP middleware in front of the server put there.
	AllowRequest func(r *http.Request) error
	// PerMessageDeflate enables the WebSocket permessage-deflate extension when the
	// client offers it. It runs without context takeover so that an idle connection
	// keeps no compression window. Messages smaller than CompressionThreshold are
	// sent uncompressed.
	PerMessageDeflate bool
	// CompressionThreshold is the smallest message compressed when
	// PerMessageDeflate is on. Default 1024 bytes.
	CompressionThreshold int
	// SendQueueSize bounds the messages waiting to be written to one session. A Send
	// that would exceed it returns ErrQueueFull and closes the session with
	// ReasonSendQueueFull, so a client that cannot keep up never grows memory.
	// Default 4096: the queue grows only as needed (an idle session holds none),
	// and it must absorb the largest burst of a node's own emits a healthy
	// client can get at once. The backlog a cluster node receives from other
	// nodes after an outage does not need to fit: it waits for room
	// (Session.WaitRoom) in the first half of the queue, the second half being
	// kept for emits that never wait.
	SendQueueSize int
	// SendQueueBytes bounds the bytes of the messages waiting to be written to
	// one session, as SendQueueSize bounds their number: a Send that would exceed
	// it returns ErrQueueFull and closes the session with ReasonSendQueueFull.
	// A Send to an empty queue is always taken (one message larger than the
	// bound can still be sent). The transport holds at most one more queue's
	// worth while it writes, so a session's send memory stays under twice the
	// bound. Default 4 MiB (a slow client costs at most about 8 MiB, not 4096
	// times the largest message); -1 removes the bound.
	SendQueueBytes int
	// SendQueueBudget, when positive, bounds the bytes queued in the send
	// queues of all sessions of the server together
	// (durasock_engineio_send_queue_bytes): a Send that would exceed it, to a
	// session whose queue is not empty (a client that is behind), closes that
	// session with ReasonSendQueueFull, as SendQueueBytes does for one
	// session. Clients that keep up are never cut by it. Default 0: no budget,
	// each session's bounds only.
	SendQueueBudget int64
	// SlowClientTimeout is how long Session.WaitRoom, the send that waits for
	// room instead of overflowing (what a cluster node uses for the backlog of
	// other nodes), waits for a client whose queue stays at or above the
	// waiting share (half of each bound) without being taken by the transport.
	// The wait is measured from the moment the queue reached that share, not
	// per message, so a client that takes nothing is cut once, within the
	// timeout, whoever waits on it; it is closed with ReasonSlowClient. The
	// transport takes the queue when it has written the previous one, so the
	// timeout must exceed the time a client needs to read half a queue: on a
	// local network a few milliseconds; with the default bounds at most 2 MiB,
	// which at 10s is a client slower than 1.7 Mbit/s during a backlog. The
	// default, 10s, is also above the pauses a healthy connection has (a TCP
	// retransmission, a stop-the-world pause of the client), yet short enough
	// that the deliveries held up behind the slow client, which wait with it,
	// resume well before the ping timeout (45s by default) would notice. -1
	// waits without a bound (until the context ends or the session closes).
	SlowClientTimeout time.Duration
	// TCPKeepAlive is the TCP keepalive of a WebSocket connection once the
	// server has taken it over from net/http. Default 0: off. The Engine.IO
	// heartbeat already finds a dead peer (a ping every PingInterval, its pong
	// due within PingTimeout: 45 s by default, where TCP's probes take 2.5
	// minutes) and its packets keep NAT and load-balancer mappings alive, so
	// the probes Go's listeners turn on for every accepted connection (after
	// 15 s without a packet: at 100 000 connections 4 000 a second with the
	// default ping, 6 700 with none due, each a kernel timer, a packet and
	// its answer) buy nothing. With a PingInterval longer than a NAT or load
	// balancer between clients and server keeps an idle connection, set it
	// below that. A positive value sends probes after that much idle time,
	// and then at that interval; -1 leaves the connection as the listener set
	// it. Polling requests keep the listener's setting: net/http owns their
	// connections.
	TCPKeepAlive time.Duration
	// AllowEIO3 accepts clients of Engine.IO protocol v3 (Socket.IO 2.x
	// clients, still common in mobile apps) besides v4, as the reference
	// server's allowEIO3. Off by default: they are refused with error code 5.
	AllowEIO3 bool
	// Cookie, when not nil, sends the session id in a cookie with the first
	// response of every session (the polling handshake or the WebSocket
	// upgrade), so that a load balancer can keep a client on one server
	// (sticky sessions by cookie). Its Value is the session id; an empty Name
	// is "io", an empty Path "/", a zero SameSite Lax, and HttpOnly is always
	// set (scripts have no use for the id). Nil sends no cookie, as the
	// reference server by default.
	Cookie *http.Cookie
	// HTTPCompressionThreshold is the smallest polling response compressed
	// with gzip or deflate when the client accepts it (Accept-Encoding); a
	// response whose messages all have Message.NoCompress is not compressed.
	// Default 1024 bytes, as the reference server's httpCompression; -1
	// disables it.
	HTTPCompressionThreshold int
	// OnInitialHeaders, when not nil, may change the headers of the first
	// response of a session (the polling handshake or the WebSocket upgrade),
	// after the cookie was added (the reference server's "initial_headers").
	OnInitialHeaders func(h http.Header, r *http.Request)
	// OnHeaders, when not nil, may change the headers of every response of a
	// session, polling requests and WebSocket upgrades alike (the reference
	// server's "headers").
	OnHeaders func(h http.Header, r *http.Request)
	// OnConnectionError, when not nil, is told of every request refused
	// before it reached a session, with the reference server's codes and
	// messages (its "connection_error" event; see RequestError). It runs on
	// the request's goroutine, before the answer is written.
	OnConnectionError func(e *RequestError)
	// Logger receives debug logs of session life cycles and protocol errors,
	// and a rate-limited warning when a client is cut (send queue full, slow
	// client) or a request is refused. Default slog.Default(), as everywhere
	// in the module: an operator sees every cut without asking for it; pass
	// slog.New(slog.DiscardHandler) to silence it.
	Logger *slog.Logger
	// Registerer, when not nil, gets the server's metrics:
	// durasock_engineio_clients_cut_total{reason} counts sessions closed because
	// their send queue overflowed ("send queue full") or stayed full longer than
	// SlowClientTimeout ("slow client"). Stats has the same numbers.
	Registerer prometheus.Registerer
}

// resolved returns a copy of o with defaults applied.
func (o *Options) resolved() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.PingInterval <= 0 {
		r.PingInterval = DefaultPingInterval
	}
	if r.PingTimeout <= 0 {
		r.PingTimeout = DefaultPingTimeout
	}
	if r.UpgradeTimeout <= 0 {
		r.UpgradeTimeout = DefaultUpgradeTimeout
	}
	if r.MaxPayload <= 0 {
		r.MaxPayload = DefaultMaxPayload
	}
	switch {
	case r.PollingBodyTimeout == 0:
		r.PollingBodyTimeout = DefaultPollingBodyTimeout
	case r.PollingBodyTimeout < 0:
		r.PollingBodyTimeout = -1
	}
	if len(r.Transports) == 0 {
		r.Transports = []string{TransportPolling, TransportWebSocket}
	} else {
		r.Transports = append([]string(nil), r.Transports...)
	}
	switch {
	case r.HTTPCompressionThreshold == 0:
		r.HTTPCompressionThreshold = DefaultCompressionThreshold
	case r.HTTPCompressionThreshold < 0:
		r.HTTPCompressionThreshold = -1
	}
	if r.CompressionThreshold <= 0 {
		r.CompressionThreshold = DefaultCompressionThreshold
	}
	if r.SendQueueSize <= 0 {
		r.SendQueueSize = DefaultSendQueueSize
	}
	switch {
	case r.SendQueueBytes == 0:
		r.SendQueueBytes = DefaultSendQueueBytes
	case r.SendQueueBytes < 0:
		r.SendQueueBytes = -1
	}
	if r.TCPKeepAlive < 0 {
		r.TCPKeepAlive = -1
	}
	switch {
	case r.SlowClientTimeout == 0:
		r.SlowClientTimeout = DefaultSlowClientTimeout
	case r.SlowClientTimeout < 0:
		r.SlowClientTimeout = -1
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	return r
}
