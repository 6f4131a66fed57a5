package cluster

import (
	"encoding/binary"
	"errors"
	"time"
)

// Second-hand interest (interest routing only).
//
// A node routes to the nodes it hears. One that starts (or restarts under the
// same id) while another node is cut off from the broker hears nothing of
// that node, and would write nothing to its inbox: the cut-off node's sockets
// would miss every event, with no sequence to tell (nothing was written). So a
// node learns of the live nodes it has not heard from the nodes it hears: the
// answer to a hello carries, besides the sender's own interest (kindInterest),
// the interest the sender holds of every other node it considers live
// (kindPeers), per bus instance of each (interest.go, peerNode), with how long
// ago it last heard each one. The receiver takes an entry for an instance
// whose interest it does not hold, or holds at a lower version, and routes to that node as to one it heard, until InterestKeep after
// the reporting node last heard it, a goodbye of the node, or the node is
// heard first-hand (its own announcements then keep the entry). The nodes
// report the interest of the nodes they stopped hearing for that long too:
// a node cut off for longer than NodeTimeout is still routed to.
//
// AwaitRoutingReady waits for this answer from every node heard by heartbeat,
// so that a starting node knows the second-hand nodes before it is ready.
// AwaitRouting does not wait for second-hand nodes: they cannot answer while
// cut off, and they read this node's interest from its heartbeats when they
// are back.

// maxPeerReports bounds the entries of one peers message (the other nodes of
// a cluster), and maxInterestNamespaces the namespaces of all entries
// together, so that a message cannot make its decoder allocate much more than
// its size.
const maxPeerReports = 4096

var (
	errPeersCount = errors.New("peers report of more nodes than a cluster holds")
	errPeersNode  = errors.New("peers report of a node without an id")
)

// peerReport is the interest a node holds of another live node.
type peerReport struct {
	node     string
	instance uint64 // the bus instance of node whose interest it is
	version  uint64
	ago      uint64 // milliseconds since the reporting node last heard node
	interest []nspInterest
}

// encode appends the wire form of p: node:str instance:uvarint
// version:uvarint ago:uvarint count:uvarint interest... (each as in a
// kindInterest message).
func (p *peerReport) encode(b []byte) []byte {
	b = appendString(b, p.node)
	b = binary.AppendUvarint(b, p.instance)
	b = binary.AppendUvarint(b, p.version)
	b = binary.AppendUvarint(b, p.ago)
	b = binary.AppendUvarint(b, uint64(len(p.interest)))
	for i := range p.interest {
		b = p.interest[i].encode(b)
	}
	return b
}

// decodePeers reads the entries of a peers message. Entries are appended as
// they are read: a count is bounded by the bytes left, not by what an entry
// takes in memory; the namespaces of all entries share one bound.
func decodePeers(r *reader) []peerReport {
	n := r.count()
	if r.err != nil || n == 0 {
		return nil
	}
	if n > maxPeerReports {
		r.fail(errPeersCount)
		return nil
	}
	out := make([]peerReport, 0, min(n, 16))
	nsps := 0
	for range n {
		var p peerReport
		p.node = r.string()
		p.instance = r.uvarint()
		p.version = r.uvarint()
		p.ago = r.uvarint()
		k := r.count()
		if r.err != nil {
			return nil
		}
		if p.node == "" {
			r.fail(errPeersNode)
			return nil
		}
		if nsps += k; nsps > maxInterestNamespaces {
			r.fail(errInterestCount)
			return nil
		}
		if k > 0 {
			p.interest = make([]nspInterest, 0, min(k, 16))
			for range k {
				var e nspInterest
				e.decode(r)
				if r.err != nil {
					return nil
				}
				p.interest = append(p.interest, e)
			}
		}
		out = append(out, p)
	}
	return out
}

// answerPeers queues, for node to, the interest this node holds of the other
// live nodes (to and this node left out).
func (c *Cluster) answerPeers(to string) {
	if c.route == nil {
		return
	}
	c.queueOut(c.controlLane, kindPeers, outgoing{to: to, build: func() *message { return c.peersMessage(to) }})
}

// peersMessage is the interest this node holds of the live nodes but to.
func (c *Cluster) peersMessage(to string) *message {
	now := time.Now()
	c.mu.RLock()
	seen := make(map[string]time.Time, len(c.nodes))
	for id, at := range c.nodes {
		if id != to {
			seen[id] = at
		}
	}
	c.mu.RUnlock()
	m := &message{kind: kindPeers}
	r := c.route
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.peers {
		if id == to || id == c.id {
			continue
		}
		_, live := seen[id]
		for inst, p := range n.insts {
			// The instance heard last when this node took its interest
			// (every heartbeat of a live node carries it), as far as known:
			// an instance that ended stops being reported with it. A node
			// not heard by heartbeat is kept (forgetPeer) or second-hand.
			at := p.heard
			if !live && now.Sub(at) > c.opts.InterestKeep {
				continue
			}
			if len(m.peers) == maxPeerReports {
				return m
			}
			e := peerReport{node: id, instance: inst, version: p.version, ago: uint64(max(now.Sub(at), 0) / time.Millisecond)}
			for _, in := range p.nsps {
				e.interest = append(e.interest, *in)
			}
			m.peers = append(m.peers, e)
		}
	}
	return m
}

// learnPeers takes the second-hand interests node from reports, and notes that
// from answered (AwaitRoutingReady).
func (c *Cluster) learnPeers(from string, m *message) {
	r := c.route
	if r == nil || from == "" || from == c.id {
		return
	}
	now := time.Now()
	c.mu.RLock()
	gone := make(map[string]bool)
	for _, e := range m.peers {
		if _, bye := c.gone[e.node]; bye {
			gone[e.node] = true
		}
	}
	c.mu.RUnlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reported == nil {
		r.reported = make(map[string]time.Time)
	}
	r.reported[from] = now
	for _, e := range m.peers {
		if e.node == c.id || e.node == from || gone[e.node] {
			continue
		}
		heard := now.Add(-time.Duration(min(e.ago, uint64(c.opts.InterestKeep/time.Millisecond)+1)) * time.Millisecond)
		if now.Sub(heard) > c.opts.InterestKeep {
			continue // silent for too long already
		}
		n := r.peers[e.node]
		if n == nil {
			n = &peerNode{insts: make(map[uint64]*peerInterest, 1)}
			r.peers[e.node] = n
		}
		p := n.insts[e.instance]
		if p != nil && e.version <= p.version {
			continue
		}
		np := &peerInterest{version: e.version, heard: heard, relayed: true, nsps: make(map[string]*nspInterest, len(e.interest))}
		if p != nil && !p.relayed {
			// Heard first-hand before: its own announcements keep the entry.
			np.relayed = false
			np.heard, np.heardConn = maxTime(p.heard, heard), p.heardConn
		}
		for i := range e.interest {
			in := e.interest[i]
			np.nsps[in.nsp] = &in
		}
		n.insts[e.instance] = np
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
