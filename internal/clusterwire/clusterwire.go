// Package clusterwire hands package emitter the encoders of the cluster's bus
// messages without making them part of package cluster's API.
//
// An emitter publishes what a cluster node would publish, so it needs the
// message format, which only package cluster knows (docs/PROTOCOL.md,
// "Cluster messages"). Rather than export encoders from cluster for one
// caller, cluster sets the variables below when it is initialized. Package
// emitter imports cluster, so they are set before any emitter exists; a nil
// one means cluster is not linked into the program, which cannot happen
// through emitter.
package clusterwire

import (
	"encoding/json"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// The encoders of package cluster. Each returns the payload of one cluster
// message of namespace nsp, to publish on the bus with the key of
// PartitionKey(nsp).
var (
	// PartitionKey is the bus key of the reliable messages of namespace nsp:
	// a node publishes every message of a namespace under it, which keeps
	// them in the order issued on every other node.
	PartitionKey func(nsp string) string
	// Broadcast broadcasts p (an EVENT or BINARY_EVENT without ack id) to the
	// sockets opts selects; an invalid packet is an error wrapping
	// adapter.ErrInvalidPacket.
	Broadcast func(nsp string, p *parser.Packet, opts adapter.Options) ([]byte, error)
	// AddSockets makes the sockets opts selects join rooms.
	AddSockets func(nsp string, opts adapter.Options, rooms []string) []byte
	// DelSockets makes the sockets opts selects leave rooms.
	DelSockets func(nsp string, opts adapter.Options, rooms []string) []byte
	// DisconnectSockets disconnects the sockets opts selects; with closeConn
	// their whole connection.
	DisconnectSockets func(nsp string, opts adapter.Options, closeConn bool) []byte
	// ServerSideEmit delivers a server-side event, without replies, to the
	// namespace on every node; an empty event name is an error wrapping
	// adapter.ErrInvalidEvent.
	ServerSideEmit func(nsp, event string, args []json.RawMessage) ([]byte, error)
)
