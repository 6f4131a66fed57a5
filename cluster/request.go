package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
)

// pending is a request this node made, waiting for the answers of other nodes.
// Replies are routed back to the requesting node by the bus (Send to its id) and
// matched by request id.
type pending struct {
	id    uint64
	kind  kind     // the request kind
	nodes []string // the other nodes it was made to

	mu       sync.Mutex
	peers    map[string]*peer // nodes whose answer is awaited (and, for acks, this node)
	finished bool
	done     chan struct{}

	sockets  []adapter.SocketInfo
	replies  []adapter.Reply
	received int // ack replies
}

// peer is what one node answered so far.
type peer struct {
	answered bool                // fetch, emit: the answer arrived; acks: the count arrived
	count    int                 // acks: recipients on the node
	ids      []string            // acks: their ids
	replied  map[string]struct{} // acks: sockets that replied
	gone     bool                // the node left: no longer waited for
}

func (p *peer) complete() bool {
	return p.gone || (p.answered && len(p.replied) >= p.count)
}

func newPending(k kind, nodes []string) *pending {
	p := &pending{kind: k, nodes: nodes, peers: make(map[string]*peer, len(nodes)+1), done: make(chan struct{})}
	for _, n := range nodes {
		p.peers[n] = &peer{}
	}
	return p
}

// checkLocked closes done when every awaited node is complete; p.mu is held.
func (p *pending) checkLocked() {
	if p.finished {
		return
	}
	for _, pr := range p.peers {
		if !pr.complete() {
			return
		}
	}
	p.finished = true
	close(p.done)
}

func (p *pending) check() {
	p.mu.Lock()
	p.checkLocked()
	p.mu.Unlock()
}

func (p *pending) nodeGone(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr := p.peers[id]; pr != nil {
		pr.gone = true
		p.checkLocked()
	}
}

// peerLocked returns the entry of node from, adding one for a node that was not
// known when the request started but answers it; p.mu is held.
func (p *pending) peerLocked(from string) *peer {
	pr := p.peers[from]
	if pr == nil {
		pr = &peer{}
		if !p.finished {
			p.peers[from] = pr
		}
	}
	return pr
}

// answer records one answer of node from.
func (p *pending) answer(log func(string, ...any), from string, m *message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr := p.peerLocked(from)
	switch m.kind {
	case kindUnknownNsp:
		pr.answered = true
		pr.count = 0
	case kindFetchResponse:
		if pr.answered || p.kind != kindFetchRequest {
			return
		}
		pr.answered = true
		var infos []adapter.SocketInfo
		if err := json.Unmarshal(m.sockets, &infos); err != nil {
			log("cluster: fetch sockets: unreadable answer", slog.String("from", from), slog.Any("error", err))
			break
		}
		for i := range infos {
			if infos[i].Node == "" {
				infos[i].Node = from
			}
		}
		p.sockets = append(p.sockets, infos...)
	case kindApplied:
		if !p.kind.confirmable() {
			return
		}
		pr.answered = true
	case kindEmitResponse:
		if pr.answered || p.kind != kindEmitRequest {
			return
		}
		pr.answered = true
		p.replies = append(p.replies, adapter.Reply{From: from, Args: rawArgs(m.args)})
	case kindAckCount:
		if pr.answered || p.kind != kindAckRequest {
			return
		}
		pr.answered = true
		pr.count = int(min(m.count, 1<<31))
		pr.ids = m.ids
	case kindAckReply:
		if p.kind != kindAckRequest {
			return
		}
		if pr.replied == nil {
			pr.replied = make(map[string]struct{})
		}
		if _, dup := pr.replied[m.sid]; dup {
			return
		}
		pr.replied[m.sid] = struct{}{}
		p.received++
		p.replies = append(p.replies, adapter.Reply{From: m.sid, Args: rawArgs(m.args)})
	}
	p.checkLocked()
}

// localCount and localReply record this node's own part of a broadcast with acks.
func (p *pending) localCount(self string, ids []string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr := p.peerLocked(self)
	pr.answered, pr.count, pr.ids = true, n, ids
	p.checkLocked()
}

func (p *pending) localReply(self string, r adapter.Reply) {
	p.answer(nil, self, &message{kind: kindAckReply, sid: r.From, args: jsonArgs(r.Args)})
}

// missing builds the error of a request that ran out of time.
func (p *pending) missing(err error) *adapter.MissingRepliesError {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := &adapter.MissingRepliesError{Err: err}
	for node, pr := range p.peers {
		if pr.gone {
			continue
		}
		if p.kind != kindAckRequest {
			e.Expected++
			if pr.answered {
				e.Received++
			} else {
				e.Missing = append(e.Missing, node)
			}
			continue
		}
		if !pr.answered {
			e.Missing = append(e.Missing, "node:"+node)
			continue
		}
		e.Expected += pr.count
		for _, id := range pr.ids {
			if _, ok := pr.replied[id]; !ok {
				e.Missing = append(e.Missing, id)
			}
		}
	}
	if p.kind == kindAckRequest {
		e.Received = p.received
	}
	slices.Sort(e.Missing)
	return e
}

// results returns copies of what arrived.
func (p *pending) results() ([]adapter.SocketInfo, []adapter.Reply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sockets), slices.Clone(p.replies)
}

func rawArgs(bs [][]byte) []json.RawMessage {
	if bs == nil {
		return nil
	}
	out := make([]json.RawMessage, len(bs))
	for i, b := range bs {
		out[i] = json.RawMessage(b)
	}
	return out
}

func jsonArgs(args []json.RawMessage) [][]byte {
	if args == nil {
		return nil
	}
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = a
	}
	return out
}

// requestCtx applies RequestTimeout to a ctx without a deadline.
func (c *Cluster) requestCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.RequestTimeout)
}

// register adds p to the pending requests under a fresh id.
func (c *Cluster) register(p *pending) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed() {
		return adapter.ErrClosed
	}
	p.id = c.nextID.Add(1)
	c.reqs[p.id] = p
	c.stats.requests.Add(1)
	return nil
}

func (c *Cluster) unregister(p *pending) {
	c.mu.Lock()
	delete(c.reqs, p.id)
	c.mu.Unlock()
}

// answer hands a reply to the pending request it belongs to. A reply to a request
// that already ended is dropped: its requester has returned.
func (c *Cluster) answer(from string, m *message) {
	c.mu.RLock()
	p := c.reqs[m.reqID]
	c.mu.RUnlock()
	if p == nil {
		return
	}
	p.answer(c.log.Warn, from, m)
}

// ask publishes request m (see publishRequest) and waits until every awaited
// node answered, ctx is done, or the cluster closes. p must be registered. On
// ctx expiry it returns a *adapter.MissingRepliesError.
func (c *Cluster) ask(ctx context.Context, p *pending, m *message) error {
	if err := c.publishRequest(ctx, p, m); err != nil {
		return err
	}
	return c.wait(ctx, p)
}

// publishRequest publishes request m, with p's id and ctx's deadline, on the
// reliable plane under the namespace's partition key, so that every node serves
// it in order with this node's other messages of the namespace. While the bus is
// not connected it fails at once with adapter.ErrUnavailable (wrapping
// bus.ErrNotConnected) instead of leaving the request in the outbox; a request
// that reaches a node after its deadline anyway is not served there.
func (c *Cluster) publishRequest(ctx context.Context, p *pending, m *message) error {
	if s := c.bus.Status().State; s != bus.Connected {
		return fmt.Errorf("%w: %s: %w (bus %s)", adapter.ErrUnavailable, m.kind, bus.ErrNotConnected, s)
	}
	m.reqID = p.id
	if d, ok := ctx.Deadline(); ok {
		m.deadline = uint64(max(d.UnixMilli(), 1))
	}
	var err error
	if a := c.nsp(m.nsp); a != nil && a.interest != nil {
		// Routed: to the inbox of every node it waits for, and of every node
		// a server-side emit goes to (routeTargets): the nodes the bus has
		// heard and the cluster not yet, as a broadcast would reach them.
		// Those are not waited for (an emitter process is one, and never
		// answers); what they answer while the request waits is taken
		// (peerLocked).
		err = c.publishRouted(ctx, requestTargets(p.nodes, c.routeTargets(m.nsp, nil, true)), m.marshal())
	} else {
		err = c.bus.Publish(ctx, partitionKey(m.nsp), m.marshal())
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", adapter.ErrUnavailable, m.kind, err)
	}
	return nil
}

func (c *Cluster) wait(ctx context.Context, p *pending) error {
	p.check()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		select {
		case <-p.done: // both ready: the answers are complete
			return nil
		default:
		}
		c.stats.timeouts.Add(1)
		c.metrics.timeouts.Inc()
		return p.missing(ctx.Err())
	case <-c.closed:
		return adapter.ErrClosed
	}
}

// requestTargets returns the nodes a routed request is written to: those it
// waits for and the others every of a server-side emit.
func requestTargets(awaited, every []string) []string {
	out := slices.Clone(awaited)
	in := make(map[string]bool, len(awaited))
	for _, id := range awaited {
		in[id] = true
	}
	for _, id := range every {
		if !in[id] {
			out = append(out, id)
		}
	}
	return out
}
