package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// BroadcastOperator selects sockets of a namespace, cluster-wide, and acts on
// them. It is a value: every method returns a new operator and leaves the
// receiver unchanged, so a partial selection may be reused.
//
//	nsp.To("room1", "room2").Except("banned").Emit(ctx, "news", item)
type BroadcastOperator struct {
	nsp     *Namespace
	opts    adapter.Options
	timeout time.Duration
}

// newBroadcast returns a broadcast to every socket of n.
func newBroadcast(n *Namespace) BroadcastOperator { return BroadcastOperator{nsp: n} }

// To adds rooms: the selected sockets are those in at least one of the rooms.
func (b BroadcastOperator) To(rooms ...string) BroadcastOperator {
	b.opts.Rooms = append(slices.Clip(b.opts.Rooms), rooms...)
	return b
}

// In is To.
func (b BroadcastOperator) In(rooms ...string) BroadcastOperator { return b.To(rooms...) }

// Except leaves out the sockets in any of rooms (a socket id is a room).
func (b BroadcastOperator) Except(rooms ...string) BroadcastOperator {
	b.opts.Except = append(slices.Clip(b.opts.Except), rooms...)
	return b
}

// Local restricts the operation to the sockets of this server.
func (b BroadcastOperator) Local() BroadcastOperator {
	b.opts.Local = true
	return b
}

// Volatile lets the event be dropped for a socket that is not ready to write it
// right now, instead of queued.
func (b BroadcastOperator) Volatile() BroadcastOperator {
	b.opts.Volatile = true
	return b
}

// Compress sets whether the events are compressed (true, the default) or not:
// with false a WebSocket message is sent without permessage-deflate, and a
// polling response holding only such messages is not compressed. The flag
// travels with a cluster broadcast to every server.
func (b BroadcastOperator) Compress(compress bool) BroadcastOperator {
	b.opts.NoCompress = !compress
	return b
}

// Timeout bounds EmitWithAck, in addition to its ctx.
func (b BroadcastOperator) Timeout(d time.Duration) BroadcastOperator {
	b.timeout = d
	return b
}

// Emit sends an event to the selected sockets. The packet is built once and the
// adapter encodes it once; local recipients have it queued when Emit returns. An
// error means the event was not accepted for every server (see adapter.Adapter).
func (b BroadcastOperator) Emit(ctx context.Context, event string, args ...any) error {
	p, err := eventPacket(b.nsp.name, event, args)
	if err != nil {
		return err
	}
	opts := b.opts
	if !opts.Volatile {
		if b.nsp.srv.recovery != nil && b.nsp.sessionStore() != nil {
			opts.Recoverable = true // the adapter gives every node's clients an offset
		} else {
			b.nsp.srv.withOffset(p)
		}
	}
	targets, err := b.nsp.targets()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range targets {
		q := p
		if t != b.nsp {
			c := *p
			c.Namespace = t.name
			q = &c
		}
		if err := t.adapter.Broadcast(ctx, q, opts); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// EmitWithAck sends an event to the selected sockets and collects one reply per
// socket until every socket replied or ctx is done (bounded by Timeout, or by
// Options.AckTimeout when ctx has no deadline). When time runs out it returns the
// replies that arrived and an *adapter.MissingRepliesError naming the sockets
// that did not reply. Binary reply arguments stay binary (see Args).
func (b BroadcastOperator) EmitWithAck(ctx context.Context, event string, args ...any) ([]Reply, error) {
	r, err := b.emitWithAck(ctx, event, args)
	return replies(r), err
}

func (b BroadcastOperator) emitWithAck(ctx context.Context, event string, args []any) ([]adapter.Reply, error) {
	p, err := eventPacket(b.nsp.name, event, args)
	if err != nil {
		return nil, err
	}
	targets, err := b.nsp.targets()
	if err != nil {
		return nil, err
	}
	ctx, cancel := b.nsp.srv.ackContext(ctx, b.timeout)
	defer cancel()
	if len(targets) == 1 {
		return targets[0].adapter.BroadcastWithAck(ctx, p, b.opts)
	}
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		replies []adapter.Reply
		errs    []error
	)
	for _, t := range targets {
		c := *p
		c.Namespace = t.name
		wg.Go(func() {
			r, err := t.adapter.BroadcastWithAck(ctx, &c, b.opts)
			mu.Lock()
			defer mu.Unlock()
			replies = append(replies, r...)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return replies, mergeMissing(errs)
}

// mergeMissing combines the errors of several namespaces, summing
// MissingRepliesErrors into one.
func mergeMissing(errs []error) error {
	var merged *adapter.MissingRepliesError
	var other []error
	for _, err := range errs {
		var m *adapter.MissingRepliesError
		if errors.As(err, &m) {
			if merged == nil {
				merged = &adapter.MissingRepliesError{Err: m.Err}
			}
			merged.Expected += m.Expected
			merged.Received += m.Received
			merged.Missing = append(merged.Missing, m.Missing...)
			continue
		}
		other = append(other, err)
	}
	if merged != nil {
		other = append(other, merged)
	}
	return errors.Join(other...)
}

// FetchSockets describes the selected sockets on every server. The handles can
// emit to, join, leave and disconnect their socket wherever it is connected.
func (b BroadcastOperator) FetchSockets(ctx context.Context) ([]*RemoteSocket, error) {
	targets, err := b.nsp.targets()
	if err != nil {
		return nil, err
	}
	var out []*RemoteSocket
	for _, t := range targets {
		infos, err := t.adapter.FetchSockets(ctx, b.opts)
		for _, info := range infos {
			out = append(out, &RemoteSocket{
				ID: info.ID, Node: info.Node, Rooms: info.Rooms, Data: info.Data,
				Handshake: info.Handshake, nsp: t,
			})
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// SocketsJoin makes the selected sockets join rooms.
func (b BroadcastOperator) SocketsJoin(ctx context.Context, rooms ...string) error {
	return b.each(func(t *Namespace) error { return t.adapter.AddSockets(ctx, b.opts, rooms) })
}

// SocketsLeave makes the selected sockets leave rooms.
func (b BroadcastOperator) SocketsLeave(ctx context.Context, rooms ...string) error {
	return b.each(func(t *Namespace) error { return t.adapter.DelSockets(ctx, b.opts, rooms) })
}

// DisconnectSockets disconnects the selected sockets; with closeConn their
// connections are closed too.
func (b BroadcastOperator) DisconnectSockets(ctx context.Context, closeConn bool) error {
	return b.each(func(t *Namespace) error { return t.adapter.DisconnectSockets(ctx, b.opts, closeConn) })
}

func (b BroadcastOperator) each(f func(*Namespace) error) error {
	targets, err := b.nsp.targets()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range targets {
		if err := f(t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoteSocket describes a socket connected to this or another server, as
// FetchSockets found it. Its methods act through the adapter, so they work
// wherever the socket is.
type RemoteSocket struct {
	ID        string
	Node      string // the server the socket is connected to, when the adapter knows it
	Rooms     []string
	Data      json.RawMessage // what the socket's SetData stored, as JSON
	Handshake Handshake

	nsp *Namespace
}

// BindData decodes the socket's data into v.
func (r *RemoteSocket) BindData(v any) error {
	if len(r.Data) == 0 {
		return ErrMissingArgument
	}
	return json.Unmarshal(r.Data, v)
}

func (r *RemoteSocket) only() adapter.Options { return adapter.Options{Rooms: []string{r.ID}} }

// Emit sends an event to the socket.
func (r *RemoteSocket) Emit(ctx context.Context, event string, args ...any) error {
	return r.nsp.To(r.ID).Emit(ctx, event, args...)
}

// EmitWithAck sends an event to the socket and waits for its acknowledgement.
func (r *RemoteSocket) EmitWithAck(ctx context.Context, event string, args ...any) (Args, error) {
	replies, err := r.nsp.To(r.ID).EmitWithAck(ctx, event, args...)
	if err != nil {
		return Args{}, err
	}
	if len(replies) == 0 {
		return Args{}, ErrDisconnected
	}
	return replies[0].Args, nil
}

// Join makes the socket join rooms.
func (r *RemoteSocket) Join(ctx context.Context, rooms ...string) error {
	return r.nsp.adapter.AddSockets(ctx, r.only(), rooms)
}

// Leave makes the socket leave rooms.
func (r *RemoteSocket) Leave(ctx context.Context, rooms ...string) error {
	return r.nsp.adapter.DelSockets(ctx, r.only(), rooms)
}

// Disconnect disconnects the socket; with closeConn its connection is closed too.
func (r *RemoteSocket) Disconnect(ctx context.Context, closeConn bool) error {
	return r.nsp.adapter.DisconnectSockets(ctx, r.only(), closeConn)
}

// ackContext bounds an ack wait: by d when it is set, else by ctx's own deadline,
// else by Options.AckTimeout.
func (s *Server) ackContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.AckTimeout)
}

// connectPacket is the CONNECT answer {"sid": id}, with "pid" when recovery is
// enabled.
func connectPacket(nsp, id, pid string) *parser.Encoded {
	data := make([]byte, 0, len(id)+len(pid)+20)
	data = append(data, `{"sid":"`...)
	data = append(data, id...)
	if pid != "" {
		data = append(data, `","pid":"`...)
		data = append(data, pid...)
	}
	data = append(data, `"}`...)
	return parser.Encode(&parser.Packet{Type: parser.Connect, Namespace: nsp, Data: data})
}
