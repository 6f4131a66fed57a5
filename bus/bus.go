package bus

import (
	"context"
	"errors"
	"time"
)

// Errors returned by a Bus.
var (
	// ErrOutboxFull is returned by Publish at once when the outbox is at its bounds
	// and the overflow policy is reject-new. Nothing was accepted.
	ErrOutboxFull = errors.New("bus: outbox full")
	// ErrTooLarge is returned by Publish for a payload above the outbox byte bound.
	ErrTooLarge = errors.New("bus: message larger than the outbox")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("bus: closed")
	// ErrNotConnected is returned by Send (the best-effort plane) when the broker
	// is not reachable now. Send never buffers.
	ErrNotConnected = errors.New("bus: not connected")
)

// Message is a bus message as a receiver sees it.
type Message struct {
	// Origin is the node id of the publisher.
	Origin string
	// Seq is the per-origin, per-partition sequence of a Publish (1, 2, 3, …); 0 for
	// a message sent with Send.
	Seq uint64
	// Partition is the partition the message travelled on (Publish only).
	Partition int
	// Payload is the bytes given to Publish or Send; the handler owns them.
	Payload []byte
}

// Handler receives messages from other nodes (never the node's own). Calls are
// sequential per partition: messages of one origin on one partition arrive in the
// order published, each exactly once.
type Handler func(m Message)

// State is the connection state of a bus.
type State int

// Bus states.
const (
	// Connected: publishing and receiving work.
	Connected State = iota + 1
	// Reconnecting: the broker is unreachable; Publish still accepts into the
	// outbox within its bounds; the bus retries with backoff.
	Reconnecting
	// Failed: reconnect attempts reached their configured maximum. The bus keeps
	// buffering within bounds and keeps trying at the backoff cap.
	Failed
	// Closed: Close was called.
	Closed
)

func (s State) String() string {
	switch s {
	case Connected:
		return "connected"
	case Reconnecting:
		return "reconnecting"
	case Failed:
		return "failed"
	case Closed:
		return "closed"
	}
	return "unknown"
}

// Status is a snapshot of a bus for health checks and humans.
type Status struct {
	State        State         `json:"-"`
	StateName    string        `json:"state"`
	Since        time.Time     `json:"since"`
	Attempt      int           `json:"attempt,omitempty"`
	NextRetry    time.Duration `json:"next_retry,omitempty"`
	LastError    string        `json:"last_error,omitempty"`
	OutboxLen    int           `json:"outbox_messages"`
	OutboxBytes  int64         `json:"outbox_bytes"`
	OutboxOldest time.Duration `json:"outbox_oldest_age"`
	Nodes        []string      `json:"nodes,omitempty"`

	// UnderReplicated is set while the broker has written messages that its
	// replicas have not acknowledged (a transport with WaitReplicas): they stay
	// in the outbox and the bus waits for the replicas, without publishing them
	// again. The bus stays Connected; see docs/RELIABILITY.md.
	UnderReplicated bool `json:"under_replicated,omitempty"`
}

// Bus carries one node's messages to every other node of a cluster.
//
// Contract (docs/RELIABILITY.md):
//   - Publish either accepts the payload into the local outbox and returns nil, or
//     returns an error at once (ErrOutboxFull, ErrTooLarge, ErrClosed). It never
//     waits for the broker.
//   - An accepted payload reaches the Handler of every other node exactly once and
//     in order per (origin, partition), across reconnects and replays, unless it is
//     dropped by a configured bound (max age, drop-oldest), which is counted,
//     logged and passed to the drop hook.
//   - A sequence gap caused by the broker losing data is detected, counted and
//     logged by the receiver.
//   - Send is the best-effort plane for requests and replies: it fails fast with
//     ErrNotConnected when the broker is unreachable and never buffers.
type Bus interface {
	// NodeID is this node's id, unique in the cluster.
	NodeID() string
	// Publish accepts payload for ordered, exactly-once delivery to every other
	// node. key picks the partition (messages with one key keep their order).
	Publish(ctx context.Context, key string, payload []byte) error
	// Receive sets the handler of messages from other nodes and starts receiving.
	// It is called once; the handler gets nothing before it. Where the broker
	// keeps history (the streams transport, the memory hub), the reliable plane
	// starts when the bus is created (New), so what other nodes publish between
	// New and Receive is delivered at Receive; pub/sub keeps no history and
	// starts at Receive.
	Receive(h Handler)
	// Send delivers payload to node to, or to every other node when to is "".
	Send(ctx context.Context, to string, payload []byte) error
	// Status reports the state and the outbox.
	Status() Status
	// StateChanged returns a channel closed at the next state change.
	StateChanged() <-chan struct{}
	// Close stops the bus; it is idempotent. Messages still in the outbox are
	// given until ctx is done to leave.
	Close(ctx context.Context) error
}
