// Package socketio is a Socket.IO v5 server on top of package engineio.
//
// Start with NewServer and mount the Server on "/socket.io/". Register what
// happens when a client connects with OnConnection (the main namespace "/") or
// Server.Of(name).OnConnection, and the events of a socket with Socket.On:
//
//	srv := socketio.NewServer(nil)
//	srv.OnConnection(func(s *socketio.Socket) {
//		s.On("chat", func(e *socketio.Event) {
//			var m Message
//			if err := e.Bind(&m); err != nil {
//				return
//			}
//			s.To("lobby").Emit(context.Background(), "chat", m)
//			e.Ack("ok")
//		})
//	})
//	http.Handle("/socket.io/", srv)
//
// Arguments travel as JSON: Emit marshals Go values once (a json.RawMessage is
// copied byte for byte, and a []byte becomes a binary attachment at any depth: an
// argument, a struct field, a map value or a slice element), and Event.Bind
// decodes the arguments a client sent into Go values. Event.Values keeps binary as
// binary at any depth too (see RawArg), so forwarding an event delivers Buffers
// where the sender had them. Acknowledgements work both
// ways: Event.Ack answers a client, and EmitWithAck waits for the client's answer
// within a context.
//
// Rooms, broadcasts (Namespace.To, Except, Volatile, Local), FetchSockets and
// server-side events go through the namespace's adapter.Adapter: the in-memory
// adapter by default, or a cluster adapter (package cluster) so that many server
// processes serve one application. A broadcast is encoded once and the same bytes
// are written to every recipient.
//
// With Options.Recovery a client whose connection broke and that comes back
// within a bounded time gets its socket back (same id, rooms and data) and every
// event it missed, whichever server process or adapter sent them (see
// RecoveryOptions).
//
// Handlers of one socket run one at a time, in the order the packets arrived,
// on a goroutine of their own, so a handler may block (for example on EmitWithAck)
// without stopping the connection from reading. Each namespace of a connection
// has its own such goroutine: a slow handler in one namespace does not hold up
// the others. An event registered with Concurrent, or every event of a namespace
// after Namespace.SetConcurrency, runs on goroutines of its own instead, up to a
// bound per socket. Stop the server with Shutdown.
//
// # Coming from the Node.js server
//
// docs/NODE-PARITY.md maps every API and option of socket.io 4.8's server to
// this package. In short: socket.request is Socket.Request (and the values of
// the request's context are in Socket.Context and in the ctx of connect
// middleware), socket.use is Socket.Use, several listeners per event with On
// (which returns the function that removes it), Off, OnAny, PrependAny,
// OnAnyOutgoing, room events with Namespace.OnCreateRoom and the like, the
// engine's cookie, headers hooks and connection_error in engineio.Options.
//
// # Queues
//
// Two bounds apply to a connection, one per direction. Options.EventQueueSize
// bounds the incoming packets waiting for their handlers: when it is full the
// connection stops reading from that client until a handler returns, so nothing
// is dropped and nobody is disconnected. Outgoing packets have no queue in this
// package: Emit, broadcasts and acks hand each packet at once to the Engine.IO
// session, as one message plus one per binary attachment, and the session's
// send queue (engineio Options.SendQueueSize messages and SendQueueBytes bytes)
// is the only outbound bound. When the node's own emits overflow it, the
// session closes with ReasonSendQueueFull: size it for the largest burst of
// this node's emits one client may receive at once. What a cluster adapter
// delivers for other nodes, which after a Redis outage arrives as a backlog,
// does not have to fit: it is written paced (adapter.PacedSocket), which waits for
// room in the first half of the queue (the second half stays free for this
// node's emits, which never wait), so the backlog reaches each client at the
// pace the client reads it. A client that takes nothing for engineio
// Options.SlowClientTimeout (default 10s) while such a delivery waits is cut
// with ReasonSlowClient; every cut is counted (engineio Server.Stats and
// durasock_engineio_clients_cut_total) and logged as a warning.
// Connection state recovery replays the missed events the same way; a client
// that missed more messages than the send queue holds is given a new session
// rather than recovered into a queue that would overflow (see RecoveryOptions).
//
// # Options and logs
//
// As in every package of the module, a constructor takes a pointer to its
// options (nil gives the defaults; a zero field takes its default, -1 disables
// where that makes sense), and a nil Logger means slog.Default(): warnings
// (a client cut, a refused request, a dropped event) reach the process's log
// unless a Logger says otherwise; pass slog.New(slog.DiscardHandler) to
// silence them. Debug lines follow the logger's level.
//
// # Dynamic namespaces
//
// OfFunc and OfRegexp create namespaces on demand. Options.MaxChildNamespaces
// bounds how many exist at once, and Options.CleanupEmptyChildNamespaces removes
// those whose last socket left.
package socketio
