// Package engineio is an Engine.IO v4 server: the transport layer under Socket.IO.
//
// Start with NewServer, which takes a Handler (OnOpen, OnMessage, OnClose of every
// session) and Options (zero values are the reference server's defaults), and
// mount the Server as an http.Handler on the path clients use:
//
//	srv := engineio.NewServer(h, &engineio.Options{PingInterval: 25 * time.Second})
//	mux.Handle("/engine.io/", srv)
//
// It serves HTTP long-polling and WebSocket (RFC 6455 frames read and written
// directly on the hijacked connection, permessage-deflate of RFC 7692 without
// context takeover; an idle connection is parked on one epoll instance with no
// goroutine and no buffer; the session's writer writes a batch of frames in
// one system call), the upgrade
// from one to the other, heartbeats, and the error answers of the reference
// server, so the official clients cannot tell it apart.
//
// A Session sends with Send, which queues atomically and in order; one Message
// may be sent to many sessions, its bytes are shared, never copied per session
// into a new allocation, and never modified. Each session writes through a
// queue bounded in messages and bytes: a client that cannot keep up is closed
// with ReasonSendQueueFull. A sender that can wait (a cluster node delivering
// the backlog of other nodes) calls Session.WaitRoom before Send: it is paced
// by the client's speed instead, and a client that takes nothing for
// Options.SlowClientTimeout is closed with ReasonSlowClient. Both are counted
// (Server.Stats, durasock_engineio_clients_cut_total) and logged as warnings.
//
// What clients send is bounded and checked before a Handler sees it: polling
// bodies are read as they arrive, within MaxPayload and PollingBodyTimeout,
// never into a buffer sized by Content-Length; WebSocket messages within
// MaxPayload; text that is not valid UTF-8 is refused (WebSocket close 1007,
// HTTP 400); CORSOptions never combines "*" with credentials and allows the
// "null" origin only when listed. Every refusal is counted (Server.Refused,
// durasock_engineio_refused_total{reason}) and logged at most once a second.
// docs/SECURITY.md lists every limit and its default.
//
// The options and hooks of the reference server have their counterparts
// (docs/NODE-PARITY.md): Cookie (sticky sessions by cookie), gzip or deflate
// of polling responses from HTTPCompressionThreshold on (Message.NoCompress
// opts a message out, of permessage-deflate too), OnInitialHeaders and
// OnHeaders, OnConnectionError with the reference codes (RequestError),
// AllowRequest, and AllowEIO3 for clients of protocol v3 (Socket.IO 2.x).
// Session.Context carries the values of the handshake request's context.
//
// Handler calls for one session never overlap. The Data of a Message passed to
// OnMessage belongs to the handler: it is not reused by the server.
//
// An idle WebSocket session costs no goroutine on Linux: its reader goroutine
// runs only while the client sends, and the server's one poller goroutine
// (epoll, started with the first WebSocket connection) starts a new one when
// the connection becomes readable or closes. The writer goroutine likewise
// runs only while there is something to write, reads and writes use pooled
// buffers only while they happen, and heartbeats use runtime timers: about
// 3.4 KiB of server memory per idle WebSocket session in all
// (BenchmarkIdleWebSocketMemory). On other systems, over TLS, and with
// PerMessageDeflate negotiated, each WebSocket session keeps a reader
// goroutine blocked in its read instead (about 8 KiB per idle session).
//
// Stop the server with Shutdown or Close, which close every session, stop the
// poller and wait for the server's goroutines; http.Server.Shutdown alone does
// not close hijacked WebSocket connections.
package engineio
