package compat

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
	"github.com/durasock/durasock/parser"
)

// maxSids bounds the recipient ids a durasock node adds to its client count
// (an extension Node ignores), which name the missing sockets of a timed-out
// broadcast with acks.
const maxSids = 1000

type routedSub struct {
	subscription
	route route
}

// nodeAdapter is the adapter of one namespace in a NodeCluster.
type nodeAdapter struct {
	c     *NodeCluster
	name  string
	nsp   adapter.Namespace
	local *adapter.Memory
	subs  []routedSub

	// Classic channels.
	bc, req, resp string
	// Sharded channels.
	ch string

	roomMu   sync.Mutex
	roomSubs map[string]bool // sharded room channels subscribed, by room

	once   sync.Once
	closed atomic.Bool
}

var _ adapter.Adapter = (*nodeAdapter)(nil)

// channels computes the channels of the namespace, as the Node adapter of the
// same mode and key does.
func (a *nodeAdapter) channels() {
	key, uid := a.c.opts.Key, a.c.uid
	if a.c.opts.Mode == Sharded {
		a.ch = key + "#" + a.name + "#"
		a.subs = []routedSub{
			{subscription{subShard, a.ch}, route{a.name, roleSharded}},
			{subscription{subShard, a.ch + uid + "#"}, route{a.name, roleSharded}},
		}
		return
	}
	a.bc = key + "#" + a.name + "#"
	a.req = key + "-request#" + a.name + "#"
	a.resp = key + "-response#" + a.name + "#"
	a.subs = []routedSub{
		{subscription{subPattern, a.bc + "*"}, route{a.name, roleBroadcast}},
		{subscription{subChannel, a.req}, route{a.name, roleRequest}},
		{subscription{subChannel, a.resp}, route{a.name, roleResponse}},
		{subscription{subChannel, a.resp + uid + "#"}, route{a.name, roleResponse}},
	}
}

func (a *nodeAdapter) subscriptions() []subscription {
	out := make([]subscription, len(a.subs))
	for i, s := range a.subs {
		out[i] = s.subscription
	}
	return out
}

func (a *nodeAdapter) sharded() bool { return a.c.opts.Mode == Sharded }

// ---- membership ----

func (a *nodeAdapter) Join(id string, rooms ...string) {
	a.local.Join(id, rooms...)
	a.reconcile(append([]string{id}, rooms...))
}

func (a *nodeAdapter) Leave(id string, rooms ...string) {
	a.local.Leave(id, rooms...)
	a.reconcile(rooms)
}

func (a *nodeAdapter) LeaveAll(id string) {
	rooms := a.local.Rooms(id)
	a.local.LeaveAll(id)
	a.reconcile(rooms)
}

func (a *nodeAdapter) Rooms(id string) []string { return a.local.Rooms(id) }

// reconcile keeps the sharded room channels subscribed while their rooms
// have local members, as the sharded adapter's "dynamic" mode does: every
// room but those named like a socket id (20 characters), whose broadcasts go
// to the main channel. It never blocks: the subscriber sends the commands.
func (a *nodeAdapter) reconcile(rooms []string) {
	if !a.sharded() || a.closed.Load() {
		return
	}
	for _, r := range rooms {
		if looksLikeASocketID(r) {
			continue
		}
		exists := len(a.local.SocketIDs(adapter.Options{Rooms: []string{r}})) > 0
		a.roomMu.Lock()
		if exists == a.roomSubs[r] {
			a.roomMu.Unlock()
			continue
		}
		sub := subscription{subShard, a.ch + r + "#"}
		a.c.mu.Lock()
		if exists {
			a.roomSubs[r] = true
			a.c.routes[sub.name] = route{a.name, roleSharded}
		} else {
			delete(a.roomSubs, r)
			delete(a.c.routes, sub.name)
		}
		a.c.mu.Unlock()
		a.roomMu.Unlock()
		a.c.sub.set(exists, sub)
	}
}

// ---- operations of this node ----

func (a *nodeAdapter) Broadcast(ctx context.Context, p *parser.Packet, opts adapter.Options) error {
	if a.closed.Load() {
		return adapter.ErrClosed
	}
	p, err := adapter.CheckPacket(p, a.name, false)
	if err != nil {
		return err
	}
	if _, err := a.local.BroadcastLocal(p, opts); err != nil {
		return err
	}
	if opts.Local {
		return nil
	}
	pv, err := packetValue(p, a.name)
	if err != nil {
		return fmt.Errorf("%w: %w", adapter.ErrInvalidPacket, err)
	}
	var m outMsg
	if a.sharded() {
		// Always the main channel, which every node subscribes: a room's
		// channel would miss a node whose first member of the room joined a
		// moment ago (its SSUBSCRIBE still on the way), and one channel keeps
		// this node's messages in order on a Redis Cluster too.
		m.channel, m.shard = a.ch, true
		m.payload, err = encodeAny(shardedMessage(a.c.uid, a.name, shardedBroadcast,
			object().set("packet", pv).set("opts", optsValue(opts, 0))))
	} else {
		m.channel = a.bc
		if len(opts.Rooms) == 1 {
			m.channel += opts.Rooms[0] + "#"
		}
		m.payload, err = encodeMsgpack(array(str(a.c.uid), pv, optsValue(opts, 0)))
	}
	if err != nil {
		return fmt.Errorf("%w: %w", adapter.ErrInvalidPacket, err)
	}
	return a.send(ctx, m)
}

// send publishes a message of this node now.
func (a *nodeAdapter) send(ctx context.Context, m outMsg) error {
	ctx, cancel := a.c.requestCtx(ctx)
	defer cancel()
	if err := a.c.publish(ctx, m); err != nil {
		return fmt.Errorf("%w: %w", adapter.ErrUnavailable, err)
	}
	return nil
}

// request publishes a request of this node: to the request channel (classic)
// or the main channel (sharded).
func (a *nodeAdapter) request(ctx context.Context, classicType int, classic *value, shardedType int, data *value) error {
	if a.sharded() {
		b, err := encodeAny(shardedMessage(a.c.uid, a.name, shardedType, data))
		if err != nil {
			return err
		}
		return a.send(ctx, outMsg{channel: a.ch, shard: true, payload: b})
	}
	classic.keys = append([]string{"uid", "type"}, classic.keys...)
	classic.vals = append([]*value{str(a.c.uid), integer(int64(classicType))}, classic.vals...)
	b, err := classicMessage(classic, classicType == classicBroadcast)
	if err != nil {
		return err
	}
	return a.send(ctx, outMsg{channel: a.req, payload: b})
}

func (a *nodeAdapter) AddSockets(ctx context.Context, opts adapter.Options, rooms []string) error {
	return a.socketsOp(ctx, opJoin, opts, rooms, false)
}

func (a *nodeAdapter) DelSockets(ctx context.Context, opts adapter.Options, rooms []string) error {
	return a.socketsOp(ctx, opLeave, opts, rooms, false)
}

func (a *nodeAdapter) DisconnectSockets(ctx context.Context, opts adapter.Options, closeConn bool) error {
	return a.socketsOp(ctx, opDisconnect, opts, nil, closeConn)
}

// socketsOp applies a join, leave or disconnect here and publishes it. As
// with Node, the other nodes do not confirm it: it is applied there when it
// arrives, before the broadcasts this node publishes after it.
func (a *nodeAdapter) socketsOp(ctx context.Context, k opKind, opts adapter.Options, rooms []string, closeConn bool) error {
	if a.closed.Load() {
		return adapter.ErrClosed
	}
	if err := a.applySockets(k, opts, rooms, closeConn); err != nil {
		return err
	}
	if opts.Local {
		return nil
	}
	classic := object().set("opts", selectorValue(opts))
	data := object().set("opts", optsValue(opts, 0))
	var ct, st int
	switch k {
	case opJoin:
		ct, st = classicJoin, shardedJoin
	case opLeave:
		ct, st = classicLeave, shardedLeave
	default:
		ct, st = classicDisconnect, shardedDisconnect
	}
	if k == opDisconnect {
		classic.set("close", boolean(closeConn))
		data.set("close", boolean(closeConn))
	} else {
		classic.set("rooms", strArray(rooms))
		data.set("rooms", strArray(rooms))
	}
	return a.request(ctx, ct, classic, st, data)
}

func (a *nodeAdapter) applySockets(k opKind, opts adapter.Options, rooms []string, closeConn bool) error {
	switch k {
	case opJoin:
		if err := a.local.AddSocketsLocal(opts, rooms); err != nil {
			return err
		}
		a.reconcile(rooms)
	case opLeave:
		if err := a.local.DelSocketsLocal(opts, rooms); err != nil {
			return err
		}
		a.reconcile(rooms)
	case opDisconnect:
		return a.local.DisconnectSocketsLocal(opts, closeConn)
	}
	return nil
}

// servers returns how many other servers serve the namespace, as Redis
// counts them.
func (a *nodeAdapter) servers(ctx context.Context) (int, error) {
	var n int
	var err error
	if a.sharded() {
		n, err = serverCount(ctx, a.c.client, a.ch, true)
	} else {
		n, err = serverCount(ctx, a.c.client, a.req, false)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", adapter.ErrUnavailable, err)
	}
	return max(n-1, 0), nil
}

func (a *nodeAdapter) FetchSockets(ctx context.Context, opts adapter.Options) ([]adapter.SocketInfo, error) {
	if a.closed.Load() {
		return nil, adapter.ErrClosed
	}
	local, err := a.local.FetchSocketsLocal(opts)
	if err != nil {
		return nil, err
	}
	for i := range local {
		local[i].Node = a.c.uid
	}
	if opts.Local {
		return local, nil
	}
	ctx, cancel := a.c.requestCtx(ctx)
	defer cancel()
	n, err := a.servers(ctx)
	if err != nil || n == 0 {
		return local, err
	}
	p := a.c.newPending(opFetch, n)
	defer a.c.unregister(p)
	err = a.request(ctx, classicFetch, object().set("requestId", str(p.id)).set("opts", selectorValue(opts)),
		shardedFetch, object().set("opts", optsValue(opts, 0)).set("requestId", str(p.id)))
	if err != nil {
		return nil, err
	}
	err = a.c.wait(ctx, p)
	p.mu.Lock()
	defer p.mu.Unlock()
	return append(local, p.sockets...), err
}

func (a *nodeAdapter) ServerSideEmit(ctx context.Context, event string, args []json.RawMessage, wantReplies bool) ([]adapter.Reply, error) {
	if a.closed.Load() {
		return nil, adapter.ErrClosed
	}
	if err := adapter.CheckEvent(event); err != nil {
		return nil, fmt.Errorf("compat: server-side emit: %w", err)
	}
	data, err := argsValue(event, args)
	if err != nil {
		return nil, fmt.Errorf("compat: server-side emit: %w", err)
	}
	if !wantReplies {
		return nil, a.request(ctx, classicServerEmit, object().set("data", data),
			shardedServerEmit, object().set("packet", data))
	}
	ctx, cancel := a.c.requestCtx(ctx)
	defer cancel()
	n, err := a.servers(ctx)
	if err != nil || n == 0 {
		return nil, err
	}
	p := a.c.newPending(opServerEmit, n)
	defer a.c.unregister(p)
	err = a.request(ctx, classicServerEmit, object().set("requestId", str(p.id)).set("data", data),
		shardedServerEmit, object().set("requestId", str(p.id)).set("packet", data))
	if err != nil {
		return nil, err
	}
	err = a.c.wait(ctx, p)
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.replies), err
}

func (a *nodeAdapter) BroadcastWithAck(ctx context.Context, p *parser.Packet, opts adapter.Options) ([]adapter.Reply, error) {
	if a.closed.Load() {
		return nil, adapter.ErrClosed
	}
	p, err := adapter.CheckPacket(p, a.name, true)
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.c.requestCtx(ctx)
	defer cancel()
	n := 0
	if !opts.Local {
		var err error
		if n, err = a.servers(ctx); err != nil {
			return nil, err
		}
	}
	pd := a.c.newPending(opAckRequest, n+1) // this node answers too
	defer a.c.unregister(pd)
	if n > 0 {
		pv, err := packetValue(p, a.name)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", adapter.ErrInvalidPacket, err)
		}
		var timeout time.Duration
		if dl, ok := ctx.Deadline(); ok {
			timeout = max(time.Until(dl), time.Millisecond)
		}
		o := optsValue(opts, timeout)
		err = a.request(ctx, classicBroadcast, object().set("requestId", str(pd.id)).set("packet", pv).set("opts", o),
			shardedBroadcast, object().set("packet", pv).set("requestId", str(pd.id)).set("opts", o))
		if err != nil {
			return nil, err
		}
	}
	localDone := make(chan error, 1)
	go func() {
		counted := false
		err := a.local.BroadcastWithAckRecipients(ctx, p, opts,
			func(ids []string) { counted = true; pd.count(len(ids), ids) },
			func(r adapter.Reply) { pd.reply(r) })
		if !counted {
			pd.count(0, nil)
		}
		localDone <- err
	}()
	err = a.c.wait(ctx, pd)
	cancel()
	lerr := <-localDone
	if err == nil && lerr != nil && !isMissing(lerr) {
		err = lerr
	}
	pd.mu.Lock()
	defer pd.mu.Unlock()
	return slices.Clone(pd.replies), err
}

func isMissing(err error) bool {
	var me *adapter.MissingRepliesError
	return errors.As(err, &me)
}

// Close unsubscribes the namespace (the other nodes stop counting this one)
// and closes the local adapter. It is idempotent.
func (a *nodeAdapter) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), a.c.opts.RequestTimeout)
	defer cancel()
	a.close(ctx)
	return nil
}

func (a *nodeAdapter) close(ctx context.Context) {
	a.once.Do(func() {
		a.closed.Store(true)
		subs := a.subscriptions()
		a.roomMu.Lock()
		for r := range a.roomSubs {
			subs = append(subs, subscription{subShard, a.ch + r + "#"})
		}
		clear(a.roomSubs)
		a.roomMu.Unlock()
		a.c.removeNsp(a)
		if err := a.c.sub.apply(ctx, false, subs...); err != nil {
			a.c.log.Warn("compat: unsubscribing a namespace not confirmed", slog.String("namespace", a.name), slog.Any("error", err))
		}
		if err := a.local.Close(); err != nil {
			a.c.log.Warn("compat: closing the local adapter", slog.String("namespace", a.name), slog.Any("error", err))
		}
	})
}
