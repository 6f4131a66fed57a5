package cluster

import (
	"encoding/json"
	"fmt"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/internal/clusterwire"
	"github.com/durasock/durasock/parser"
)

// The encoders below let a process that is not a Socket.IO server (package
// emitter) publish into a cluster: it gives the bytes to bus.Publish with
// partitionKey(nsp) as the key, and every node applies them as if one of its
// peers had issued them, in order with the other messages of the publishing
// node. They reach emitter through internal/clusterwire, not through this
// package's API.
func init() {
	clusterwire.PartitionKey = partitionKey
	clusterwire.Broadcast = encodeBroadcast
	clusterwire.AddSockets = encodeAddSockets
	clusterwire.DelSockets = encodeDelSockets
	clusterwire.DisconnectSockets = encodeDisconnectSockets
	clusterwire.ServerSideEmit = encodeServerSideEmit
}

// partitionKey is the bus key of the reliable messages of namespace nsp. A
// node publishes every message of a namespace — broadcasts, socket operations,
// server-side emits and requests — under this one key: that is what keeps them
// in the order issued on every other node.
func partitionKey(nsp string) string { return nsp }

// encodeBroadcast returns the cluster message that broadcasts p (an EVENT or
// BINARY_EVENT without ack id) to the sockets of namespace nsp that opts
// selects (opts.Local is meaningless here and ignored).
func encodeBroadcast(nsp string, p *parser.Packet, opts adapter.Options) ([]byte, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil packet", adapter.ErrInvalidPacket)
	}
	if p.HasID {
		return nil, fmt.Errorf("%w: a broadcast carries no ack id", adapter.ErrInvalidPacket)
	}
	m := &message{
		kind: kindBroadcast, nsp: nsp, flags: selectorFlags(opts),
		rooms: opts.Rooms, except: opts.Except,
		ptype: p.Type, data: p.Data, attachments: p.Attachments,
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", adapter.ErrInvalidPacket, err)
	}
	return m.marshal(), nil
}

// encodeAddSockets returns the cluster message that makes the sockets opts
// selects in namespace nsp join rooms.
func encodeAddSockets(nsp string, opts adapter.Options, rooms []string) []byte {
	return (&message{kind: kindAddSockets, nsp: nsp, rooms: opts.Rooms, except: opts.Except, target: rooms}).marshal()
}

// encodeDelSockets returns the cluster message that makes the sockets opts
// selects in namespace nsp leave rooms.
func encodeDelSockets(nsp string, opts adapter.Options, rooms []string) []byte {
	return (&message{kind: kindDelSockets, nsp: nsp, rooms: opts.Rooms, except: opts.Except, target: rooms}).marshal()
}

// encodeDisconnectSockets returns the cluster message that disconnects the
// sockets opts selects in namespace nsp.
func encodeDisconnectSockets(nsp string, opts adapter.Options, closeConn bool) []byte {
	m := &message{kind: kindDisconnect, nsp: nsp, rooms: opts.Rooms, except: opts.Except}
	if closeConn {
		m.flags = flagCloseConn
	}
	return m.marshal()
}

// encodeServerSideEmit returns the cluster message that delivers a server-side
// event (without replies) to namespace nsp on every node.
func encodeServerSideEmit(nsp, event string, args []json.RawMessage) ([]byte, error) {
	if err := adapter.CheckEvent(event); err != nil {
		return nil, fmt.Errorf("cluster: server-side emit: %w", err)
	}
	return (&message{kind: kindServerEmit, nsp: nsp, event: event, args: jsonArgs(args)}).marshal(), nil
}
