package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/durasock/durasock/parser"
)

// Errors an Adapter returns.
var (
	// ErrClosed is returned by every operation on a closed adapter.
	ErrClosed = errors.New("adapter: closed")
	// ErrUnavailable is returned by cross-node requests (fetch, server-side emit with
	// acks) when the cluster bus cannot carry them now. Broadcasts do not return it
	// while the bus can still buffer them.
	ErrUnavailable = errors.New("adapter: cluster unavailable")
)

// Options selects the sockets an operation applies to, cluster-wide.
//
// A socket matches when it is in at least one of Rooms (or Rooms is empty) and in
// none of Except. Every socket is in the room named by its own id.
type Options struct {
	Rooms  []string
	Except []string
	// Local restricts the operation to this node.
	Local bool
	// Volatile broadcasts may be dropped for a socket that is not ready to write.
	Volatile bool
	// NoCompress asks that the packet be sent without per-message compression
	// (the reference server's compress(false)); the zero value compresses as
	// the transport is configured to. Memory passes it to sockets that are
	// UncompressedWriters.
	NoCompress bool
	// Recoverable marks a broadcast that connection state recovery must be able
	// to replay: an adapter that implements SessionStore appends a recovery
	// offset to the event for every node's clients. Other adapters ignore it.
	Recoverable bool
}

// Namespace is what an adapter serves: one Socket.IO namespace on this node. The
// socketio package implements it.
type Namespace interface {
	Name() string
	// Socket returns the socket with this id connected to this node, or nil.
	Socket(id string) Socket
	// NextAckID returns a fresh ack id, unique within the namespace on this node.
	NextAckID() uint64
	// HandleServerSideEmit delivers an event emitted by another server process with
	// ServerSideEmit. reply is nil when the emitter wants no acknowledgement; when it
	// is not nil the handler must call it at most once.
	HandleServerSideEmit(event string, args []json.RawMessage, reply func(args []json.RawMessage))
}

// RoomObserver is implemented by a Namespace that wants to know when the rooms
// of this node change (the socketio package: Namespace.OnCreateRoom and the
// like). Memory, and so every cluster adapter built on it, reports every
// change of local membership to it, after the change, in order, outside its
// locks, on the goroutine that made the change.
type RoomObserver interface {
	// ObservesRooms reports whether RoomChanged wants calls at all; it is
	// asked before each membership change, so that nothing is collected when
	// nobody listens.
	ObservesRooms() bool
	// RoomChanged reports one change. It must not block.
	RoomChanged(c RoomChange)
}

// RoomChangeKind says what happened to a room.
type RoomChangeKind uint8

// Room changes, as the reference server's adapter events name them:
// "create-room", "join-room", "leave-room", "delete-room".
const (
	RoomCreated RoomChangeKind = iota + 1 // the first socket joined the room
	RoomJoined                            // a socket joined the room
	RoomLeft                              // a socket left the room
	RoomDeleted                           // the last socket left the room
)

// RoomChange is one change of local room membership. ID is the socket, empty
// for RoomCreated and RoomDeleted. A socket's own room (named by its id) is
// created when it connects and deleted when it disconnects, like any other.
type RoomChange struct {
	Kind RoomChangeKind
	Room string
	ID   string
}

// Socket is a socket connected to this node, as an adapter sees it.
type Socket interface {
	ID() string
	// Write queues an encoded packet. A volatile write may be dropped when the
	// socket is not writable right now. Write never blocks on the network.
	Write(e *parser.Encoded, volatile bool)
	// ExpectAck registers fn for the client's ACK with this id. The registration
	// is removed when the ACK arrives, when the socket disconnects, or by ForgetAck.
	ExpectAck(id uint64, fn func(args []json.RawMessage))
	ForgetAck(id uint64)
	// Disconnect disconnects the socket from the namespace; with closeConn the
	// underlying connection (every namespace on it) is closed too.
	Disconnect(closeConn bool)
	// Info describes the socket for FetchSockets.
	Info() SocketInfo
}

// PacedSocket is a Socket that can make a delivery wait for room in its send
// queue instead of overflowing it. Memory.BroadcastPaced uses it; a Socket
// without it is written to with Write.
type PacedSocket interface {
	Socket
	// WritePaced queues e as Write(e, false) does, after waiting while the
	// socket's send queue has no room for it in the share kept for deliveries
	// that may wait. It returns nil once e is queued (or kept for a client that
	// is away, see connection state recovery); an error when the socket is
	// disconnected, or is cut meanwhile because its client took nothing for the
	// transport's slow-client timeout; ctx's error when ctx is done first.
	WritePaced(ctx context.Context, e *parser.Encoded) error
}

// UncompressedWriter is a Socket that can write a packet with per-message
// compression off (Options.NoCompress). A Socket without it is written to as
// usual.
type UncompressedWriter interface {
	// WriteUncompressed writes e as Write(e, volatile) does or, with paced, as
	// PacedSocket.WritePaced(ctx, e) does (and returns what it returns), with
	// compression off for e's messages.
	WriteUncompressed(ctx context.Context, e *parser.Encoded, volatile, paced bool) error
}

// PacedBroadcaster is implemented by adapters that can deliver a broadcast at
// the pace of its recipients (Memory). A cluster adapter uses it to apply what
// other nodes published, which may arrive as a backlog after an outage.
type PacedBroadcaster interface {
	// BroadcastPaced delivers p to the matching local sockets as Broadcast does,
	// waiting while a recipient's send queue is full (see PacedSocket). It
	// returns the number of sockets written to.
	BroadcastPaced(ctx context.Context, p *parser.Packet, opts Options) (int, error)
}

// SocketInfo describes a socket anywhere in the cluster.
type SocketInfo struct {
	ID        string          `json:"id"`
	Node      string          `json:"node,omitempty"`
	Rooms     []string        `json:"rooms"`
	Data      json.RawMessage `json:"data,omitempty"`
	Handshake Handshake       `json:"handshake"`
}

// Handshake is what a socket presented when it connected.
type Handshake struct {
	Headers map[string][]string `json:"headers"`
	Query   map[string][]string `json:"query"`
	Auth    json.RawMessage     `json:"auth,omitempty"`
	Address string              `json:"address"`
	Time    time.Time           `json:"time"`
	Secure  bool                `json:"secure"`
	URL     string              `json:"url"`
}

// Reply is one acknowledgement collected by BroadcastWithAck or ServerSideEmit.
type Reply struct {
	// From is the replying socket (BroadcastWithAck) or node (ServerSideEmit).
	From string
	Args []json.RawMessage
}

// MissingRepliesError is returned, with the replies that did arrive, when a request
// that collects replies runs out of time.
type MissingRepliesError struct {
	Expected int      // replies expected (as far as known when time ran out)
	Received int      // replies received
	Missing  []string // sockets or nodes known not to have replied
	Err      error    // the context's error
}

func (e *MissingRepliesError) Error() string {
	return "adapter: " + itoa(e.Received) + " of " + itoa(e.Expected) + " replies before timeout" + missingList(e.Missing)
}

func (e *MissingRepliesError) Unwrap() error { return e.Err }

// Adapter routes the operations of one namespace to the matching sockets on this
// node and, for a cluster adapter, on every other node.
//
// Delivery contract:
//   - Local first: the matching sockets on this node receive a broadcast before
//     Broadcast returns, whatever the state of the cluster bus (G1).
//   - Accepted or rejected: Broadcast returns nil when the cross-node part was
//     accepted for delivery (for a reliable bus: written to its outbox), or an error
//     at once. An accepted broadcast reaches every matching socket on every node
//     exactly once, in the order this node issued it, unless the bus reports a
//     counted drop (outbox bounds, max age).
//   - Requests (FetchSockets, ServerSideEmit, BroadcastWithAck, and the socket
//     operations AddSockets/DelSockets/DisconnectSockets) are bounded by ctx and never hang.
//
// Membership (Join, Leave, LeaveAll, Rooms) is state of this node and never blocks.
type Adapter interface {
	Join(id string, rooms ...string)
	Leave(id string, rooms ...string)
	LeaveAll(id string)
	Rooms(id string) []string

	// Broadcast sends p (an EVENT or BINARY_EVENT of this namespace) to every
	// matching socket. p is encoded once per node.
	Broadcast(ctx context.Context, p *parser.Packet, opts Options) error
	// BroadcastWithAck sends p to every matching socket with an ack id and collects
	// every reply until all arrived or ctx is done; then it returns what arrived and
	// a *MissingRepliesError.
	BroadcastWithAck(ctx context.Context, p *parser.Packet, opts Options) ([]Reply, error)

	// AddSockets makes every matching socket join rooms; DelSockets makes them leave.
	AddSockets(ctx context.Context, opts Options, rooms []string) error
	DelSockets(ctx context.Context, opts Options, rooms []string) error
	// DisconnectSockets disconnects every matching socket.
	DisconnectSockets(ctx context.Context, opts Options, closeConn bool) error
	// FetchSockets describes every matching socket.
	FetchSockets(ctx context.Context, opts Options) ([]SocketInfo, error)

	// ServerSideEmit delivers an event to the namespace on every other node. With
	// wantReplies it collects one Reply per node until ctx is done.
	ServerSideEmit(ctx context.Context, event string, args []json.RawMessage, wantReplies bool) ([]Reply, error)

	// Close releases the adapter. Operations afterwards return ErrClosed.
	Close() error
}

// Factory makes the adapter of a namespace. socketio calls it once per namespace.
type Factory func(nsp Namespace) (Adapter, error)

func itoa(n int) string { return strconv.Itoa(n) }

func missingList(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	const most = 10
	s := "; missing:"
	for i, id := range ids {
		if i == most {
			s += " …(" + itoa(len(ids)-most) + " more)"
			break
		}
		s += " " + id
	}
	return s
}
