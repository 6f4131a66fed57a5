package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/durasock/durasock/parser"
)

// ErrNoSession is returned by SessionStore.RestoreSession when the session
// cannot be restored: unknown or expired, or its missed events are no longer
// all available. The client then gets a new session.
var ErrNoSession = errors.New("adapter: no session to restore")

// Session is the state of a Socket.IO session that connection state recovery
// gives back to a client that reconnects.
type Session struct {
	// PID is the private id the client sends back to recover (never shown to
	// other clients).
	PID string `json:"pid"`
	// SID is the socket id.
	SID string `json:"sid"`
	// Rooms are the rooms the socket is in, its own id room excluded.
	Rooms []string `json:"rooms,omitempty"`
	// Data is what the application stored with the socket (JSON).
	Data json.RawMessage `json:"data,omitempty"`
}

// SessionStore is implemented by an adapter that keeps recoverable sessions
// where every node can restore them (the cluster adapter over a bus with
// history: Redis streams). When the server has connection state recovery on
// and its namespace adapter implements it, the server:
//   - marks every broadcast it hands to the adapter with Options.Recoverable
//     instead of appending an offset itself: the adapter appends one to what
//     each node writes to its clients;
//   - reports every session's state (SaveSession), when its connection breaks
//     (SessionAway) and when it ends (DropSession);
//   - asks RestoreSession for a client whose session is not on this node.
type SessionStore interface {
	// SaveSession records the state of a connected socket; keep is how long it
	// stays restorable after its connection breaks. It never blocks on the
	// network; it is called again whenever the rooms or the data change.
	SaveSession(s Session, keep time.Duration)
	// SessionAway says that the socket's connection broke: the session stays
	// restorable, on any node, for keep.
	SessionAway(pid string, keep time.Duration)
	// DropSession says that the session ended for good.
	DropSession(pid string)
	// RestoreSession takes the session pid and the events sent to it after
	// offset (the last offset its client received; "" for none), at most max of
	// them. It calls attach with them while this node delivers no other event
	// of the namespace, so that the socket attach adds misses nothing and gets
	// nothing twice; attach must not block. It returns an error wrapping
	// ErrNoSession when the session cannot be restored exactly.
	RestoreSession(ctx context.Context, pid, offset string, max int, attach func(Session, []*parser.Encoded) error) error
}
