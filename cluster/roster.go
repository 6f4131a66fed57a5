package cluster

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/bus"
)

// Liveness through the membership record.
//
// On a bus whose transport keeps a membership record (bus.Roster: Redis), a
// node writes its entry there every HeartbeatInterval instead of sending a
// heartbeat to every node, and reads back only the entries that changed: in
// a steady cluster one small command per node per interval, where heartbeats
// cost N messages delivered N times. An entry that its process stops writing
// turns stale NodeTimeout after its last write, which the next beat of any
// node notes as a change; every node then takes that node as timed out, as
// it would after NodeTimeout without heartbeats. A fresh entry counts as
// hearing the node (as a heartbeat did, also for the interest kept of it,
// InterestKeep).
//
// An entry carries the version of the interest its node last announced to
// every node (0 without routing): a node that holds an older one of that
// process, or none, missed the announcement (pub/sub keeps nothing) and asks
// for it with a hello to that node alone. That replaces the interest that
// every heartbeat carried.
//
// Hellos (start, reconnect), goodbyes and interest announcements stay on the
// direct plane: they happen once per event, not per interval. A node still
// sends periodic heartbeats (with its interest) to every node:
//   - while it cannot write the record (a failed beat). Its heartbeats then
//     ask for heartbeats (wantHeartbeats), since it reads no entry either,
//     and every node that hears such a heartbeat sends heartbeats too for
//     NodeTimeout. Then every node is as it was without the record;
//   - while it hears a node that does not write the record (a node of an
//     earlier version) and so times out the nodes it hears no heartbeat from:
//     a periodic heartbeat from a node without a fresh entry.
//
// The record's word that an entry turned stale is not taken for a node heard
// on the direct plane within NodeTimeout (its writes alone may fail): it
// times out when it falls silent, as without the record.

// rosterFullEvery is how many beats read only the changes before one reads
// the whole record: a failover that lost the record's last changes and then
// made as many new ones is noticed within that many intervals.
const rosterFullEvery = 60

// rosterForget is how long a stale entry stays in the record, in NodeTimeouts:
// every node that beats at least once per NodeTimeout reads its change.
const rosterForget = 4

// rosterState is this node's view of the membership record.
type rosterState struct {
	ro   bus.Roster
	inst uint64

	mu     sync.Mutex
	since  bus.RosterVersion
	lastOK time.Time // the last beat that succeeded
	beats  int       // beats since the last whole read
	failed bool      // the last beat failed (logged once)
	// fresh are the processes of other nodes with a fresh entry, and the
	// interest version each announced last.
	fresh map[instKey]heldEntry
	// legacy are the nodes heard by a periodic heartbeat, and when: while one
	// of them without a fresh entry is live, this node sends heartbeats too.
	legacy map[string]time.Time
	// wants are the nodes whose heartbeats asked for heartbeats, and when.
	wants map[string]time.Time
	// staled counts the nodes timed out because their entry turned stale.
	staled atomic.Uint64
}

// heldEntry is a fresh entry of another process: the interest version it
// announced last, and whether it is fresh only because the record paused
// (bus.RosterEntry.Unconfirmed), which is no sign of life.
type heldEntry struct {
	info        uint64
	unconfirmed bool
}

// startRoster uses the bus's membership record when it has one.
func (c *Cluster) startRoster() {
	rb, ok := c.bus.(interface {
		Roster() (bus.Roster, error)
		Instance() uint64
	})
	if !ok {
		return
	}
	ro, err := rb.Roster()
	if err != nil {
		return
	}
	c.roster = &rosterState{ro: ro, inst: rb.Instance(), fresh: make(map[instKey]heldEntry),
		legacy: make(map[string]time.Time), wants: make(map[string]time.Time)}
}

// heardBeat notes a periodic heartbeat of node id (a hello is not one), which
// with want asked for heartbeats.
func (c *Cluster) heardBeat(id string, want bool, now time.Time) {
	rs := c.roster
	if rs == nil {
		return
	}
	rs.mu.Lock()
	rs.legacy[id] = now
	if want {
		rs.wants[id] = now
	}
	rs.mu.Unlock()
}

// needsHeartbeats reports whether this node must send periodic heartbeats
// (after the beat of this interval, ok its outcome).
func (c *Cluster) needsHeartbeats(ok bool, now time.Time) bool {
	rs := c.roster
	if rs == nil || !ok {
		return true
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	need := false
	for id, at := range rs.wants {
		if now.Sub(at) > c.opts.NodeTimeout {
			delete(rs.wants, id)
			continue
		}
		need = true
	}
	for id, at := range rs.legacy {
		if now.Sub(at) > c.opts.NodeTimeout {
			delete(rs.legacy, id)
			continue
		}
		if !rs.freshNodeLocked(id) {
			need = true
		}
	}
	return need
}

func (rs *rosterState) freshNodeLocked(id string) bool {
	for k := range rs.fresh {
		if k.node == id {
			return true
		}
	}
	return false
}

// beat writes this node's entry and takes what changed; it reports whether
// the record answered.
func (c *Cluster) beat(ctx context.Context, now time.Time) bool {
	rs := c.roster
	if rs == nil || c.bus.Status().State != bus.Connected {
		// An entry says that this node hears what is sent to it, as a
		// heartbeat did (a Send needs the bus connected).
		return false
	}
	var info uint64
	if c.route != nil {
		info = c.route.announced.Load()
	}
	rs.mu.Lock()
	since := rs.since
	if now.Sub(rs.lastOK) > c.opts.NodeTimeout || rs.beats >= rosterFullEvery {
		// What this node held may have been removed from the record meanwhile.
		since = bus.RosterVersion{}
	}
	rs.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.opts.HeartbeatInterval)
	v, err := rs.ro.Beat(ctx, bus.RosterBeat{
		Node: c.id, Instance: rs.inst, Info: info,
		Stale: c.opts.NodeTimeout, Forget: rosterForget * c.opts.NodeTimeout,
		Interval: c.opts.HeartbeatInterval, Since: since,
	})
	cancel()
	if err != nil {
		rs.mu.Lock()
		first := !rs.failed
		rs.failed = true
		rs.mu.Unlock()
		if first && !errors.Is(err, context.Canceled) {
			c.log.Warn("cluster: the membership record cannot be written; sending heartbeats to every node instead until it can",
				slog.Any("error", err))
		}
		return false
	}
	var joined, stale []instKey
	asks := make(map[string]bool)
	rs.mu.Lock()
	if rs.failed {
		rs.failed = false
		c.log.Info("cluster: the membership record is written again")
	}
	rs.since, rs.lastOK = v.Version, now
	rs.beats++
	held := rs.fresh
	if v.Full {
		// The whole record: what it does not hold is no longer taken as
		// heard (it times out if it stays silent); what it holds as stale
		// and this node held as fresh stopped.
		rs.beats = 0
		rs.fresh = make(map[instKey]heldEntry, len(held))
	}
	var left []instKey
	for _, e := range v.Changed {
		if e.Node == c.id || e.Node == "" {
			continue // this process, or another under its id (the bus reports that)
		}
		k := instKey{e.Node, e.Instance}
		h, was := held[k]
		switch {
		case e.Fresh && !e.Unconfirmed:
			rs.fresh[k] = heldEntry{info: e.Info}
		case e.Fresh:
			// Fresh only because the record paused, not written since: no
			// sign of life. A process held stays held (it writes again
			// within its interval, or goes stale); one not held (it may
			// have died before the pause) is not taken for live.
			if was {
				h.unconfirmed = true
				rs.fresh[k] = h
			}
		case was || !v.Full:
			delete(rs.fresh, k)
			if e.Left {
				left = append(left, k)
			} else {
				stale = append(stale, k)
			}
		}
	}
	infos := make([]uint64, 0, len(rs.fresh))
	for k, h := range rs.fresh {
		if !h.unconfirmed {
			joined = append(joined, k)
			infos = append(infos, h.info)
		}
	}
	rs.mu.Unlock()
	for i, k := range joined {
		if !c.heardProcess(k.node, k.inst, now) {
			continue
		}
		if infos[i] != 0 && c.missedInterest(k, infos[i]) {
			asks[k.node] = true
		}
	}
	for _, k := range stale {
		c.staleProcess(k.node, k.inst)
	}
	for _, k := range left {
		// It closed: its goodbye may still be on its way here.
		c.goodbye(k.node, k.inst)
	}
	for id := range asks {
		// Its last announcement to every node did not arrive here: a hello
		// to it alone brings its interest (heard answers it).
		c.control(id, &message{kind: kindHeartbeat, flags: flagHello})
	}
	return true
}

// missedInterest reports whether this node holds no announcement of process k
// as recent as version, the one it last announced to every node.
func (c *Cluster) missedInterest(k instKey, version uint64) bool {
	r := c.route
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.peers[k.node]; n != nil {
		if p := n.insts[k.inst]; p != nil && !p.relayed {
			return p.version < version
		}
	}
	return true
}

// heardProcess notes that process inst of node id wrote its entry: as a
// heartbeat would, it keeps the node alive (and, with routing, its interest).
// It reports false for a node that said goodbye: only a hello brings it back.
func (c *Cluster) heardProcess(id string, inst uint64, now time.Time) bool {
	c.mu.Lock()
	if _, bye := c.gone[id]; bye {
		c.mu.Unlock()
		return false
	}
	_, known := c.nodes[id]
	c.nodes[id] = now
	if c.insts == nil {
		c.insts = make(map[string]map[uint64]time.Time)
	}
	if c.insts[id] == nil {
		c.insts[id] = make(map[uint64]time.Time, 1)
	}
	c.insts[id][inst] = now
	c.mu.Unlock()
	c.noteReturned(id, inst)
	if r := c.route; r != nil {
		r.mu.Lock()
		if n := r.peers[id]; n != nil {
			if p := n.insts[inst]; p != nil {
				p.heard, p.heardConn = now, r.connTime(now)
				p.relayed = false
			}
		}
		r.mu.Unlock()
	}
	if !known {
		c.log.Info("cluster: node joined", slog.String("peer", id))
		c.control(id, &message{kind: kindHeartbeat})
		c.answerInterest(id)
		c.answerPeers(id)
	}
	return true
}

// staleProcess takes process inst of node id as gone: its entry turned stale
// (it stopped writing it for NodeTimeout, or left). The node times out unless
// another of its processes is alive.
func (c *Cluster) staleProcess(id string, inst uint64) {
	now := time.Now()
	c.mu.Lock()
	if at, ok := c.directAt[id]; ok && now.Sub(at) <= c.opts.NodeTimeout {
		// It is heard: perhaps only its writes of the record fail. It times
		// out when it falls silent: NodeTimeout after it was last heard on
		// the direct plane (or another of its processes in the record), not
		// after the record's last word that this process lived, and this
		// process no longer counts as alive (a goodbye of another process
		// under the id ends the node). A direct message of it brings it back.
		if ia, ok := c.insts[id][inst]; ok && ia.After(at) {
			delete(c.insts[id], inst)
		}
		last := at
		for _, ia := range c.insts[id] {
			if ia.After(last) {
				last = ia
			}
		}
		if seen, ok := c.nodes[id]; ok && seen.After(last) {
			c.nodes[id] = last
		}
		c.mu.Unlock()
		c.logLimited("cluster: a node's membership entry turned stale, but the node is heard; it is kept until it falls silent",
			slog.String("peer", id), slog.Duration("node_timeout", c.opts.NodeTimeout))
		return
	}
	delete(c.insts[id], inst)
	others := false
	for _, at := range c.insts[id] {
		if now.Sub(at) <= c.opts.NodeTimeout {
			others = true
		}
	}
	c.mu.Unlock()
	if !others {
		c.roster.staled.Add(1)
		c.nodeGone(id, false)
	}
}

// leaveRoster marks this node's entry stale (Close).
func (c *Cluster) leaveRoster(ctx context.Context) {
	rs := c.roster
	if rs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.HeartbeatInterval)
	defer cancel()
	_, _ = rs.ro.Beat(ctx, bus.RosterBeat{Node: c.id, Instance: rs.inst, Stale: c.opts.NodeTimeout,
		Forget: rosterForget * c.opts.NodeTimeout, Interval: c.opts.HeartbeatInterval, Leave: true})
}
