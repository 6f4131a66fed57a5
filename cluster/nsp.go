package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/parser"
)

// nspAdapter is the cluster adapter of one namespace: an adapter.Memory for the
// sockets of this node, plus the bus for the others.
//
// Every message of the namespace — broadcasts, socket operations (join, leave,
// disconnect), server-side emits and the requests that collect answers (fetch,
// server-side emit with replies, broadcast with acks) — is published on the
// reliable plane with the namespace as the partition key, so that every node
// applies them in the order this node issued them. Only the answers travel on
// the direct plane.
type nspAdapter struct {
	c      *Cluster
	name   string
	nsp    adapter.Namespace
	local  *adapter.Memory
	closed atomic.Bool
	once   sync.Once
	rec    recoverState
	// interest is this node's interest in the namespace when it is routed
	// (interest.go), nil when it uses the namespace's shared partition.
	interest *localInterest
}

var _ adapter.Adapter = (*nspAdapter)(nil)

func (a *nspAdapter) Join(id string, rooms ...string)  { a.local.Join(id, rooms...) }
func (a *nspAdapter) Leave(id string, rooms ...string) { a.local.Leave(id, rooms...) }
func (a *nspAdapter) LeaveAll(id string)               { a.local.LeaveAll(id) }
func (a *nspAdapter) Rooms(id string) []string         { return a.local.Rooms(id) }

func (a *nspAdapter) isClosed() bool { return a.closed.Load() || a.c.isClosed() }

// publish hands a reliable message to the bus: on the namespace's partition,
// or, routed, on the inboxes of the nodes it concerns.
func (a *nspAdapter) publish(ctx context.Context, m *message) error {
	if a.interest != nil {
		rt := a.c.route
		rt.pubMu.RLock()
		defer rt.pubMu.RUnlock()
		return a.publishTo(ctx, a.targets(m), m)
	}
	if err := a.c.bus.Publish(ctx, partitionKey(a.name), m.marshal()); err != nil {
		return fmt.Errorf("cluster: %s: %w", m.kind, err)
	}
	return nil
}

// targets are the other nodes a message of this routed namespace concerns.
func (a *nspAdapter) targets(m *message) []string {
	// A server-side emit is for every node's handlers, sockets or not.
	every := !m.hasSelector()
	return a.c.routeTargets(a.name, m.rooms, every)
}

// publishOwn publishes a recoverable broadcast m of this routed namespace: to
// the nodes it concerns and to this node's own inbox (never read back here),
// which is the history of this node's clients (handoff.go). Always: a session
// of an earlier process under this node's id may be restored here, whose rooms
// this process does not know yet.
func (a *nspAdapter) publishOwn(ctx context.Context, m *message) error {
	rt := a.c.route
	rt.pubMu.RLock()
	defer rt.pubMu.RUnlock()
	return a.publishTo(ctx, append(a.targets(m), a.c.id), m)
}

// publishTo publishes m on the inboxes of nodes.
func (a *nspAdapter) publishTo(ctx context.Context, nodes []string, m *message) error {
	if err := a.c.publishRouted(ctx, nodes, m.marshal()); err != nil {
		return fmt.Errorf("cluster: %s: %w", m.kind, err)
	}
	return nil
}

// Broadcast delivers p to the matching local sockets before it returns, then (unless
// opts.Local) publishes it for the other nodes. An error from the bus (outbox full,
// closed) is returned; the local sockets have been written to regardless.
func (a *nspAdapter) Broadcast(ctx context.Context, p *parser.Packet, opts adapter.Options) error {
	if a.isClosed() {
		return adapter.ErrClosed
	}
	if opts.Recoverable && !opts.Volatile && !opts.Local {
		return a.broadcastRecoverable(ctx, p, opts)
	}
	if _, err := a.local.BroadcastLocal(p, opts); err != nil {
		return err
	}
	if opts.Local {
		return nil
	}
	return a.publish(ctx, &message{
		kind: kindBroadcast, nsp: a.name, flags: selectorFlags(opts),
		rooms: opts.Rooms, except: opts.Except,
		ptype: p.Type, data: p.Data, attachments: p.Attachments,
	})
}

func (a *nspAdapter) AddSockets(ctx context.Context, opts adapter.Options, rooms []string) error {
	return a.socketsOp(ctx, kindAddSockets, opts, rooms, false)
}

func (a *nspAdapter) DelSockets(ctx context.Context, opts adapter.Options, rooms []string) error {
	return a.socketsOp(ctx, kindDelSockets, opts, rooms, false)
}

func (a *nspAdapter) DisconnectSockets(ctx context.Context, opts adapter.Options, closeConn bool) error {
	return a.socketsOp(ctx, kindDisconnect, opts, nil, closeConn)
}

// socketsOp applies a join, leave or disconnect locally, then publishes it on
// the reliable plane (ordered with this node's broadcasts) and, while the bus is
// connected, waits until every known node confirmed that it applied it, so that a
// broadcast from any node afterwards sees the new membership. When ctx ends first
// it returns a *adapter.MissingRepliesError naming the nodes that did not confirm
// yet; the operation stays accepted and they apply it when it reaches them.
func (a *nspAdapter) socketsOp(ctx context.Context, k kind, opts adapter.Options, rooms []string, closeConn bool) error {
	if a.isClosed() {
		return adapter.ErrClosed
	}
	m := &message{kind: k, nsp: a.name, rooms: opts.Rooms, except: opts.Except, target: rooms}
	if closeConn {
		m.flags |= flagCloseConn
	}
	if err := a.applyLocal(m); err != nil {
		return err
	}
	if opts.Local {
		return nil
	}
	if a.c.bus.Status().State != bus.Connected {
		// Accepted into the outbox like a broadcast: the other nodes apply it, in
		// order, when the bus is back. There is nobody to wait for now.
		if a.interest != nil && k == kindAddSockets {
			a.c.route.pubMu.RLock()
			defer a.c.route.pubMu.RUnlock()
			nodes := a.targets(m)
			a.c.route.markGrace(nodes, a.name, rooms, time.Now().Add(a.c.graceFor()))
			return a.publishTo(ctx, nodes, m)
		}
		return a.publish(ctx, m)
	}
	ctx, cancel := a.c.requestCtx(ctx)
	defer cancel()
	live := a.c.liveNodes()
	nodes, awaited := live, live
	unlock := func() {}
	if a.interest != nil {
		// Routed with the interest known when the outbox takes it (a cut
		// waits: handoff.go).
		a.c.route.pubMu.RLock()
		unlock = sync.OnceFunc(a.c.route.pubMu.RUnlock)
		defer unlock()
		// Confirmed by exactly the live nodes it goes to (a node whose
		// interest is kept while it is not heard is written to, not waited
		// for).
		nodes = a.targets(m)
		awaited = make([]string, 0, len(nodes))
		for _, id := range nodes {
			if slices.Contains(live, id) {
				awaited = append(awaited, id)
			}
		}
		if k == kindAddSockets {
			// Until their own announcement says so, this node knows before
			// they do that they have sockets in these rooms.
			a.c.route.markGrace(nodes, a.name, rooms, time.Now().Add(a.c.graceFor()))
		}
	}
	p := newPending(k, awaited)
	if err := a.c.register(p); err != nil {
		return err
	}
	defer a.c.unregister(p)
	m.reqID = p.id
	var err error
	if a.interest != nil {
		err = a.publishTo(ctx, nodes, m)
	} else {
		err = a.publish(ctx, m)
	}
	unlock()
	if err != nil {
		return err
	}
	err = a.c.wait(ctx, p)
	if a.interest != nil && k == kindAddSockets {
		// The grace counts from when they applied it (or were last waited for).
		a.c.route.markGrace(nodes, a.name, rooms, time.Now().Add(a.c.graceFor()))
	}
	return err
}

// applyLocal runs a reliable message on the local sockets.
func (a *nspAdapter) applyLocal(m *message) error {
	opts := m.options()
	switch m.kind {
	case kindBroadcast:
		p := &parser.Packet{Type: m.ptype, Namespace: a.name, Data: m.data, Attachments: m.attachments}
		// Paced: a backlog of another node waits for room in each recipient's
		// send queue (this bus goroutine stops reading meanwhile) instead of
		// cutting healthy clients; Close ends a wait.
		_, err := a.local.BroadcastPaced(context.Background(), p, opts)
		return err
	case kindAddSockets:
		return a.local.AddSocketsLocal(opts, m.target)
	case kindDelSockets:
		return a.local.DelSocketsLocal(opts, m.target)
	case kindDisconnect:
		return a.local.DisconnectSocketsLocal(opts, m.flags&flagCloseConn != 0)
	case kindServerEmit:
		a.nsp.HandleServerSideEmit(m.event, rawArgs(m.args), nil)
	}
	return nil
}

// testAfterApply, set by tests only, runs after a message is applied under
// the recovery lock and before the bus's delivery returns.
var testAfterApply atomic.Pointer[func(nsp string, m *message)]

// apply runs a reliable message of another node.
func (a *nspAdapter) apply(m *message) {
	if a.isClosed() {
		return
	}
	if !a.rec.used.Load() {
		a.rec.unlocked.Add(1)
		if !a.rec.used.Load() {
			err := a.applyLocal(m)
			if m.pos != "" {
				if a.interest != nil && m.part == a.c.route.inbox {
					a.rec.lastInbox.Store(m)
				} else {
					a.rec.lastShared.Store(m)
				}
			}
			a.rec.unlocked.Add(-1)
			if err != nil && !errors.Is(err, adapter.ErrClosed) {
				a.c.logLimited("cluster: message of another node not applied",
					slog.String("namespace", a.name), slog.String("kind", m.kind.String()), slog.Any("error", err))
			}
			return
		}
		a.rec.unlocked.Add(-1) // a restore began: this one takes the lock
	}
	a.applyRecoverable(m)
	if h := testAfterApply.Load(); h != nil {
		(*h)(a.name, m)
	}
}

// FetchSockets describes the matching sockets of this node and, unless opts.Local,
// of every other node that answers before ctx is done.
func (a *nspAdapter) FetchSockets(ctx context.Context, opts adapter.Options) ([]adapter.SocketInfo, error) {
	if a.isClosed() {
		return nil, adapter.ErrClosed
	}
	local, err := a.local.FetchSocketsLocal(opts)
	if err != nil {
		return nil, err
	}
	for i := range local {
		local[i].Node = a.c.id
	}
	if opts.Local {
		return local, nil
	}
	ctx, cancel := a.c.requestCtx(ctx)
	defer cancel()
	p := newPending(kindFetchRequest, a.c.liveNodes())
	if err := a.c.register(p); err != nil {
		return nil, err
	}
	defer a.c.unregister(p)
	err = a.c.ask(ctx, p, &message{kind: kindFetchRequest, nsp: a.name, rooms: opts.Rooms, except: opts.Except})
	if errors.Is(err, adapter.ErrUnavailable) || errors.Is(err, adapter.ErrClosed) {
		return nil, err
	}
	remote, _ := p.results()
	return append(local, remote...), err
}

// ServerSideEmit publishes the event for the other nodes' namespace handlers on
// the reliable plane (ordered with this node's broadcasts). With wantReplies it
// is a request: it fails at once with adapter.ErrUnavailable while the bus is
// not connected, and returns one Reply per node that answered before ctx was
// done.
func (a *nspAdapter) ServerSideEmit(ctx context.Context, event string, args []json.RawMessage, wantReplies bool) ([]adapter.Reply, error) {
	if a.isClosed() {
		return nil, adapter.ErrClosed
	}
	if err := adapter.CheckEvent(event); err != nil {
		return nil, err
	}
	m := &message{kind: kindServerEmit, nsp: a.name, event: event, args: jsonArgs(args)}
	if !wantReplies {
		return nil, a.publish(ctx, m)
	}
	m.kind = kindEmitRequest
	ctx, cancel := a.c.requestCtx(ctx)
	defer cancel()
	p := newPending(kindEmitRequest, a.c.liveNodes())
	if err := a.c.register(p); err != nil {
		return nil, err
	}
	defer a.c.unregister(p)
	err := a.c.ask(ctx, p, m)
	if errors.Is(err, adapter.ErrUnavailable) || errors.Is(err, adapter.ErrClosed) {
		return nil, err
	}
	_, replies := p.results()
	return replies, err
}

// BroadcastWithAck sends p to every matching socket of the cluster and collects
// their replies. Each node first reports how many sockets it wrote to, then each
// reply; the call returns when every known node reported and every counted socket
// replied, or when ctx is done (RequestTimeout without a deadline) with the
// replies that arrived and a *adapter.MissingRepliesError.
func (a *nspAdapter) BroadcastWithAck(ctx context.Context, p *parser.Packet, opts adapter.Options) ([]adapter.Reply, error) {
	if a.isClosed() {
		return nil, adapter.ErrClosed
	}
	if _, err := adapter.CheckPacket(p, a.name, true); err != nil {
		return nil, err
	}
	ctx, cancel := a.c.requestCtx(ctx)
	defer cancel()
	var nodes []string
	if !opts.Local {
		nodes = a.c.liveNodes()
	}
	pd := newPending(kindAckRequest, nodes)
	pd.peers[a.c.id] = &peer{} // this node's own sockets
	if err := a.c.register(pd); err != nil {
		return nil, err
	}
	defer a.c.unregister(pd)
	if !opts.Local {
		m := &message{
			kind: kindAckRequest, nsp: a.name, flags: selectorFlags(opts),
			rooms: opts.Rooms, except: opts.Except,
			ptype: p.Type, data: p.Data, attachments: p.Attachments,
		}
		if err := a.c.publishRequest(ctx, pd, m); err != nil {
			return nil, err
		}
	}
	localDone := make(chan error, 1)
	go func() {
		counted := false
		err := a.local.BroadcastWithAckRecipients(ctx, p, opts,
			func(ids []string) { counted = true; pd.localCount(a.c.id, slices.Clone(ids), len(ids)) },
			func(r adapter.Reply) { pd.localReply(a.c.id, r) })
		if !counted {
			pd.localCount(a.c.id, nil, 0) // nothing sent here: do not wait for this node
		}
		localDone <- err
	}()
	err := a.c.wait(ctx, pd)
	cancel() // the local part ends at once if it still waits
	lerr := <-localDone
	if err == nil && lerr != nil && !isMissing(lerr) {
		err = lerr
	}
	_, replies := pd.results()
	return replies, err
}

func isMissing(err error) bool {
	var me *adapter.MissingRepliesError
	return errors.As(err, &me)
}

// serveFetch answers a remote FetchSockets with the matching local sockets.
// The sockets are described at once (in order with the origin's earlier
// messages); the answer leaves through the control lane.
func (a *nspAdapter) serveFetch(from string, m *message) {
	infos, err := a.local.FetchSocketsLocal(m.options())
	if err != nil && !errors.Is(err, adapter.ErrClosed) {
		a.c.logLimited("cluster: fetch sockets failed", slog.String("namespace", a.name), slog.Any("error", err))
	}
	// The JSON encoding, which grows with the sockets, is left to the lane so
	// that the origin's next messages are not held up by it.
	a.c.queueOut(a.c.controlLane, kindFetchResponse, outgoing{to: from, build: func() *message {
		return &message{kind: kindFetchResponse, nsp: a.name, reqID: m.reqID, sockets: a.encodeInfos(infos)}
	}})
}

// encodeInfos returns infos as a JSON array, naming this node.
func (a *nspAdapter) encodeInfos(infos []adapter.SocketInfo) []byte {
	buf := make([]byte, 0, 256*len(infos)+2)
	buf = append(buf, '[')
	n := 0
	for i := range infos {
		infos[i].Node = a.c.id
		b, err := json.Marshal(&infos[i])
		if err != nil {
			// A socket whose data cannot be encoded is left out, and said so.
			a.c.logLimited("cluster: fetch sockets: socket not described", slog.String("socket", infos[i].ID), slog.Any("error", err))
			continue
		}
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, b...)
		n++
	}
	return append(buf, ']')
}

// serveEmit hands a remote server-side emit to the namespace (in order with
// the origin's server-side emits without replies), whose handler replies at
// most once, now or later; the reply leaves through the replies lane.
func (a *nspAdapter) serveEmit(from string, m *message) {
	var once sync.Once
	reply := func(args []json.RawMessage) {
		once.Do(func() {
			a.c.replyLater(from, &message{kind: kindEmitResponse, nsp: a.name, reqID: m.reqID, args: jsonArgs(args)})
		})
	}
	a.nsp.HandleServerSideEmit(m.event, rawArgs(m.args), reply)
}

// Close releases the namespace's adapter; operations afterwards return
// adapter.ErrClosed. It is idempotent.
func (a *nspAdapter) Close() error {
	a.once.Do(func() {
		a.closed.Store(true)
		a.c.removeNsp(a)
		a.closeLocal()
	})
	return nil
}

func (a *nspAdapter) closeLocal() {
	a.closed.Store(true)
	a.c.endRelays(a)
	if err := a.local.Close(); err != nil {
		a.c.log.Warn("cluster: closing the local adapter", slog.String("namespace", a.name), slog.Any("error", err))
	}
}
