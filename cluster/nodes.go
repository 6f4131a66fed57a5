package cluster

import (
	"context"
	"log/slog"
	"time"

	"github.com/durasock/durasock/bus"
)

// Node discovery: every node sends a heartbeat to all others (Send "") every
// HeartbeatInterval, or writes its entry in the membership record instead
// where the bus keeps one (roster.go), and at start and after each reconnect a
// heartbeat flagged hello, which the others answer at once with a heartbeat of
// their own. Any direct message from a node counts as a sign of life. A node
// silent for NodeTimeout, or one that said goodbye, is forgotten and no longer
// waited for.

// heartbeatLoop sends heartbeats, expires silent nodes and says hello after the
// bus reconnects.
func (c *Cluster) heartbeatLoop(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.HeartbeatInterval)
	defer t.Stop()
	changed := c.bus.StateChanged()
	// A hello may go out before the bus delivers this node's own direct messages
	// (subscriptions start asynchronously), so answers to it can be lost: hellos are
	// repeated at growing intervals up to HeartbeatInterval after start and after
	// every reconnect. They are idempotent and cheap.
	burst := time.NewTimer(0)
	defer burst.Stop()
	delay := helloFirstDelay
	c.noteState()
	for {
		select {
		case <-ctx.Done():
			return
		case <-burst.C:
			c.beat(ctx, time.Now())
			c.sendHeartbeat(ctx, "", true, false)
			c.sendInterest(ctx, "")
			if delay < c.opts.HeartbeatInterval {
				burst.Reset(delay)
				delay *= 2
			}
		case now := <-t.C:
			// The record first: what it confirms counts before silence does.
			ok := c.beat(ctx, now)
			c.expire(now)
			if c.needsHeartbeats(ok, now) {
				// A node that cannot write the record asks the others
				// for heartbeats: it reads no entry either.
				c.sendHeartbeat(ctx, "", false, !ok && c.roster != nil)
				c.sendInterest(ctx, "")
			}
		case <-changed:
			changed = c.bus.StateChanged()
			if c.noteState() {
				delay = helloFirstDelay
				burst.Reset(0)
			}
		}
	}
}

// noteState reports whether the bus is connected, and tells the routing.
func (c *Cluster) noteState() bool {
	up := c.bus.Status().State == bus.Connected
	if c.route != nil {
		c.route.setConnected(up)
	}
	return up
}

// helloFirstDelay is the first interval between repeated hellos.
const helloFirstDelay = 25 * time.Millisecond

// wantHeartbeats in the namespace field of a periodic heartbeat asks the
// nodes that write the membership record for heartbeats (roster.go). It is a
// field that every version reads and ignores in a heartbeat, where an unknown
// flag would make a node of an earlier version drop the heartbeat.
const wantHeartbeats = "want-heartbeats"

// sendHeartbeat sends a heartbeat to node to ("" for every node): a hello, or
// a periodic one that, with want, asks for heartbeats in return.
func (c *Cluster) sendHeartbeat(ctx context.Context, to string, hello, want bool) {
	m := &message{kind: kindHeartbeat}
	if hello {
		m.flags = flagHello
	}
	if want {
		m.nsp = wantHeartbeats
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.HeartbeatInterval)
	defer cancel()
	// A failed heartbeat is normal while the bus reconnects, and the bus reports its
	// state itself: no log line per beat.
	_ = c.bus.Send(ctx, to, m.marshal())
}

// heard notes that node id is alive. A node seen for the first time, or one that
// said hello, gets a heartbeat back so that it learns about this node at once.
func (c *Cluster) heard(id string, m *message) {
	if id == "" || id == c.id {
		return
	}
	hello := m.kind == kindHeartbeat && m.flags&flagHello != 0
	now := time.Now()
	c.mu.Lock()
	if _, bye := c.gone[id]; bye && !hello {
		// A late message of a node that left: only a hello brings it back.
		c.mu.Unlock()
		return
	}
	delete(c.gone, id)
	_, known := c.nodes[id]
	c.nodes[id] = now
	if c.direct == nil {
		c.direct = make(map[string]time.Time)
	}
	c.direct[id] = now
	if c.roster != nil {
		if c.directAt == nil {
			c.directAt = make(map[string]time.Time)
		}
		c.directAt[id] = now
	}
	if m.inst != 0 {
		if c.insts == nil {
			c.insts = make(map[string]map[uint64]time.Time)
		}
		if c.insts[id] == nil {
			c.insts[id] = make(map[uint64]time.Time, 1)
		}
		c.insts[id][m.inst] = now
	}
	c.mu.Unlock()
	if m.kind == kindHeartbeat && !hello {
		c.heardBeat(id, m.nsp == wantHeartbeats, now)
	}
	c.noteReturned(id, m.inst)
	if !known {
		c.log.Info("cluster: node joined", slog.String("peer", id))
	}
	if hello || !known {
		c.control(id, &message{kind: kindHeartbeat})
		c.answerInterest(id)
		c.answerPeers(id)
	}
}

// expire forgets the nodes silent for longer than NodeTimeout, and goodbyes older
// than that.
func (c *Cluster) expire(now time.Time) {
	var lost []string
	c.mu.Lock()
	for id, seen := range c.nodes {
		if now.Sub(seen) > c.opts.NodeTimeout {
			lost = append(lost, id)
		}
	}
	for id, at := range c.gone {
		if now.Sub(at) > c.opts.NodeTimeout {
			delete(c.gone, id)
		}
	}
	for id, insts := range c.insts {
		for inst, at := range insts {
			if now.Sub(at) > c.opts.NodeTimeout {
				delete(insts, inst)
			}
		}
		if len(insts) == 0 {
			delete(c.insts, id)
		}
	}
	live := make(map[string]bool, len(c.nodes))
	for id := range c.nodes {
		live[id] = true
	}
	c.mu.Unlock()
	for _, id := range lost {
		c.nodeGone(id, false)
		delete(live, id)
	}
	if c.route != nil {
		c.route.expire(now, live, c.opts.NodeTimeout, c.opts.InterestKeep)
	}
}

// goodbye takes the goodbye of instance inst of node id. Another process under
// the same id (a misconfiguration the bus reports) heard within NodeTimeout
// keeps the node alive: only the interest of the process that left is
// forgotten. (A process that ended without goodbye counts as such a process
// until NodeTimeout after it was last heard.)
func (c *Cluster) goodbye(id string, inst uint64) {
	if id == "" || id == c.id {
		return
	}
	now := time.Now()
	others := false
	c.mu.Lock()
	for i, at := range c.insts[id] {
		if i != inst && now.Sub(at) <= c.opts.NodeTimeout {
			others = true
		}
	}
	if others {
		delete(c.insts[id], inst)
	}
	c.mu.Unlock()
	if !others {
		c.nodeGone(id, true)
		return
	}
	c.log.Info("cluster: a process of node left; another process under its id is alive", slog.String("peer", id))
	if r := c.route; r != nil {
		r.mu.Lock()
		if n := r.peers[id]; n != nil {
			n.leftLocked(inst, time.Now())
			if len(n.insts) == 0 {
				delete(r.peers, id)
			}
		}
		r.mu.Unlock()
	}
}

// nodeGone forgets node id and stops waiting for it in pending requests.
func (c *Cluster) nodeGone(id string, bye bool) {
	if id == "" || id == c.id {
		return
	}
	c.mu.Lock()
	_, known := c.nodes[id]
	delete(c.nodes, id)
	delete(c.direct, id)
	delete(c.insts, id)
	delete(c.directAt, id)
	if bye {
		c.gone[id] = time.Now()
	}
	reqs := make([]*pending, 0, len(c.reqs))
	for _, p := range c.reqs {
		reqs = append(reqs, p)
	}
	c.mu.Unlock()
	if bye {
		c.forgetPeer(id)
	}
	if c.route != nil {
		c.route.waiters.wakeAll()
	}
	if known {
		if bye {
			c.log.Info("cluster: node left", slog.String("peer", id))
		} else {
			c.stats.nodeTimeouts.Add(1)
			if st := c.bus.Status(); st.State != bus.Connected {
				// This node's own link is the likely cause: it hears no one.
				c.log.Warn("cluster: node timed out while this node cannot reach the broker (Redis): it hears no other node until the broker answers",
					slog.String("peer", id), slog.Duration("node_timeout", c.opts.NodeTimeout),
					slog.String("bus_state", st.State.String()), slog.String("bus_error", st.LastError))
			} else {
				c.log.Warn("cluster: node timed out", slog.String("peer", id), slog.Duration("node_timeout", c.opts.NodeTimeout))
			}
		}
	}
	for _, p := range reqs {
		p.nodeGone(id)
	}
}

// liveNodes returns the other nodes a request waits for.
func (c *Cluster) liveNodes() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.nodes))
	for id := range c.nodes {
		out = append(out, id)
	}
	return out
}
