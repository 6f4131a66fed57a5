package emitter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	_ "github.com/durasock/durasock/cluster" // sets the encoders of internal/clusterwire
	"github.com/durasock/durasock/internal/clusterwire"
	"github.com/durasock/durasock/parser"
)

// ErrInvalidNamespace is returned for a namespace that does not start with "/".
var ErrInvalidNamespace = errors.New("emitter: namespace must start with /")

// Emitter publishes broadcasts and room operations into a cluster. It is safe for
// concurrent use; it never receives anything.
type Emitter struct {
	bus bus.Bus
}

// New returns an emitter that publishes through b. The caller keeps owning b and
// closes it (giving the outbox time to drain) when done.
func New(b bus.Bus) *Emitter { return &Emitter{bus: b} }

// ErrNoSync is returned by Sync when the emitter's bus cannot tell when Redis
// holds what it accepted (it does not implement bus.Syncer).
var ErrNoSync = errors.New("emitter: the bus cannot confirm publication")

// Sync waits until Redis holds every message this emitter's bus accepted before
// the call (and the replicas the bus waits for confirmed them). Emit answers as
// soon as a message is in the bus's outbox, in this process's memory: a process
// that exits or crashes before the outbox drained loses what is left. Call Sync
// (or close the bus with enough time) before exiting, and before telling anyone
// that an event is on its way when that promise must survive a crash.
//
// It returns nil when all were published, an error wrapping bus.ErrDropped when
// a bound of the outbox dropped some of them, and ctx.Err() when ctx ended first
// (the messages stay queued and are delivered when Redis takes them).
func (e *Emitter) Sync(ctx context.Context) error {
	s, ok := e.bus.(bus.Syncer)
	if !ok {
		return ErrNoSync
	}
	return s.Sync(ctx)
}

// Of selects a namespace ("/" is the main one).
func (e *Emitter) Of(nsp string) Operator { return Operator{e: e, nsp: nsp} }

// To selects the sockets in any of rooms of the main namespace.
func (e *Emitter) To(rooms ...string) Operator { return e.Of("/").To(rooms...) }

// Emit broadcasts to every socket of the main namespace.
func (e *Emitter) Emit(ctx context.Context, event string, args ...any) error {
	return e.Of("/").Emit(ctx, event, args...)
}

// Operator is a selection of sockets: a namespace, rooms and excluded rooms. It
// is a value; every method returns a new one.
type Operator struct {
	e      *Emitter
	nsp    string
	rooms  []string
	except []string
}

// To adds rooms to the selection: a socket in any of them matches.
func (o Operator) To(rooms ...string) Operator {
	o.rooms = append(slices.Clip(o.rooms), rooms...)
	return o
}

// In is the same as To.
func (o Operator) In(rooms ...string) Operator { return o.To(rooms...) }

// Except excludes the sockets in any of rooms.
func (o Operator) Except(rooms ...string) Operator {
	o.except = append(slices.Clip(o.except), rooms...)
	return o
}

func (o Operator) opts() adapter.Options { return adapter.Options{Rooms: o.rooms, Except: o.except} }

func (o Operator) publish(ctx context.Context, payload []byte) error {
	if len(o.nsp) == 0 || o.nsp[0] != '/' {
		return fmt.Errorf("%w: %q", ErrInvalidNamespace, o.nsp)
	}
	return o.e.bus.Publish(ctx, clusterwire.PartitionKey(o.nsp), payload)
}

// Emit broadcasts an event to the selected sockets on every server. Arguments are
// marshalled to JSON once; a []byte argument travels as a binary attachment and a
// json.RawMessage byte for byte. It returns the bus's error at once when the
// outbox refuses the message (bus.ErrOutboxFull, bus.ErrClosed).
func (o Operator) Emit(ctx context.Context, event string, args ...any) error {
	if event == "" {
		return errors.New("emitter: empty event name")
	}
	p, err := parser.EventPacket(o.nsp, event, args...)
	if err != nil {
		return fmt.Errorf("emitter: %w", err)
	}
	payload, err := clusterwire.Broadcast(o.nsp, p, o.opts())
	if err != nil {
		return fmt.Errorf("emitter: %w", err)
	}
	return o.publish(ctx, payload)
}

// SocketsJoin makes the selected sockets join rooms, on every server.
func (o Operator) SocketsJoin(ctx context.Context, rooms ...string) error {
	return o.publish(ctx, clusterwire.AddSockets(o.nsp, o.opts(), rooms))
}

// SocketsLeave makes the selected sockets leave rooms, on every server.
func (o Operator) SocketsLeave(ctx context.Context, rooms ...string) error {
	return o.publish(ctx, clusterwire.DelSockets(o.nsp, o.opts(), rooms))
}

// DisconnectSockets disconnects the selected sockets; with closeConn their whole
// connection (every namespace) is closed.
func (o Operator) DisconnectSockets(ctx context.Context, closeConn bool) error {
	return o.publish(ctx, clusterwire.DisconnectSockets(o.nsp, o.opts(), closeConn))
}

// ServerSideEmit delivers an event to the namespace's server-side handlers
// (Namespace.OnServerSideEmit) on every server. Replies are not collected.
func (o Operator) ServerSideEmit(ctx context.Context, event string, args ...any) error {
	raw := make([]json.RawMessage, len(args))
	for i, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("emitter: argument %d: %w", i, err)
		}
		raw[i] = b
	}
	payload, err := clusterwire.ServerSideEmit(o.nsp, event, raw)
	if err != nil {
		return fmt.Errorf("emitter: %w", err)
	}
	return o.publish(ctx, payload)
}
