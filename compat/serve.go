package compat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"

	"github.com/durasock/durasock/adapter"
)

// ---- requests of this node ----

// pending is a request of this node waiting for the answers of the others.
type pending struct {
	id   string
	kind opKind

	mu       sync.Mutex
	servers  int             // answers expected (servers)
	answered int             // answers received (a client count, for acks)
	clients  int             // acks expected (sum of client counts)
	sids     map[string]bool // recipients known by id; true once replied
	sockets  []adapter.SocketInfo
	replies  []adapter.Reply
	done     chan struct{}
	doneOnce sync.Once
}

func (p *pending) finish() { p.doneOnce.Do(func() { close(p.done) }) }

// check finishes p when everything expected arrived; p.mu is held.
func (p *pending) check() {
	if p.answered >= p.servers && (p.kind != opAckRequest || len(p.replies) >= p.clients) {
		p.finish()
	}
}

func (p *pending) count(n int, sids []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answered++
	p.clients += n
	for _, id := range sids {
		if _, ok := p.sids[id]; !ok {
			p.sids[id] = false
		}
	}
	p.check()
}

func (p *pending) reply(r adapter.Reply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.From != "" {
		p.sids[r.From] = true
	}
	p.replies = append(p.replies, r)
	p.check()
}

func (c *NodeCluster) newPending(k opKind, servers int) *pending {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	p := &pending{id: hex.EncodeToString(b[:]), kind: k, servers: servers, sids: make(map[string]bool), done: make(chan struct{})}
	c.mu.Lock()
	c.reqs[p.id] = p
	c.mu.Unlock()
	return p
}

func (c *NodeCluster) unregister(p *pending) {
	c.mu.Lock()
	delete(c.reqs, p.id)
	c.mu.Unlock()
}

// requestCtx bounds ctx by RequestTimeout when it has no deadline.
func (c *NodeCluster) requestCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.RequestTimeout)
}

// wait waits until p has every answer, or returns a *MissingRepliesError.
func (c *NodeCluster) wait(ctx context.Context, p *pending) error {
	select {
	case <-p.done:
		if c.isClosed() {
			return adapter.ErrClosed
		}
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := &adapter.MissingRepliesError{Expected: p.servers, Received: p.answered, Err: ctx.Err()}
	if p.kind == opAckRequest {
		e.Expected, e.Received = max(p.clients, len(p.replies)), len(p.replies)
		for id, replied := range p.sids {
			if !replied {
				e.Missing = append(e.Missing, id)
			}
		}
		slices.Sort(e.Missing)
	}
	return e
}

// answered hands an answer to the request of this node it answers.
func (c *NodeCluster) answered(o *op) {
	c.mu.RLock()
	p := c.reqs[o.requestID]
	c.mu.RUnlock()
	if p == nil {
		return // another node's request, or one that ended
	}
	from := o.from
	if from == "" && o.kind != opAckReply {
		from = o.uid // the sharded form names the answering node
	}
	switch {
	case o.kind == opFetchResponse && p.kind == opFetch:
		var infos []adapter.SocketInfo
		if o.sockets != nil && o.sockets.kind == kArr {
			for _, s := range o.sockets.arr {
				in, err := socketInfo(s, from)
				if err != nil {
					c.drop(sourceNode, reasonInvalid, "compat: a socket of a fetch answer is not understood", slog.Any("error", err))
					continue
				}
				infos = append(infos, in)
			}
		}
		p.mu.Lock()
		p.sockets = append(p.sockets, infos...)
		p.answered++
		p.check()
		p.mu.Unlock()
	case o.kind == opEmitResponse && p.kind == opServerEmit:
		arg, err := plainJSON(orNull(o.data))
		if err != nil {
			arg = json.RawMessage("null")
		}
		p.mu.Lock()
		p.replies = append(p.replies, adapter.Reply{From: from, Args: []json.RawMessage{arg}})
		p.answered++
		p.check()
		p.mu.Unlock()
	case o.kind == opAckCount && p.kind == opAckRequest:
		p.count(o.count, o.target)
	case o.kind == opAckReply && p.kind == opAckRequest:
		arg, err := plainJSON(orNull(o.data))
		if err != nil {
			arg = json.RawMessage("null")
		}
		p.reply(adapter.Reply{From: from, Args: []json.RawMessage{arg}})
	}
}

func orNull(v *value) *value {
	if v == nil {
		return null()
	}
	return v
}

// ---- messages of other nodes ----

// answerTo queues an answer to the node uid: on the common response channel
// (classic) or uid's own channel (sharded).
func (a *nodeAdapter) answerTo(uid string, classic *value, shardedType int, data *value) {
	var m outMsg
	var err error
	if a.sharded() {
		m.channel, m.shard = a.ch+uid+"#", true
		m.payload, err = encodeAny(shardedMessage(a.c.uid, a.name, shardedType, data))
	} else {
		m.channel = a.resp
		m.payload, err = encodeAny(classic)
	}
	if err != nil {
		a.c.drop(sourceNode, reasonAnswer, "compat: an answer could not be encoded", slog.Any("error", err))
		return
	}
	a.c.answer(m)
}

// serve applies a message of another node (or of an emitter) to this node's
// sockets, on the apply goroutine, and answers it when it is a request.
func (a *nodeAdapter) serve(source string, o *op) {
	if a.closed.Load() {
		return
	}
	invalid := func(err error) {
		a.c.drop(source, reasonInvalid, "compat: a message of the Node dialect cannot be applied",
			slog.String("namespace", a.name), slog.String("kind", o.kind.String()), slog.Any("error", err))
	}
	switch o.kind {
	case opBroadcast:
		p, err := toPacket(o.packet, a.name)
		if err != nil {
			invalid(err)
			return
		}
		// Paced: a recipient whose send queue is full makes the apply
		// goroutine wait (received messages queue up to MaxQueue) instead
		// of being cut for a burst of another node.
		if _, err := a.local.BroadcastPaced(a.c.life, p, o.options()); err != nil && !errors.Is(err, adapter.ErrClosed) && a.c.life.Err() == nil {
			invalid(err)
		}
	case opJoin, opLeave, opDisconnect:
		if o.sid != "" {
			a.serveSingle(o)
			return
		}
		if err := a.applySockets(o.kind, o.options(), o.target, o.close); err != nil {
			invalid(err)
		}
	case opFetch:
		infos, err := a.local.FetchSocketsLocal(o.options())
		if err != nil {
			invalid(err)
			return
		}
		arr := &value{kind: kArr}
		for _, in := range infos {
			v, err := socketValue(in)
			if err != nil {
				invalid(err)
				continue
			}
			arr.arr = append(arr.arr, v)
		}
		a.answerTo(o.uid, object().set("requestId", str(o.requestID)).set("sockets", arr).set("from", str(a.c.uid)),
			shardedFetchResponse, object().set("requestId", str(o.requestID)).set("sockets", arr))
	case opSockets:
		ids := a.local.SocketIDs(adapter.Options{Rooms: o.rooms})
		a.answerTo(o.uid, object().set("requestId", str(o.requestID)).set("sockets", strArray(ids)), 0, nil)
	case opAllRooms:
		set := make(map[string]bool)
		for _, id := range a.local.SocketIDs(adapter.Options{}) {
			for _, r := range a.local.Rooms(id) {
				set[r] = true
			}
		}
		rooms := make([]string, 0, len(set))
		for r := range set {
			rooms = append(rooms, r)
		}
		slices.Sort(rooms)
		a.answerTo(o.uid, object().set("requestId", str(o.requestID)).set("rooms", strArray(rooms)), 0, nil)
	case opServerEmit:
		event, args, err := eventArgs(o.data)
		if err != nil {
			invalid(err)
			return
		}
		var reply func([]json.RawMessage)
		if o.requestID != "" {
			var once sync.Once
			uid, id := o.uid, o.requestID
			reply = func(args []json.RawMessage) {
				once.Do(func() {
					arg, err := firstArg(args)
					if err != nil {
						invalid(err)
						return
					}
					a.answerTo(uid,
						object().set("type", integer(classicServerEmit)).set("requestId", str(id)).set("data", arg).set("from", str(a.c.uid)),
						shardedEmitResponse, object().set("requestId", str(id)).set("packet", arg))
				})
			}
		}
		a.nsp.HandleServerSideEmit(event, args, reply)
	case opAckRequest:
		a.relay(source, o)
	default:
		a.c.drop(source, reasonUnsupported, "compat: a request of the Node dialect is not supported", slog.String("kind", o.kind.String()))
	}
}

// serveSingle applies the single-socket join, leave or disconnect of earlier
// classic versions and confirms it when the socket is here.
func (a *nodeAdapter) serveSingle(o *op) {
	s := a.nsp.Socket(o.sid)
	if s == nil {
		return
	}
	switch o.kind {
	case opJoin:
		a.Join(o.sid, o.room)
	case opLeave:
		a.Leave(o.sid, o.room)
	case opDisconnect:
		s.Disconnect(o.close)
	}
	a.answerTo(o.uid, object().set("requestId", str(o.requestID)), 0, nil)
}

// relay writes the packet of a broadcast with acks of another node to the
// matching sockets here, answers at once with their count, then with each ack
// as it arrives, until the requester's timeout.
func (a *nodeAdapter) relay(source string, o *op) {
	uid, id := o.uid, o.requestID
	count := func(n int, ids []string) {
		classic := object().set("type", integer(classicBroadcastCount)).set("requestId", str(id)).set("clientCount", integer(int64(n)))
		data := object().set("requestId", str(id)).set("clientCount", integer(int64(n)))
		if len(ids) <= maxSids {
			classic.set("sids", strArray(ids))
			data.set("sids", strArray(ids))
		}
		a.answerTo(uid, classic, shardedClientCount, data)
	}
	p, err := toPacket(o.packet, a.name)
	if err != nil {
		a.c.drop(source, reasonInvalid, "compat: a broadcast with acks of another node cannot be applied", slog.Any("error", err))
		count(0, nil)
		return
	}
	a.c.mu.Lock()
	if a.c.relays >= a.c.opts.MaxRelays {
		a.c.mu.Unlock()
		a.c.drop(source, reasonRelays, "compat: too many broadcasts with acks of other nodes are waiting; one is answered with no recipients")
		count(0, nil)
		return
	}
	a.c.relays++
	a.c.wg.Add(1)
	a.c.mu.Unlock()
	timeout := o.timeout()
	if timeout <= 0 {
		timeout = a.c.opts.RequestTimeout
	}
	timeout = min(timeout, maxAckWait)
	opts := o.options()
	go func() {
		defer func() {
			a.c.mu.Lock()
			a.c.relays--
			a.c.mu.Unlock()
			a.c.wg.Done()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		stop := context.AfterFunc(a.c.life, cancel)
		defer stop()
		counted := false
		// Its error, a timeout, is for the requester to report: it names
		// what is missing.
		_ = a.local.BroadcastWithAckRecipients(ctx, p, opts,
			func(ids []string) { counted = true; count(len(ids), ids) },
			func(r adapter.Reply) {
				arg, err := firstArg(r.Args)
				if err != nil {
					arg = null()
				}
				a.answerTo(uid,
					object().set("type", integer(classicBroadcastAckType)).set("requestId", str(id)).set("packet", arg).set("from", str(r.From)),
					shardedAck, object().set("requestId", str(id)).set("packet", arg).set("from", str(r.From)))
			})
		if !counted {
			count(0, nil)
		}
	}()
}
