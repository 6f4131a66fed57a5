package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/adapter"
)

// Interest routing (Options.InterestRouting): a node receives only the
// messages that concern its sockets.
//
// The bus gives every node an inbox partition (bus.Reliable.InboxOf), an
// ordinary partition of the reliable plane that only that node (and a node
// whose id hashes to the same inbox) reads. A routed namespace publishes each
// message once to the inbox of every node it concerns instead of once to the
// namespace's shared partition: order per origin, gap detection, replay after
// an outage stay those of the bus, since each receiver reads one partition.
//
// What concerns a node is its interest in the namespace: the buckets
// (roomBucket) of the rooms its sockets are in, a socket's own id room left
// out, and whether it has sockets at all. Each node keeps it up to date from
// the room changes of its local adapter and announces it (kindInterest) on the
// direct plane: to every node shortly after a change (changes coalesced over
// interestDelay), with every heartbeat and hello, and to a node that says hello
// or is heard for the first time. An announcement holds the node's whole
// interest (every namespace it serves) under a version that only grows, so a
// late or repeated one changes nothing.
//
// A message goes to the nodes that are interested: in one of the buckets of its
// rooms; in any socket when it has no rooms or a room that is a socket id
// (Options.SocketIDRoom); every node when it is a server-side emit or a request
// (those answer from every node). A node heard from whose interest is not known
// yet wants everything; a node that serves a namespace without routing it
// announces it as wanting everything. A socketsJoin this node sends marks the
// nodes it went to as interested in the joined rooms at once, for NodeTimeout
// (graceFor), so that an emit that follows it in the program reaches them
// before their own announcement does. AwaitRouting and AwaitRoutingReady
// (await.go) wait until the other nodes have applied this node's interest,
// and until this node knows theirs. A node learns of the live nodes it cannot
// hear itself (cut off from the broker) from the nodes it hears (peers.go).
//
// Which namespaces are routed is decided when the namespace's adapter is made,
// and never changes while it lives: with InterestRouting on a bus with
// inboxes, every namespace but those Options.Recoverable names. A routed
// namespace keeps sessions as any other: a client whose node is gone is
// restored on another one by a handoff from its earlier node's inbox
// (handoff.go). The others keep the shared partitions, exactly as without
// routing.

// routingBus is what interest routing needs of a bus (bus.Reliable over a
// transport with inbox partitions).
type routingBus interface {
	// Routing reports whether the transport has inbox partitions.
	Routing() bool
	// InboxOf is the partition of node's inbox, -1 without inboxes.
	InboxOf(node string) int
	// PublishTo publishes payload on the reliable plane, on node's inbox.
	PublishTo(ctx context.Context, node string, payload []byte) error
	// PublishToNodes publishes payload once on each distinct inbox of
	// nodes, all or none (the outbox takes every copy or refuses it).
	PublishToNodes(ctx context.Context, nodes []string, payload []byte) error
	// Instance is the random number of this process start (bus.Message.Instance
	// of what this node sends).
	Instance() uint64
	// LastSeqOn is the sequence number of the last message this node's
	// outbox took for partition p.
	LastSeqOn(p int) uint64
	// Sync returns once every message the outbox took before the call is in
	// the broker.
	Sync(ctx context.Context) error
	// Partitions is the number of partitions, inboxes included.
	Partitions() int
}

const (
	// interestBuckets is the number of room buckets of an interest.
	interestBuckets = 1024
	// interestDelay coalesces the announcements of interest changes.
	interestDelay = 25 * time.Millisecond

	// Flags of one namespace's interest.
	interestSockets    byte = 1 << 0 // the node has sockets in the namespace
	interestAll        byte = 1 << 1 // the node does not route the namespace: it wants everything
	interestKeeps      byte = 1 << 2 // the namespace keeps sessions: after a goodbye, written to for keep
	knownInterestFlags      = interestSockets | interestAll | interestKeeps
)

// bucketSet is a set of room buckets.
type bucketSet [interestBuckets / 64]uint64

func (s *bucketSet) set(b int)      { s[b/64] |= 1 << (b % 64) }
func (s *bucketSet) clear(b int)    { s[b/64] &^= 1 << (b % 64) }
func (s *bucketSet) has(b int) bool { return s[b/64]&(1<<(b%64)) != 0 }

// count is the number of buckets in s.
func (s *bucketSet) count() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

// roomBucket is the bucket of room: FNV-1a (32 bits) modulo interestBuckets.
func roomBucket(room string) int {
	h := uint32(2166136261)
	for i := 0; i < len(room); i++ {
		h ^= uint32(room[i])
		h *= 16777619
	}
	return int(h % interestBuckets)
}

// looksLikeSocketID is the default Options.SocketIDRoom: the form of the
// socket ids of package socketio (crypto/rand.Text: 26 characters of the
// base32 alphabet A–Z, 2–7).
func looksLikeSocketID(room string) bool {
	if len(room) != 26 {
		return false
	}
	for i := 0; i < len(room); i++ {
		c := room[i]
		if (c < 'A' || c > 'Z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// nspInterest is one namespace's interest of a node, as announced.
type nspInterest struct {
	nsp   string
	flags byte
	rooms bucketSet
	// keep is, with interestKeeps, how long the namespace keeps the session
	// of a client whose connection broke (the longest of its sessions').
	keep time.Duration
}

// encode appends the wire form of i: namespace:str flags:u8 buckets:bytes,
// buckets being the set as little-endian 64-bit words without trailing zero
// bytes, then keep-ms:uvarint with interestKeeps.
func (i *nspInterest) encode(b []byte) []byte {
	b = appendString(b, i.nsp)
	b = append(b, i.flags)
	var raw [interestBuckets / 8]byte
	for w, v := range i.rooms {
		binary.LittleEndian.PutUint64(raw[w*8:], v)
	}
	n := len(raw)
	for n > 0 && raw[n-1] == 0 {
		n--
	}
	b = appendBytes(b, raw[:n])
	if i.flags&interestKeeps != 0 {
		b = binary.AppendUvarint(b, uint64(i.keep.Milliseconds()))
	}
	return b
}

// maxInterestKeep bounds the keep of an announcement (a day).
const maxInterestKeep = 24 * time.Hour

var (
	errInterestFlags   = errors.New("unknown interest flags")
	errInterestBuckets = errors.New("interest buckets longer than the set")
	errInterestNsp     = errors.New("interest of a namespace not starting with /")
	errInterestCount   = errors.New("interest of more namespaces than a node announces")
)

// maxInterestNamespaces bounds the namespaces of one interest message, so
// that a message cannot make its decoder allocate much more than its size
// (an entry is about 150 bytes in memory, 4 on the wire).
const maxInterestNamespaces = 4096

func (i *nspInterest) decode(r *reader) {
	i.nsp = r.string()
	i.flags = r.byte()
	raw := r.bytes()
	if r.err != nil {
		return
	}
	if !strings.HasPrefix(i.nsp, "/") {
		r.fail(errInterestNsp)
		return
	}
	if i.flags&^knownInterestFlags != 0 {
		r.fail(fmt.Errorf("%w %#x", errInterestFlags, i.flags))
		return
	}
	if len(raw) > interestBuckets/8 {
		r.fail(errInterestBuckets)
		return
	}
	var full [interestBuckets / 8]byte
	copy(full[:], raw)
	for w := range i.rooms {
		i.rooms[w] = binary.LittleEndian.Uint64(full[w*8:])
	}
	if i.flags&interestKeeps != 0 {
		ms := r.uvarint()
		i.keep = time.Duration(min(ms, uint64(maxInterestKeep.Milliseconds()))) * time.Millisecond
	}
}

// localInterest is this node's interest in one routed namespace, kept from
// the room changes of the namespace's local adapter.
type localInterest struct {
	c     *Cluster
	local func() int // sockets of the local adapter (see snapshot)
	// keep is how long the namespace keeps the sessions of clients whose
	// connection broke (0: it keeps none); see interestKeeps.
	keep func() time.Duration

	mu      sync.Mutex
	counts  [interestBuckets]int32 // memberships (socket, room) per bucket, own rooms left out
	rooms   bucketSet              // buckets whose count is above 0
	sockets int                    // sockets in their own room
	keptN   int                    // sessions whose rooms keepRooms holds
}

// roomChanged counts one membership change. Changes of concurrent callers
// may arrive in another order than they were made; counts commute, so the
// result is right once all arrived.
func (li *localInterest) roomChanged(ch adapter.RoomChange) {
	var d int32
	switch ch.Kind {
	case adapter.RoomJoined:
		d = 1
	case adapter.RoomLeft:
		d = -1
	default:
		return
	}
	changed := false
	li.mu.Lock()
	if ch.Room == ch.ID {
		had := li.sockets > 0
		li.sockets += int(d)
		changed = had != (li.sockets > 0)
	} else {
		changed = li.countLocked(ch.Room, d)
	}
	li.mu.Unlock()
	if changed {
		li.c.interestChanged()
	}
}

// countLocked adds d memberships to room's bucket and reports whether the
// bucket entered or left the set; li.mu is held.
func (li *localInterest) countLocked(room string, d int32) bool {
	b := roomBucket(room)
	had := li.rooms.has(b)
	li.counts[b] += d
	now := li.counts[b] > 0
	if now == had {
		return false
	}
	if now {
		li.rooms.set(b)
	} else {
		li.rooms.clear(b)
	}
	return true
}

// hold adds rooms, and a socket, to the interest as if a socket had joined
// them, until release with the same rooms: a session being restored here
// (handoff.go) is routed here before its socket exists.
func (li *localInterest) hold(rooms []string) {
	li.held(rooms, 1)
}

func (li *localInterest) release(rooms []string) {
	li.held(rooms, -1)
}

func (li *localInterest) held(rooms []string, d int32) {
	changed := false
	li.mu.Lock()
	had := li.sockets > 0
	li.sockets += int(d)
	changed = had != (li.sockets > 0)
	for _, room := range rooms {
		if li.countLocked(room, d) {
			changed = true
		}
	}
	li.mu.Unlock()
	if changed {
		li.c.interestChanged()
	}
}

// keepRooms holds rooms, those of a session whose connection broke, for
// keep: while the session can be restored, on any node, the senders go on
// routing its rooms to this node's inbox, from which the restore reads what it
// missed (handoff.go), even if its stand-in socket is gone (the server shut
// down) or the namespace closed (Cluster.kept).
func (li *localInterest) keepRooms(a *nspAdapter, rooms []string, keep time.Duration) {
	rooms = slices.Clone(rooms)
	li.hold(rooms)
	li.mu.Lock()
	li.keptN++
	li.mu.Unlock()
	time.AfterFunc(keep, func() {
		li.release(rooms)
		li.mu.Lock()
		li.keptN--
		over := li.keptN == 0
		li.mu.Unlock()
		if over {
			li.c.keptOver(a)
		}
	})
}

// keeping reports whether sessions of the namespace are kept (keepRooms).
func (li *localInterest) keeping() bool {
	li.mu.Lock()
	defer li.mu.Unlock()
	return li.keptN > 0
}

// snapshot returns the interest to announce for namespace nsp.
func (li *localInterest) snapshot(nsp string) nspInterest {
	li.mu.Lock()
	i := nspInterest{nsp: nsp, rooms: li.rooms}
	sockets := li.sockets > 0
	li.mu.Unlock()
	// A socket that left its own room is still a socket of the namespace
	// (a broadcast to all reaches it): asked of the adapter only then.
	if sockets || li.local() > 0 {
		i.flags |= interestSockets
	}
	if li.keep != nil {
		if k := li.keep(); k > 0 {
			i.flags |= interestKeeps
			i.keep = k
		}
	}
	return i
}

// observedNamespace is the namespace as the local adapter of a routed
// namespace sees it: the room changes reach the interest, then the
// namespace's own observer if it has one.
type observedNamespace struct {
	adapter.Namespace
	obs adapter.RoomObserver // the namespace's, or nil
	in  *localInterest
}

func (n *observedNamespace) ObservesRooms() bool { return true }

func (n *observedNamespace) RoomChanged(ch adapter.RoomChange) {
	n.in.roomChanged(ch)
	if n.obs != nil && n.obs.ObservesRooms() {
		n.obs.RoomChanged(ch)
	}
}

var _ adapter.RoomObserver = (*observedNamespace)(nil)

// routeState is what a Cluster that routes knows of the other nodes' interest.
type routeState struct {
	bus   routingBus
	inbox int // this node's inbox partition
	// pubMu orders this node's routing decisions with its outbox: every
	// routed publish holds it shared from choosing its targets until the
	// outbox took it; a cut (handoff.go) holds it alone.
	pubMu   sync.RWMutex
	cuts    cutWaits      // this node's restores waiting for cuts (handoff.go)
	version atomic.Uint64 // of this node's last announcement
	// announced is the version of the last announcement sent to every node
	// (the membership record carries it: roster.go).
	announced atomic.Uint64
	// building makes version order the order of the snapshots: a higher
	// version never carries an older interest.
	building sync.Mutex
	wake     chan struct{} // this node's interest changed
	// connectedAt is when the bus last became connected (Unix nanos), 0 while
	// it is not; connAccum the connected time (nanoseconds) before that.
	connectedAt atomic.Int64
	connAccum   atomic.Int64

	mu    sync.Mutex
	peers map[string]*peerNode
	// forgotten holds the instances whose interest expire forgot, and when
	// (at most maxForgotten, for a day), for noteReturned.
	forgotten map[instKey]time.Time
	// nForgotten is len(forgotten), read without mu: noteReturned runs for
	// every direct message and has nothing to look up almost always.
	nForgotten atomic.Int64
	grace      map[graceKey]*graceEntry

	waiters waiters // AwaitRouting calls (await.go)

	// The other nodes the bus has heard, as of heardAt, and since when each
	// is heard (busHeard).
	heardMu  sync.Mutex
	heardAt  time.Time
	heard    []string
	busFirst map[string]time.Time
	// conflict: another process uses this node's id (bus.Status
	// NodeIDConflict), as of heardAt.
	conflict bool

	// reported is when each node last answered with the interests it holds
	// of the others (peers.go); r.mu.
	reported map[string]time.Time
}

// peerNode is what this node holds of another node's interest: one entry per
// bus instance (process start) of that node id heard. Two live processes
// under one id (a misconfiguration the bus reports) each announce their own
// interest, and a process restarted under the same id starts its own versions
// (from its clock, which may be behind the earlier process's): versions
// compare within one instance only, and the node is interested in what any
// of its instances is. An instance not heard for NodeTimeout (a process that
// ended, or was replaced by a restart) is dropped by expire; until then the
// node also gets what its earlier process wanted, which costs writes but
// loses nothing.
type peerNode struct {
	insts map[uint64]*peerInterest
}

// leftLocked forgets instance inst of n, which said goodbye at now, but for
// its namespaces that keep sessions, kept for as long as it said (one that
// left already keeps its end); routeState.mu is held.
func (n *peerNode) leftLocked(inst uint64, now time.Time) {
	p := n.insts[inst]
	if p == nil || !p.until.IsZero() {
		return
	}
	keep := p.sessionKeep()
	if keep <= 0 {
		delete(n.insts, inst)
		return
	}
	kept := make(map[string]*nspInterest)
	for name, in := range p.nsps {
		if in.flags&interestKeeps != 0 && in.keep > 0 {
			kept[name] = in
		}
	}
	p.nsps, p.until = kept, now.Add(keep)
}

// latest returns the instance of n heard last, nil when n has none.
func (n *peerNode) latest() *peerInterest {
	var out *peerInterest
	for _, p := range n.insts {
		if out == nil || p.heard.After(out.heard) {
			out = p
		}
	}
	return out
}

// sessionKeep is the longest keep of p's namespaces that keep sessions: a
// silent node is written to at least that long, so that a client of it
// restored elsewhere finds in its inbox what it missed (handoff.go).
func (p *peerInterest) sessionKeep() time.Duration {
	var d time.Duration
	for _, in := range p.nsps {
		if in.flags&interestKeeps != 0 {
			d = max(d, in.keep)
		}
	}
	return d
}

// peerInterest is the last announcement of one instance of another node.
type peerInterest struct {
	version uint64
	heard   time.Time
	// heardConn is routeState.connTime when it was heard first-hand.
	heardConn time.Duration
	// relayed: taken from another node's report (peers.go), the node not
	// heard first-hand since; heard is when the reporting node last heard it.
	relayed bool
	nsps    map[string]*nspInterest
	// until, when set, is when the interest of a node that said goodbye ends:
	// its namespaces that keep sessions are written to until then.
	until time.Time
}

type graceKey struct{ node, nsp string }

// instKey names one bus instance (process) of a node.
type instKey struct {
	node string
	inst uint64
}

// maxForgotten bounds routeState.forgotten.
const maxForgotten = 4096

// noteForgotten records, r.mu held, that the interest of instance inst of
// node id was forgotten at now.
func (r *routeState) noteForgotten(id string, inst uint64, now time.Time) {
	if r.forgotten == nil {
		r.forgotten = make(map[instKey]time.Time)
	}
	if len(r.forgotten) >= maxForgotten {
		var oldest instKey
		var at time.Time
		for k, t := range r.forgotten {
			if at.IsZero() || t.Before(at) {
				oldest, at = k, t
			}
		}
		delete(r.forgotten, oldest)
	}
	r.forgotten[instKey{id, inst}] = now
	r.nForgotten.Store(int64(len(r.forgotten)))
}

// noteReturned reports instance inst of node id, heard again, if its
// interest was forgotten: it was silent for longer than InterestKeep, not
// gone, and what this node published for its sockets since reached no inbox.
// Counted (Stats.RoutingOutages, durasock_cluster_routing_outages_total)
// and logged.
func (c *Cluster) noteReturned(id string, inst uint64) {
	r := c.route
	if r == nil || inst == 0 || r.nForgotten.Load() == 0 {
		return
	}
	r.mu.Lock()
	at, ok := r.forgotten[instKey{id, inst}]
	delete(r.forgotten, instKey{id, inst})
	r.nForgotten.Store(int64(len(r.forgotten)))
	r.mu.Unlock()
	if !ok {
		return
	}
	c.stats.routingOutages.Add(1)
	c.log.Warn("cluster: a node whose interest this node forgot (silent for longer than InterestKeep) speaks again: what this node published for its sockets since reached no inbox",
		slog.String("peer", id), slog.Uint64("instance", inst), slog.Time("forgotten_at", at),
		slog.Duration("interest_keep", c.opts.InterestKeep))
}

// graceEntry is the rooms a socketsJoin of this node made node interested in:
// each bucket until its own end, so that a later socketsJoin to other rooms
// does not keep an earlier one's rooms routed.
type graceEntry struct {
	rooms map[int]time.Time // bucket: end of its grace
	until time.Time         // the latest end of a bucket
}

// has reports whether bucket b is granted at now.
func (g *graceEntry) has(b int, now time.Time) bool {
	until, ok := g.rooms[b]
	return ok && !now.After(until)
}

func newRouteState(b routingBus, id string) *routeState {
	r := &routeState{
		bus:   b,
		inbox: -1,
		cuts:  cutWaits{in: make(chan cutRequest, maxQueuedCuts)},
		wake:  make(chan struct{}, 1),
		peers: make(map[string]*peerNode),
		grace: make(map[graceKey]*graceEntry),
	}
	if b != nil {
		r.inbox = b.InboxOf(id)
	}
	// Versions start at the clock so that a node restarted under the same id
	// announces above what the others remember of its earlier process.
	r.version.Store(uint64(time.Now().UnixNano()))
	return r
}

// startRouting enables interest routing when asked for and the bus has inboxes.
func (c *Cluster) startRouting(ctx context.Context) {
	if !c.opts.InterestRouting {
		return
	}
	rb, ok := c.bus.(routingBus)
	if !ok || !rb.Routing() {
		c.log.Warn("cluster: InterestRouting is on but the bus has no inbox partitions; every namespace uses the shared partitions")
		return
	}
	c.route = newRouteState(rb, c.id)
	c.wg.Add(2)
	go c.interestLoop(ctx)
	go c.cutLoop(ctx)
}

// routes reports whether namespace name is routed (see the top of the file).
func (c *Cluster) routes(name string) bool {
	if c.route == nil {
		return false
	}
	return c.opts.Recoverable == nil || !c.opts.Recoverable(name)
}

func (c *Cluster) isSocketID(room string) bool {
	if c.opts.SocketIDRoom != nil {
		return c.opts.SocketIDRoom(room)
	}
	return looksLikeSocketID(room)
}

// interestChanged asks for an announcement of this node's interest.
func (c *Cluster) interestChanged() {
	if c.route == nil {
		return
	}
	select {
	case c.route.wake <- struct{}{}:
	default:
	}
}

// interestLoop announces this node's interest to every node after it changed,
// at most once per interestDelay.
func (c *Cluster) interestLoop(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.route.wake:
		}
		t.Reset(interestDelay)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The changes until now are in this announcement.
		select {
		case <-c.route.wake:
		default:
		}
		c.sendInterest(ctx, "")
	}
}

// sendInterest sends this node's interest to node to ("" for every node). A
// lost one is made good by the next heartbeat's, or, with the membership
// record, asked for by the node that missed it (roster.go).
func (c *Cluster) sendInterest(ctx context.Context, to string) {
	if c.route == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.HeartbeatInterval)
	defer cancel()
	m := c.interestMessage()
	if err := c.bus.Send(ctx, to, m.marshal()); err == nil && to == "" {
		for {
			at := c.route.announced.Load()
			if at >= m.version || c.route.announced.CompareAndSwap(at, m.version) {
				break
			}
		}
	}
}

// answerInterest queues this node's interest for node to on the control lane.
func (c *Cluster) answerInterest(to string) {
	if c.route == nil {
		return
	}
	c.queueOut(c.controlLane, kindInterest, outgoing{to: to, build: c.interestMessage})
}

// interestMessage is this node's whole interest, under a new version.
func (c *Cluster) interestMessage() *message {
	// The namespaces are read under building, after the builders before
	// this one: a higher version never carries fewer namespaces than a lower
	// one read later.
	c.route.building.Lock()
	defer c.route.building.Unlock()
	c.mu.RLock()
	nsps := make([]*nspAdapter, 0, len(c.nsps)+len(c.kept))
	for _, a := range c.nsps {
		nsps = append(nsps, a)
	}
	for name, a := range c.kept {
		if _, open := c.nsps[name]; !open {
			nsps = append(nsps, a)
		}
	}
	c.mu.RUnlock()
	m := &message{kind: kindInterest, version: c.route.version.Add(1), interest: make([]nspInterest, 0, len(nsps))}
	for _, a := range nsps {
		if a.interest == nil {
			m.interest = append(m.interest, nspInterest{nsp: a.name, flags: interestAll})
			continue
		}
		m.interest = append(m.interest, a.interest.snapshot(a.name))
	}
	return m
}

// learnInterest takes an announcement of instance inst of node from, and
// answers it when it asks (flagAnswer, AwaitRouting) with the version now held
// of that instance, naming the instance: another process under the same id
// reads the answer too, and its versions are not comparable.
func (c *Cluster) learnInterest(from string, inst uint64, m *message) {
	if from == "" || from == c.id {
		return
	}
	if v, ok := c.applyInterest(from, inst, m); ok && m.flags&flagAnswer != 0 {
		c.control(from, &message{kind: kindInterestApplied, version: v, instance: inst})
	}
}

// applyInterest keeps an announcement of instance inst of node from unless it
// holds a later one of that instance, and returns the version it holds of it;
// false for an announcement it does not take (of a node that said goodbye). A
// node that does not route needs no one's interest: it holds every
// announcement as applied.
func (c *Cluster) applyInterest(from string, inst uint64, m *message) (uint64, bool) {
	r := c.route
	if r == nil {
		return m.version, true
	}
	c.mu.RLock()
	_, bye := c.gone[from]
	c.mu.RUnlock()
	if bye {
		return 0, false // a late announcement of a node that left
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.peers[from]
	if n == nil {
		n = &peerNode{insts: make(map[uint64]*peerInterest, 1)}
		r.peers[from] = n
	}
	if p := n.insts[inst]; p != nil && m.version <= p.version {
		p.heard, p.heardConn = now, r.connTime(now)
		p.relayed = false
		return p.version, true
	}
	p := &peerInterest{version: m.version, heard: now, heardConn: r.connTime(now), nsps: make(map[string]*nspInterest, len(m.interest))}
	for i := range m.interest {
		in := m.interest[i]
		p.nsps[in.nsp] = &in
	}
	n.insts[inst] = p
	return p.version, true
}

// setConnected notes whether the bus is connected now. Only the heartbeat
// loop calls it.
func (r *routeState) setConnected(connected bool) {
	now := time.Now().UnixNano()
	if !connected {
		if at := r.connectedAt.Swap(0); at != 0 {
			r.connAccum.Add(now - at)
		}
	} else if r.connectedAt.Load() == 0 {
		r.connectedAt.Store(now)
	}
}

// connTime returns the time the bus has been connected since New, at now: a
// clock that stops while this node is cut off, so that another node's silence
// counted on it is not this node's own.
func (r *routeState) connTime(now time.Time) time.Duration {
	d := r.connAccum.Load()
	if at := r.connectedAt.Load(); at != 0 && now.UnixNano() > at {
		d += now.UnixNano() - at
	}
	return time.Duration(d)
}

// forgetPeer forgets the interest of node id, which left (goodbye). Only a
// goodbye forgets at once: a node that went silent may be alive, cut off from
// the broker, so its interest is kept, and its inbox written to, until it is
// heard from again or stays silent for InterestKeep of this node's connected
// time (expire). The namespaces of a node that keep sessions (interestKeeps)
// are kept for as long as they said: a client of that node restored on
// another one reads what it missed from that node's inbox (handoff.go).
func (c *Cluster) forgetPeer(id string) {
	r := c.route
	if r == nil {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.peers[id]; n != nil {
		for inst := range n.insts {
			n.leftLocked(inst, now)
		}
		if len(n.insts) == 0 {
			delete(r.peers, id)
		}
	}
	for k := range r.grace {
		if k.node == id {
			delete(r.grace, k)
		}
	}
}

// connectedFor reports whether the bus has been connected for d at now.
func (r *routeState) connectedFor(now time.Time, d time.Duration) bool {
	at := r.connectedAt.Load()
	return at != 0 && now.Sub(time.Unix(0, at)) >= d
}

// expire forgets the kept interest of the instances of a node not alive by
// heartbeat silent for keep (InterestKeep) of this node's connected time —
// of wall time for a second-hand entry, counted from when the reporting node
// last heard it (peers.go) —, and of a node alive by heartbeat those silent
// for timeout (NodeTimeout: an instance that ended, or a restart replaced
// it); the hello answers older than timeout of nodes no longer live, and the
// graces that are over. A forgotten instance is remembered for a day, so
// that it is reported if it speaks again (noteReturned).
func (r *routeState) expire(now time.Time, live map[string]bool, timeout, keep time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	conn := r.connTime(now)
	for id, n := range r.peers {
		for inst, p := range n.insts {
			var gone bool
			switch {
			case !p.until.IsZero():
				gone = now.After(p.until)
			case live[id]:
				gone = now.Sub(p.heard) > timeout
			case p.relayed:
				gone = now.Sub(p.heard) > max(keep, p.sessionKeep())
			default:
				gone = conn-p.heardConn > max(keep, p.sessionKeep())
			}
			if !gone {
				continue
			}
			delete(n.insts, inst)
			if !live[id] && p.until.IsZero() {
				r.noteForgotten(id, inst, now)
			}
		}
		if len(n.insts) == 0 {
			delete(r.peers, id)
		}
	}
	for id, at := range r.reported {
		if !live[id] && now.Sub(at) > timeout {
			delete(r.reported, id)
		}
	}
	for k, at := range r.forgotten {
		if now.Sub(at) > 24*time.Hour {
			delete(r.forgotten, k)
		}
	}
	r.nForgotten.Store(int64(len(r.forgotten)))
	for k, g := range r.grace {
		if now.After(g.until) {
			delete(r.grace, k)
			continue
		}
		for b, until := range g.rooms {
			if now.After(until) {
				delete(g.rooms, b)
			}
		}
	}
}

// graceFor is how long a socketsJoin of this node makes the nodes it went to
// interested in its rooms: long enough for their announcements to say so,
// one of which may be lost (the next heartbeat repeats it).
func (c *Cluster) graceFor() time.Duration { return c.opts.NodeTimeout }

// markGrace makes nodes interested in rooms of namespace nsp until until.
func (r *routeState) markGrace(nodes []string, nsp string, rooms []string, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range nodes {
		k := graceKey{id, nsp}
		g := r.grace[k]
		if g == nil {
			g = &graceEntry{rooms: make(map[int]time.Time, len(rooms))}
			r.grace[k] = g
		}
		for _, room := range rooms {
			b := roomBucket(room)
			if until.After(g.rooms[b]) {
				g.rooms[b] = until
			}
		}
		if until.After(g.until) {
			g.until = until
		}
	}
}

// routeTargets returns the other nodes a message of namespace nsp to rooms
// concerns, among the live nodes, those the bus has heard (without inboxes a
// node's bus probes reach this node before its heartbeats; with them, what
// it writes to this node: await.go), and those whose interest is kept
// (forgetPeer): all of them when every,
// else those interested.
func (c *Cluster) routeTargets(nsp string, rooms []string, every bool) []string {
	now := time.Now()
	live := c.knownNodes(c.busHeard(now))
	r := c.route
	isLive := make(map[string]bool, len(live))
	for _, id := range live {
		isLive[id] = true
	}
	out := live[:0]
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range live {
		if every || r.interestedLocked(c, id, nsp, rooms, now) {
			out = append(out, id)
		}
	}
	for id := range r.peers {
		if !isLive[id] && (every || r.interestedLocked(c, id, nsp, rooms, now)) {
			out = append(out, id)
		}
	}
	r.heardMu.Lock()
	conflict := r.conflict
	r.heardMu.Unlock()
	if conflict {
		// Another process under this node's id (a misconfiguration the bus
		// reports) reads this node's inbox, and gets this node's messages
		// there as another node's: its interest is not known (this node
		// drops what comes from its own id), so it gets everything.
		out = append(out, c.id)
	}
	return out
}

// interestedLocked reports whether node id is interested in a message of
// namespace nsp to rooms: whether any of its instances is; r.mu is held.
func (r *routeState) interestedLocked(c *Cluster, id, nsp string, rooms []string, now time.Time) bool {
	n := r.peers[id]
	if n == nil || len(n.insts) == 0 {
		return true // not known yet: everything
	}
	g := r.grace[graceKey{id, nsp}]
	if g != nil && now.After(g.until) {
		g = nil
	}
	for _, p := range n.insts {
		if r.instInterested(c, p.nsps[nsp], g, rooms, now) {
			return true
		}
	}
	return false
}

// instInterested reports whether an instance of interest in (nil: it does
// not serve the namespace) with grace g (or nil) is interested in a message
// to rooms at now.
func (r *routeState) instInterested(c *Cluster, in *nspInterest, g *graceEntry, rooms []string, now time.Time) bool {
	if in == nil && g == nil {
		return false // the node does not serve the namespace
	}
	if in != nil && in.flags&interestAll != 0 {
		return true
	}
	sockets := in != nil && in.flags&interestSockets != 0
	if len(rooms) == 0 {
		return sockets
	}
	for _, room := range rooms {
		if c.isSocketID(room) {
			if sockets {
				return true
			}
			continue
		}
		b := roomBucket(room)
		if (in != nil && in.rooms.has(b)) || (g != nil && g.has(b, now)) {
			return true
		}
	}
	return false
}

// publishRouted publishes payload once on the inbox of each of nodes (once
// per distinct inbox: nodes whose ids share one all read it).
func (c *Cluster) publishRouted(ctx context.Context, nodes []string, payload []byte) error {
	r := c.route
	// The inboxes, for the fan-out count: PublishToNodes writes each once.
	writes := 0
	var seen map[int]struct{}
	if len(nodes) > 1 {
		seen = make(map[int]struct{}, len(nodes))
		for _, id := range nodes {
			seen[r.bus.InboxOf(id)] = struct{}{}
		}
		writes = len(seen)
	} else {
		writes = len(nodes)
	}
	if writes == 0 && c.routingMissing(time.Now()) != "" {
		// Nobody to write to because this node does not know the cluster
		// yet (it started, or came back, before hearing the others): say so.
		c.metrics.unrouted.Inc()
		c.logLimited("cluster: a routed message reached no node: this node does not know every live node's interest yet (a node should serve only once AwaitRoutingReady returned)")
	}
	// All or none: an emit the outbox refuses reaches no node.
	if err := r.bus.PublishToNodes(ctx, nodes, payload); err != nil {
		return err
	}
	c.stats.routed.Add(1)
	c.stats.inboxWrites.Add(uint64(writes))
	c.metrics.routed.Inc()
	c.metrics.fanout.Observe(float64(writes))
	return nil
}
