package socketio

import (
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/parser"
)

// Defaults applied to zero fields of Options.
const (
	DefaultConnectTimeout = 45 * time.Second
	DefaultAckTimeout     = 30 * time.Second
	DefaultEventQueueSize = 128
	// DefaultEventQueueBytes bounds the bytes of the incoming packets of one
	// connection waiting for their handlers (see Options.EventQueueBytes).
	DefaultEventQueueBytes = 4 << 20
	// DefaultMaxChildNamespaces bounds the namespaces OfFunc and OfRegexp
	// parents create (see Options.MaxChildNamespaces).
	DefaultMaxChildNamespaces = 10_000
)

// Options configures a Server. The zero value of every field means its default;
// a nil *Options gives a server with the reference server's defaults.
type Options struct {
	// Options configures the Engine.IO layer: heartbeats, payload limit,
	// transports, CORS, send queue. Its Logger (default slog.Default()) is
	// also the Socket.IO logger.
	engineio.Options

	// ConnectTimeout closes a connection that has not joined any namespace by
	// then. Default 45s.
	ConnectTimeout time.Duration
	// AckTimeout bounds EmitWithAck when its context has no deadline. Default 30s.
	AckTimeout time.Duration
	// Adapter makes the adapter of each namespace. Default adapter.NewMemory.
	Adapter adapter.Factory
	// MaxAttachments bounds the binary attachments of one incoming packet; more
	// closes the connection with "parse error". Default
	// parser.DefaultMaxAttachments.
	MaxAttachments int
	// MaxAttachmentBytes bounds the bytes of the binary attachments of one
	// incoming packet, which the connection holds until the last one arrives
	// (each one is also bounded by MaxPayload). More closes the connection with
	// ReasonAttachmentsTooLarge, counted in
	// durasock_socketio_clients_cut_total. Default
	// parser.DefaultMaxAttachmentBytes (8 MiB).
	MaxAttachmentBytes int
	// Recovery, when not nil, enables connection state recovery.
	Recovery *RecoveryOptions
	// EventQueueSize bounds the incoming packets of one connection waiting for
	// their handlers. When it is full the connection stops reading until a
	// handler returns. Default 128. It has nothing to do with outgoing packets,
	// which go straight to the Engine.IO send queue (SendQueueSize, see the
	// package documentation).
	EventQueueSize int
	// EventQueueBytes bounds the same queue in bytes (packet data and
	// attachments), so that a client sending large events to handlers that
	// take their time holds at most this much, not EventQueueSize times
	// MaxPayload: the connection stops reading until handlers catch up. A
	// packet larger than the bound is taken when the queue is empty. Default
	// DefaultEventQueueBytes (4 MiB); -1 removes the bound.
	EventQueueBytes int
	// CleanupEmptyChildNamespaces removes a namespace that an OfFunc or OfRegexp
	// parent created when its last socket leaves (and no disconnected session
	// waits for its client, see RecoveryOptions): its adapter is closed, and a
	// later client asking for the same name gets a new namespace. Off by
	// default, as in the reference server, because a *Namespace the application
	// kept (from Socket.Namespace) then no longer reaches the sockets of the
	// namespace created afterwards under the same name; broadcasts on the parent
	// always reach the current ones. Turn it on when names come and go (one per
	// user, per document, per game), so that memory follows the namespaces in
	// use rather than every name ever asked for.
	CleanupEmptyChildNamespaces bool
	// MaxChildNamespaces bounds how many namespaces OfFunc and OfRegexp parents
	// may have created and that exist at once, so that a permissive matcher
	// cannot grow memory without limit (each namespace holds an adapter; a
	// cluster adapter also its bus subscription). A client asking for a new name
	// beyond it gets CONNECT_ERROR {"message":"Too many namespaces"}; names that
	// exist keep working. Without CleanupEmptyChildNamespaces the count never
	// drops. Default DefaultMaxChildNamespaces; -1 removes the bound.
	MaxChildNamespaces int
	// Parser is the wire format spoken with every client: parser.JSON (the
	// default) or parser.Msgpack, for clients built with the npm package
	// socket.io-msgpack-parser. Adapters and the cluster carry packets in one
	// form whatever the parser, so servers with different parsers can share a
	// cluster.
	Parser parser.Parser
}

func (o *Options) resolved() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.ConnectTimeout <= 0 {
		r.ConnectTimeout = DefaultConnectTimeout
	}
	if r.AckTimeout <= 0 {
		r.AckTimeout = DefaultAckTimeout
	}
	if r.Adapter == nil {
		r.Adapter = adapter.NewMemory
	}
	if r.MaxAttachments <= 0 {
		r.MaxAttachments = parser.DefaultMaxAttachments
	}
	if r.MaxAttachmentBytes <= 0 {
		r.MaxAttachmentBytes = parser.DefaultMaxAttachmentBytes
	}
	r.Recovery = r.Recovery.resolved()
	if r.MaxChildNamespaces == 0 {
		r.MaxChildNamespaces = DefaultMaxChildNamespaces
	}
	if r.Parser == nil {
		r.Parser = parser.JSON
	}
	if r.EventQueueSize <= 0 {
		r.EventQueueSize = DefaultEventQueueSize
	}
	switch {
	case r.EventQueueBytes == 0:
		r.EventQueueBytes = DefaultEventQueueBytes
	case r.EventQueueBytes < 0:
		r.EventQueueBytes = -1
	}
	return r
}
