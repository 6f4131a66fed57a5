package socketio

import (
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/socketio/parser"
)

// Defaults applied to zero fields of Options.
const (
	DefaultConnectTimeout = 45 * time.Second
	DefaultAckTimeout     = 30 * time.Second
	DefaultEventQueueSize = 128
)

// Options configures a Server. The zero value of every field means its default;
// a nil *Options gives a server with the reference server's defaults.
type Options struct {
	// Options configures the Engine.IO layer: heartbeats, payload limit,
	// transports, CORS, send queue. Its Logger is also the Socket.IO logger.
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
	// Recovery, when not nil, enables connection state recovery.
	Recovery *RecoveryOptions
	// EventQueueSize bounds the packets of one connection waiting for their
	// handlers. When it is full the connection stops reading until a handler
	// returns. Default 128.
	EventQueueSize int
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
	r.Recovery = r.Recovery.resolved()
	if r.EventQueueSize <= 0 {
		r.EventQueueSize = DefaultEventQueueSize
	}
	return r
}
