package socketio

import (
	"context"
	"encoding/json"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// The adapter's side of a namespace and of its sockets.
//
// An adapter (the in-memory one, package cluster's, or an application's own)
// reaches the server through the interfaces of package adapter:
// adapter.Namespace (fresh ack ids, server-side events, a local socket by id),
// adapter.RoomObserver (room events), adapter.Socket, adapter.PacedSocket and
// adapter.UncompressedWriter (writing an encoded packet, registering its ack,
// describing the socket). These are plumbing: an application emits, waits for
// acks and describes sockets with Emit, EmitWithAck and FetchSockets. So
// *Namespace and *Socket do not carry those methods. The adapter factory is
// given the namespace as an adapterNamespace, and its Socket(id) returns
// adapterSockets: the same values under types of this package whose methods
// implement the adapter interfaces (a pointer conversion, nothing allocated).
// Those interfaces are the only contract between the server and an adapter;
// package adapter documents each method.
type (
	adapterNamespace Namespace
	adapterSocket    Socket
)

var (
	_ adapter.Namespace          = (*adapterNamespace)(nil)
	_ adapter.RoomObserver       = (*adapterNamespace)(nil)
	_ adapter.PacedSocket        = (*adapterSocket)(nil)
	_ adapter.UncompressedWriter = (*adapterSocket)(nil)
)

// forAdapter returns the namespace as its adapter sees it.
func (n *Namespace) forAdapter() *adapterNamespace { return (*adapterNamespace)(n) }

func (a *adapterNamespace) nsp() *Namespace { return (*Namespace)(a) }

// Name returns the namespace name.
func (a *adapterNamespace) Name() string { return a.name }

// Socket returns the socket with this id connected to this server, or nil.
func (a *adapterNamespace) Socket(id string) adapter.Socket {
	if s := a.nsp().LocalSocket(id); s != nil {
		return (*adapterSocket)(s)
	}
	return nil
}

// NextAckID returns a fresh ack id.
func (a *adapterNamespace) NextAckID() uint64 { return a.nsp().nextAckID() }

// HandleServerSideEmit runs the handler registered with OnServerSideEmit.
func (a *adapterNamespace) HandleServerSideEmit(event string, args []json.RawMessage, reply func(args []json.RawMessage)) {
	a.nsp().handleServerSideEmit(event, args, reply)
}

// ObservesRooms reports whether room listeners exist.
func (a *adapterNamespace) ObservesRooms() bool { return a.nsp().observesRooms() }

// RoomChanged queues the room listeners of a change.
func (a *adapterNamespace) RoomChanged(c adapter.RoomChange) { a.nsp().roomChanged(c) }

func (a *adapterSocket) sock() *Socket { return (*Socket)(a) }

// ID returns the socket's id.
func (a *adapterSocket) ID() string { return a.id }

// Write queues an encoded packet for the client.
func (a *adapterSocket) Write(e *parser.Encoded, volatile bool) { a.sock().write(e, volatile, false) }

// WritePaced writes e after waiting for room in the send queue (see
// Socket.writePaced).
func (a *adapterSocket) WritePaced(ctx context.Context, e *parser.Encoded) error {
	return a.sock().writePaced(ctx, e, false)
}

// WriteUncompressed writes e as Write or, with paced, as WritePaced does,
// with per-message compression off.
func (a *adapterSocket) WriteUncompressed(ctx context.Context, e *parser.Encoded, volatile, paced bool) error {
	if paced {
		return a.sock().writePaced(ctx, e, true)
	}
	a.sock().write(e, volatile, true)
	return nil
}

// ExpectAck registers fn for the client's ACK with this id. fn runs on the
// connection's read goroutine and must not block.
func (a *adapterSocket) ExpectAck(id uint64, fn func(args []json.RawMessage)) {
	a.sock().expectAck(id, fn)
}

// ForgetAck removes the registration of ack id.
func (a *adapterSocket) ForgetAck(id uint64) { a.sock().forgetAck(id) }

// Disconnect disconnects the socket (see Socket.Disconnect).
func (a *adapterSocket) Disconnect(closeConn bool) { a.sock().Disconnect(closeConn) }

// Info describes the socket for FetchSockets.
func (a *adapterSocket) Info() adapter.SocketInfo { return a.sock().info() }
