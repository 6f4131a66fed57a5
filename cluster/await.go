package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/durasock/durasock/bus"
)

// Waiting for routing (interest routing only).
//
// A join changes this node's interest at once, but the other nodes route by
// the interest they last heard: an emit another node makes before this
// node's announcement reached it misses the socket. AwaitRouting closes that
// window for a program that needs it: it announces the current interest
// flagged answer-me (flagAnswer) to every node, and each node, having applied
// it, answers on the direct plane with the version it now holds of this node's
// bus instance, naming it (kindInterestApplied: another process under this
// node's id reads the answer too). The wait ends when every live node
// answered with a version at least the announced one. The direct plane is best-effort: the
// announcement is sent again, at growing intervals, to whoever has not
// answered. Only the nodes heard by heartbeat are waited for; a node that goes
// away (goodbye, or no longer heard) stops counting.
//
// A node that starts, or whose broker link comes back, routes only to the
// nodes it has heard of: AwaitRoutingReady waits until it knows the interest
// of every live node. Meanwhile a node the bus has heard (bus.Status.Nodes,
// within the bus's liveness window: its probes on the shared partitions
// without inboxes; with inboxes, its direct messages, and its writes to this
// node and their announcements) whose interest is not known counts
// as interested in everything, like a node heard by heartbeat, for
// NodeTimeout (busHeard).

// heardTTL is how long the nodes the bus has heard are taken as they were:
// routing a message asks for them, and this bounds the cost of it.
const heardTTL = 10 * time.Millisecond

// awaitMaxResend caps the interval of the answer-me announcements.
const awaitMaxResend = time.Second

// routingWaiter is one AwaitRouting call.
type routingWaiter struct {
	version  uint64          // of the announcement waited for
	answered map[string]bool // nodes that applied it (or a later one)
	wake     chan struct{}   // an answer came or a node went away
}

// waiters is the AwaitRouting calls in progress.
type waiters struct {
	mu  sync.Mutex
	set map[*routingWaiter]struct{}
}

func (w *waiters) add(rw *routingWaiter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.set == nil {
		w.set = make(map[*routingWaiter]struct{})
	}
	w.set[rw] = struct{}{}
}

func (w *waiters) remove(rw *routingWaiter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.set, rw)
}

// applied notes that node from holds version of this node's interest.
func (w *waiters) applied(from string, version uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for rw := range w.set {
		if version >= rw.version && !rw.answered[from] {
			rw.answered[from] = true
			rw.signal()
		}
	}
}

// wakeAll makes every waiter look again at the nodes it waits for.
func (w *waiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for rw := range w.set {
		rw.signal()
	}
}

func (rw *routingWaiter) signal() {
	select {
	case rw.wake <- struct{}{}:
	default:
	}
}

// AwaitRouting returns nil once every live node has applied this node's
// interest in namespace nsp as it is at the call (every Join made before it
// included): an emit any node makes after it returns reaches this node's
// sockets in the rooms they are in. It returns nil at once when interest
// routing is off or nsp is not routed. The live nodes are those heard by
// heartbeat: a node only the bus has heard (an emitter process, or a node
// whose heartbeat has not arrived yet) is not waited for. A node that goes
// away while awaited (goodbye, or no longer heard) stops counting. It returns when ctx is done
// with an error that wraps ctx's and names the nodes that did not answer.
//
// The nodes answer only from this version on: a node of an earlier version
// drops the announcement, and is waited for until ctx is done.
func (c *Cluster) AwaitRouting(ctx context.Context, nsp string) error {
	if c.route == nil || !c.routes(nsp) {
		return nil
	}
	start := time.Now()
	m := c.interestMessage()
	m.flags |= flagAnswer
	rw := &routingWaiter{version: m.version, answered: make(map[string]bool), wake: make(chan struct{}, 1)}
	c.route.waiters.add(rw)
	defer c.route.waiters.remove(rw)
	payload := m.marshal()

	send := func() {
		sctx, cancel := context.WithTimeout(ctx, c.opts.HeartbeatInterval)
		defer cancel()
		// A failure (the bus reconnecting) is made good by the next round.
		_ = c.bus.Send(sctx, "", payload)
	}
	send()
	delay := helloFirstDelay
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		missing := c.unanswered(rw)
		if len(missing) == 0 {
			c.log.Debug("cluster: routing confirmed by every live node", slog.String("namespace", nsp),
				slog.Uint64("version", rw.version), slog.Duration("took", time.Since(start)))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: interest in namespace %q not confirmed by %s: %w", nsp, strings.Join(missing, ", "), ctx.Err())
		case <-rw.wake:
		case <-t.C:
			send()
			delay = min(2*delay, c.opts.HeartbeatInterval, awaitMaxResend)
			t.Reset(delay)
		}
	}
}

// unanswered returns the nodes heard by heartbeat that have not answered rw,
// sorted. A node only the bus has heard is not waited for, as in
// AwaitRoutingReady: an emitter process is one, and never answers. A cluster
// node whose heartbeat has not arrived yet gets the announcement as every node
// does, but its answer is not waited for.
func (c *Cluster) unanswered(rw *routingWaiter) []string {
	nodes := c.liveNodes()
	c.route.waiters.mu.Lock()
	defer c.route.waiters.mu.Unlock()
	out := nodes[:0]
	for _, id := range nodes {
		if !rw.answered[id] {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// knownNodes returns the other nodes alive by heartbeat or heard by the bus
// (busHeard), those that said goodbye left out.
func (c *Cluster) knownNodes(busHeard []string) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.nodes)+len(busHeard))
	for id := range c.nodes {
		out = append(out, id)
	}
	for _, id := range busHeard {
		if _, live := c.nodes[id]; live || id == c.id {
			continue
		}
		if _, bye := c.gone[id]; bye {
			continue
		}
		out = append(out, id)
	}
	return out
}

// AwaitRoutingReady returns nil once this node knows the interest of every
// live node, so that what it routes reaches every node concerned: the bus is
// connected, has been for a little more than HeartbeatInterval (every live
// node has sent a heartbeat and its interest since; most answer the hello at
// once), and every node heard by heartbeat has announced its interest. It
// returns nil at once when interest routing is off. A readiness check can
// hold a starting node back until it returns; the same holds after the
// broker link came back. When ctx is done it returns an error that wraps
// ctx's and says what is missing.
//
// It also waits for the answer of every node heard by heartbeat to this
// connection's hello, which names the live nodes that node hears (peers.go):
// a node cut off from the broker is known second-hand, and routed to. That
// wait ends once the bus has been connected for NodeTimeout (a node of an
// earlier version never answers so).
//
// Nodes the bus has heard but the cluster has not are not waited for (an
// emitter process is one, and never announces): until their heartbeat
// arrives they count as interested in everything (busHeard).
func (c *Cluster) AwaitRoutingReady(ctx context.Context) error {
	if c.route == nil {
		return nil
	}
	t := time.NewTicker(helloFirstDelay)
	defer t.Stop()
	for {
		missing := c.routingMissing(time.Now())
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: routing not ready: %s: %w", missing, ctx.Err())
		case <-t.C:
		}
	}
}

// routingMissing says why this node does not know every live node's
// interest at now, "" when it does.
func (c *Cluster) routingMissing(now time.Time) string {
	st := c.bus.Status()
	if st.State != bus.Connected {
		return "the bus is " + st.State.String()
	}
	// connectedAt is the heartbeat loop's, which sees every state change.
	if !c.route.connectedFor(now, c.opts.HeartbeatInterval+c.opts.HeartbeatInterval/4) {
		return "the bus has been connected for less than the heartbeat interval"
	}
	nodes := c.liveNodes()
	since := time.Unix(0, c.route.connectedAt.Load())
	// Connected for NodeTimeout, this node has heard every node that the
	// broker heard since: a node the others still hold alive but silent
	// that long is forgotten by them too. A node of an earlier version,
	// which does not answer with the nodes it hears, holds readiness back
	// that long at most.
	needReports := !c.route.connectedFor(now, c.opts.NodeTimeout)
	c.route.mu.Lock()
	defer c.route.mu.Unlock()
	var unknown, unreported []string
	for _, id := range nodes {
		if c.route.peers[id] == nil {
			unknown = append(unknown, id)
		}
		// The answer to this connection's hello: the nodes id hears and
		// this node may not (peers.go).
		if at, ok := c.route.reported[id]; needReports && (!ok || at.Before(since)) {
			unreported = append(unreported, id)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return "the interest of " + strings.Join(unknown, ", ") + " is not known"
	}
	if len(unreported) > 0 {
		slices.Sort(unreported)
		return "the nodes heard by " + strings.Join(unreported, ", ") + " are not known"
	}
	return ""
}

// busHeard returns the other nodes the bus has heard (as of at most heardTTL
// ago) that may be cluster nodes not heard by heartbeat yet: those heard for
// less than NodeTimeout of connected time. A cluster node sends heartbeats
// (and a hello at start) well within that; a bus client that never does (an
// emitter process) stops counting then. None without a bus.
func (c *Cluster) busHeard(now time.Time) []string {
	r := c.route
	if c.bus == nil {
		return nil
	}
	r.heardMu.Lock()
	defer r.heardMu.Unlock()
	if !r.heardAt.IsZero() && now.Sub(r.heardAt) <= heardTTL {
		return r.heard
	}
	st := c.bus.Status()
	nodes := st.Nodes
	r.conflict = st.NodeIDConflict
	first := make(map[string]time.Time, len(nodes))
	connected := r.connectedAt.Load()
	r.heard = r.heard[:0:0]
	for _, id := range nodes {
		at, ok := r.busFirst[id]
		if !ok {
			at = now
		}
		first[id] = at
		if connected != 0 {
			if base := time.Unix(0, connected); base.After(at) {
				at = base
			}
		}
		if connected == 0 || now.Sub(at) < c.opts.NodeTimeout {
			r.heard = append(r.heard, id)
		}
	}
	r.busFirst = first
	r.heardAt = now
	return r.heard
}
