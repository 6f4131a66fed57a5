package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// maxAckHold bounds how long a node holds the acks of a remote request.
const maxAckHold = time.Hour

// relay is a broadcast with acks of another node running on this node's
// sockets. It writes the packet with an ack id of its own, answers the count of
// recipients, then relays each socket's reply as it arrives, until every
// recipient replied, the requester's deadline passed, or the namespace closed.
//
// A relay holds no goroutine while it waits: replies arrive through the
// sockets' ack callbacks and the deadline is a timer. Its answers wait in the
// relay itself (at most one per recipient, plus the count) and the relay waits
// in the replies lane's ready list (at most once), so answers are never
// dropped for want of room and never delay the control lane. It counts against
// Options.MaxRelays until it ended and its last answer was sent.
type relay struct {
	a     *nspAdapter
	from  string
	reqID uint64
	ackID uint64

	mu      sync.Mutex
	waiting map[string]adapter.Socket // recipients that have not replied
	out     []*message                // answers not sent yet
	queued  bool                      // in the cluster's ready list
	timer   *time.Timer
	ended   bool // no answer will be added
}

// serveAck starts a relay for a broadcast with acks of node from. It writes to
// the local sockets before it returns, so the packet is in order with the
// origin's broadcasts applied before and after it.
func (a *nspAdapter) serveAck(from string, m *message) {
	c := a.c
	opts := m.options()
	var sockets []adapter.Socket
	seen := make(map[string]struct{})
	for _, id := range a.local.SocketIDs(opts) {
		if _, dup := seen[id]; dup {
			continue
		}
		seen[id] = struct{}{}
		if s := a.nsp.Socket(id); s != nil {
			sockets = append(sockets, s)
		}
	}
	if len(sockets) == 0 {
		c.control(from, &message{kind: kindAckCount, nsp: a.name, reqID: m.reqID})
		return
	}
	r := &relay{a: a, from: from, reqID: m.reqID, waiting: make(map[string]adapter.Socket, len(sockets))}
	if !c.addRelay(r) {
		n := c.stats.refusedRelays.Add(1)
		c.metrics.refusedRelays.Inc()
		c.logLimited("cluster: broadcast with acks of another node refused: too many relays waiting for acks (MaxRelays)",
			slog.String("from", from), slog.String("namespace", a.name),
			slog.Int("max_relays", c.opts.MaxRelays), slog.Uint64("refused_relays", n))
		return // the requester names this node missing
	}
	hold := holdFor(m.deadline, c.opts.RequestTimeout)
	r.ackID = a.nsp.NextAckID()
	enc := parser.Encode(&parser.Packet{
		Type: m.ptype, Namespace: a.name, Data: m.data, Attachments: m.attachments,
		ID: r.ackID, HasID: true,
	})
	ids := make([]string, len(sockets))
	for i, s := range sockets {
		ids[i] = s.ID()
	}
	slices.Sort(ids)
	r.mu.Lock()
	for _, s := range sockets {
		r.waiting[s.ID()] = s
	}
	wake := r.pushLocked(&message{kind: kindAckCount, nsp: a.name, reqID: m.reqID, count: uint64(len(ids)), ids: ids})
	r.mu.Unlock()
	if wake {
		c.readyRelay(r)
	}
	for _, s := range sockets {
		id := s.ID()
		s.ExpectAck(r.ackID, func(args []json.RawMessage) { r.replied(id, args) })
		a.writeInOrder(s, enc, opts.Volatile)
	}
	r.mu.Lock()
	if !r.ended {
		r.timer = time.AfterFunc(hold, r.end)
	}
	forgotten := r.ended && r.waiting == nil
	r.mu.Unlock()
	if forgotten {
		// Ended (the namespace closed) while the packet was being written: forget
		// the acks registered after end forgot the others.
		for _, s := range sockets {
			s.ForgetAck(r.ackID)
		}
	}
}

// writeInOrder writes a packet of another node's request to local socket s. It
// must take the same path to the socket as applyLocal's broadcasts: the order
// of a node's broadcasts and broadcasts with acks on a socket depends on it
// (if broadcasts are queued or paced before Socket.Write, so must this be).
func (a *nspAdapter) writeInOrder(s adapter.Socket, enc *parser.Encoded, volatile bool) {
	s.Write(enc, volatile)
}

// holdFor is how long a relay waits for acks: until the requester's deadline
// (Unix milliseconds), at most maxAckHold; a request without one waits def.
func holdFor(deadline uint64, def time.Duration) time.Duration {
	if deadline == 0 {
		return min(def, maxAckHold)
	}
	return min(time.Until(time.UnixMilli(int64(min(deadline, 1<<62)))), maxAckHold)
}

// pushLocked adds an answer to send; it reports whether the relay must join the
// ready list. r.mu is held.
func (r *relay) pushLocked(m *message) bool {
	r.out = append(r.out, m)
	if r.queued {
		return false
	}
	r.queued = true
	return true
}

// replied relays the reply of socket id; the last one ends the relay.
func (r *relay) replied(id string, args []json.RawMessage) {
	r.mu.Lock()
	if r.ended || r.waiting[id] == nil {
		r.mu.Unlock()
		return
	}
	delete(r.waiting, id)
	wake := r.pushLocked(&message{kind: kindAckReply, nsp: r.a.name, reqID: r.reqID, sid: id, args: jsonArgs(args)})
	if len(r.waiting) == 0 {
		r.ended = true
		if r.timer != nil {
			r.timer.Stop()
		}
	}
	r.mu.Unlock()
	if wake {
		r.a.c.readyRelay(r)
	}
}

// end stops waiting: the acks of the sockets that did not reply are forgotten,
// so a late reply is dropped. It is idempotent.
func (r *relay) end() {
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return
	}
	r.ended = true
	if r.timer != nil {
		r.timer.Stop()
	}
	rest := r.waiting
	r.waiting = nil
	sent := !r.queued
	r.mu.Unlock()
	for _, s := range rest {
		s.ForgetAck(r.ackID)
	}
	if sent {
		r.a.c.removeRelay(r)
	}
}

// flush sends the answers r has gathered. A relay that ended with everything
// sent is done.
func (r *relay) flush(ctx context.Context) {
	r.mu.Lock()
	out := r.out
	r.out = nil
	r.queued = false
	done := r.ended
	r.mu.Unlock()
	c := r.a.c
	for _, m := range out {
		c.reply(ctx, r.from, m)
	}
	if done {
		c.removeRelay(r)
	}
}

// readyRelay puts r in the ready list of the replies lane.
func (c *Cluster) readyRelay(r *relay) {
	c.relayMu.Lock()
	c.ready = append(c.ready, r)
	c.relayMu.Unlock()
	select {
	case c.relayWake <- struct{}{}:
	default:
	}
}

// nextReady takes the first relay of the ready list, waking another sender when
// more are left, or returns nil.
func (c *Cluster) nextReady() *relay {
	c.relayMu.Lock()
	if len(c.ready) == 0 {
		c.relayMu.Unlock()
		return nil
	}
	r := c.ready[0]
	c.ready[0] = nil
	c.ready = c.ready[1:]
	more := len(c.ready) > 0
	c.relayMu.Unlock()
	if more {
		select {
		case c.relayWake <- struct{}{}:
		default:
		}
	}
	return r
}

// addRelay registers r unless MaxRelays relays are running.
func (c *Cluster) addRelay(r *relay) bool {
	c.relayMu.Lock()
	defer c.relayMu.Unlock()
	if c.opts.MaxRelays > 0 && len(c.relays) >= c.opts.MaxRelays {
		return false
	}
	c.relays[r] = struct{}{}
	return true
}

func (c *Cluster) removeRelay(r *relay) {
	c.relayMu.Lock()
	delete(c.relays, r)
	c.relayMu.Unlock()
}

// relayCount is the number of relays waiting for acks or sending answers.
func (c *Cluster) relayCount() int {
	c.relayMu.Lock()
	defer c.relayMu.Unlock()
	return len(c.relays)
}

// endRelays ends the relays of namespace a (every relay when a is nil).
func (c *Cluster) endRelays(a *nspAdapter) {
	c.relayMu.Lock()
	var rs []*relay
	for r := range c.relays {
		if a == nil || r.a == a {
			rs = append(rs, r)
		}
	}
	c.relayMu.Unlock()
	for _, r := range rs {
		r.end()
	}
}
