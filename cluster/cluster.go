package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/prometheus/client_golang/prometheus"
)

// Errors returned by New and by a Cluster.
var (
	// ErrNilBus is returned by New without a bus.
	ErrNilBus = errors.New("cluster: nil bus")
	// ErrClosed is returned by Adapter after Close. Operations of the adapters of a
	// closed cluster return adapter.ErrClosed.
	ErrClosed = errors.New("cluster: closed")
	// ErrNamespaceTaken is returned by Adapter for a namespace that already has an
	// adapter in this cluster.
	ErrNamespaceTaken = errors.New("cluster: namespace already has an adapter")
)

// Defaults of Options.
const (
	defaultRequestTimeout    = 5 * time.Second
	defaultHeartbeatInterval = 5 * time.Second
	defaultInterestKeep      = time.Hour
	defaultMaxServing        = 256
	defaultMaxRelays         = 10000
)

// Options configures a Cluster. The zero value (or nil) gives the defaults.
type Options struct {
	// RequestTimeout bounds a cross-node request (FetchSockets, ServerSideEmit with
	// replies, BroadcastWithAck) whose ctx has no deadline. Default 5 s.
	RequestTimeout time.Duration
	// HeartbeatInterval is how often this node tells the others it is alive.
	// Default 5 s.
	HeartbeatInterval time.Duration
	// NodeTimeout is how long a node may stay silent before it is no longer waited
	// for. Default 3 × HeartbeatInterval.
	NodeTimeout time.Duration
	// MaxServing bounds the answers to other nodes waiting to be sent, in each
	// of the two lanes (control: confirmations, hello answers, fetch answers;
	// replies: ack counts and replies, server-side emit replies). An answer above
	// it is dropped, counted (Stats.DroppedRequests,
	// durasock_cluster_dropped_requests_total{lane}) and logged; its requester
	// sees this node (or the socket) in MissingRepliesError. Default 256.
	MaxServing int
	// MaxRelays bounds the broadcasts with acks of other nodes that this node
	// holds open at once, waiting for the acks of its sockets until the
	// requester's deadline. A request above it is refused before its packet is
	// written: counted (Stats.RefusedRelays,
	// durasock_cluster_relays_refused_total) and logged; its requester sees this
	// node in MissingRepliesError. Default 10 000; -1 means no bound.
	MaxRelays int
	// InterestRouting makes a node receive only the messages that concern its
	// sockets: each message of a routed namespace is written once to the inbox
	// of every node with a socket it may reach, instead of once to the
	// namespace's partition that every node reads. Each node announces the
	// rooms of its sockets to the others (see docs/SCALING.md, "Interest
	// routing"). It takes effect only on a bus with inbox partitions (the
	// Redis streams transport with inboxes; bus.Reliable.Routing), and must be
	// the same on every node, all of them of a version that announces
	// interest. Default false.
	//
	// Every namespace is routed but those Recoverable names. A routed
	// namespace keeps sessions too: with connection state recovery, a client
	// whose node is gone recovers on another node, from its earlier node's
	// inbox (docs/SCALING.md, "Recovery on a routed namespace"). The choice
	// is made when the namespace's adapter is made.
	InterestRouting bool
	// Recoverable, with InterestRouting, names namespaces that are not
	// routed: they use the namespace's partition, which every node reads, as
	// without InterestRouting (their sessions recover across nodes from it).
	// Routed namespaces recover across nodes as well; this keeps a namespace
	// on the shared partitions for a cluster some of whose nodes are of a
	// version without the handoff. It is called once per namespace, when its
	// adapter is made. Default nil: none.
	Recoverable func(namespace string) bool
	// SocketIDRoom, with InterestRouting, tells a room named by a socket's id
	// (which nodes do not announce: one per socket) from the other rooms. A
	// message to such a room goes to every node with sockets in the namespace,
	// one to another room only to the nodes that announced it. Default: the
	// form of package socketio's socket ids (26 characters A–Z, 2–7). A server
	// whose socket ids look otherwise must set it, or messages to its socket
	// ids are not routed.
	SocketIDRoom func(room string) bool
	// InterestKeep, with InterestRouting, is how long a node goes on writing
	// to the inbox of a node it no longer hears (silent without a goodbye: cut
	// off from the broker, or crashed) what that node's last known interest
	// asks for, and reports that interest to the nodes that start meanwhile.
	// Silence counts in this node's connected time (a node cut off itself
	// forgets no one meanwhile). A node cut off for up to that long then
	// reads, once back, everything its sockets missed (or a gap for what the
	// stream's retention trimmed), as it would from the partitions without
	// routing. A node cut off for longer is forgotten, and what was published
	// for its sockets after that reaches no inbox: each node that forgot it
	// logs a warning and counts it when it speaks again
	// (durasock_cluster_routing_outages_total). The cost is writes to the
	// inbox of a node that crashed for good (no goodbye), for that long.
	// Default an hour, as long as the bus remembers a silent node by
	// default (gone nodes); at least NodeTimeout.
	InterestKeep time.Duration
	// Logger receives the log lines of the cluster. Default slog.Default().
	Logger *slog.Logger
	// Registerer, when not nil, receives the cluster's Prometheus metrics
	// (durasock_cluster_*). They are unregistered by Close.
	Registerer prometheus.Registerer
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.RequestTimeout <= 0 {
		r.RequestTimeout = defaultRequestTimeout
	}
	if r.HeartbeatInterval <= 0 {
		r.HeartbeatInterval = defaultHeartbeatInterval
	}
	if r.NodeTimeout <= 0 {
		r.NodeTimeout = 3 * r.HeartbeatInterval
	}
	if r.InterestKeep <= 0 {
		r.InterestKeep = defaultInterestKeep
	}
	r.InterestKeep = max(r.InterestKeep, r.NodeTimeout)
	if r.MaxServing <= 0 {
		r.MaxServing = defaultMaxServing
	}
	switch {
	case r.MaxRelays == 0:
		r.MaxRelays = defaultMaxRelays
	case r.MaxRelays < 0:
		r.MaxRelays = 0 // no bound
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	return r
}

// Stats counts what a Cluster did since New.
type Stats struct {
	// Nodes is the number of other nodes known to be alive now.
	Nodes int `json:"nodes"`
	// Received counts the cluster messages applied or answered.
	Received uint64 `json:"received"`
	// DecodeErrors counts messages dropped because they could not be decoded.
	DecodeErrors uint64 `json:"decode_errors"`
	// UnknownNamespace counts messages for a namespace this node does not serve.
	UnknownNamespace uint64 `json:"unknown_namespace"`
	// DroppedRequests counts answers to requests of other nodes dropped because
	// their lane was full (MaxServing).
	DroppedRequests uint64 `json:"dropped_requests"`
	// ExpiredRequests counts requests of other nodes not served because they
	// arrived after their requester's deadline (a replay after an outage).
	ExpiredRequests uint64 `json:"expired_requests"`
	// Relays is the number of broadcasts with acks of other nodes waiting for
	// the acks of this node's sockets now; RefusedRelays counts those refused
	// because MaxRelays were waiting.
	Relays        int    `json:"relays"`
	RefusedRelays uint64 `json:"refused_relays"`
	// Requests counts the cross-node requests this node made, and RequestTimeouts
	// those that ended without every reply.
	Requests        uint64 `json:"requests"`
	RequestTimeouts uint64 `json:"request_timeouts"`
	// RoutedMessages counts the messages of routed namespaces this node
	// published (InterestRouting), and InboxWrites the inbox writes they took:
	// InboxWrites / RoutedMessages is the mean fan-out.
	RoutedMessages uint64 `json:"routed_messages"`
	InboxWrites    uint64 `json:"inbox_writes"`
	// RoutingOutages counts the nodes (processes) that spoke again after this
	// node forgot their interest (InterestRouting; silent for longer than
	// InterestKeep without a goodbye): what this node published for their
	// sockets meanwhile reached no inbox.
	RoutingOutages uint64 `json:"routing_outages"`
	// NodeTimeouts counts the nodes this node stopped waiting for without a
	// goodbye: silent for NodeTimeout, or their membership entry turned
	// stale. A node that was only unreachable for a while is counted as well
	// (it comes back with a hello).
	NodeTimeouts uint64 `json:"node_timeouts"`
}

// Cluster makes the processes that share a bus behave as one Socket.IO server. One
// Cluster serves every namespace of a process: pass its Adapter method as the
// adapter.Factory of the server.
type Cluster struct {
	bus  bus.Bus
	id   string
	opts Options
	log  *slog.Logger

	cancel    context.CancelFunc // stops the goroutines started by New
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	controlLane *lane // confirmations, hello answers, fetch answers
	replyLane   *lane // ack counts and replies, server-side emit replies

	relayMu   sync.Mutex
	relays    map[*relay]struct{} // open relays (MaxRelays)
	ready     []*relay            // relays with answers to send
	relayWake chan struct{}       // a relay became ready

	mu   sync.RWMutex
	nsps map[string]*nspAdapter
	// kept are the routed namespaces closed while sessions of theirs are
	// kept: their interest is still announced (localInterest.keepRooms).
	kept  map[string]*nspAdapter
	nodes map[string]time.Time // other node id -> last heard from
	// direct is when each live node's last direct message arrived.
	direct map[string]time.Time
	gone   map[string]time.Time // node id -> when it said goodbye
	// insts is when each bus instance (process) of a live node was last
	// heard: a goodbye of one of two processes under one id (goodbye) leaves
	// the node alive.
	insts map[string]map[uint64]time.Time
	// directAt is when a node was last heard on the direct plane (with the
	// membership record only, where nodes keeps the record's word too).
	directAt map[string]time.Time
	reqs     map[uint64]*pending
	nextID   atomic.Uint64

	route  *routeState  // nil: no interest routing (interest.go)
	roster *rosterState // nil: the bus keeps no membership record (roster.go)
	// stopBeats ends heartbeatLoop, which closes beatsDone: Close stops the
	// beats before it leaves, so that no beat follows the goodbye.
	stopBeats context.CancelFunc
	beatsDone chan struct{}
	recall    recallBus     // nil: the bus cannot restore sessions (recovery.go)
	sessions  *sessionStore // nil without recall

	stats   counters
	metrics *metrics
	logGate atomic.Int64 // unix nanos of the last rate-limited log line
}

type counters struct {
	received, decodeErrors, unknownNsp, dropped, requests, timeouts atomic.Uint64
	expired, refusedRelays                                          atomic.Uint64
	routed, inboxWrites, routingOutages, nodeTimeouts               atomic.Uint64
}

// New starts a Cluster on b: it calls b.Receive, announces this node and starts
// heartbeats. The caller keeps ownership of b and closes it after the Cluster.
func New(b bus.Bus, opts *Options) (*Cluster, error) {
	if b == nil {
		return nil, ErrNilBus
	}
	o := opts.withDefaults()
	c := &Cluster{
		bus:       b,
		id:        b.NodeID(),
		opts:      o,
		log:       o.Logger.With(slog.String("component", "cluster"), slog.String("node", b.NodeID())),
		closed:    make(chan struct{}),
		nsps:      make(map[string]*nspAdapter),
		nodes:     make(map[string]time.Time),
		gone:      make(map[string]time.Time),
		reqs:      make(map[uint64]*pending),
		relays:    make(map[*relay]struct{}),
		relayWake: make(chan struct{}, 1),
	}
	// Request ids start at a random point so that replies meant for an earlier
	// process with the same node id are not taken for ours.
	c.nextID.Store(uint64(time.Now().UnixNano()) << 16)
	m, err := newMetrics(c, o.Registerer)
	if err != nil {
		return nil, err
	}
	c.metrics = m
	c.controlLane = newLane(laneControl, o.MaxServing)
	c.controlLane.metric = m.dropped.WithLabelValues(laneControl)
	c.replyLane = newLane(laneReplies, o.MaxServing)
	c.replyLane.metric = m.dropped.WithLabelValues(laneReplies)
	c.replyLane.relays = c.relayWake
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.startLane(ctx, c.controlLane, controlWorkers)
	c.startLane(ctx, c.replyLane, replyWorkers)
	c.startSessions(ctx)
	c.startRouting(ctx)
	c.startRoster()
	hbCtx, hbStop := context.WithCancel(ctx)
	c.stopBeats, c.beatsDone = hbStop, make(chan struct{})
	c.wg.Add(1)
	go func() {
		defer close(c.beatsDone)
		c.heartbeatLoop(hbCtx)
	}()
	b.Receive(c.receive)
	return c, nil
}

// NodeID is the id of this node (the bus's).
func (c *Cluster) NodeID() string { return c.id }

// Adapter returns the adapter of nsp. It is an adapter.Factory:
//
//	srv := socketio.NewServer(&socketio.Options{Adapter: c.Adapter})
func (c *Cluster) Adapter(nsp adapter.Namespace) (adapter.Adapter, error) {
	if nsp == nil {
		_, err := adapter.NewLocal(nil) // its error for a nil namespace
		return nil, fmt.Errorf("cluster: %w", err)
	}
	a := &nspAdapter{c: c, name: nsp.Name(), nsp: nsp}
	seen := nsp
	if c.routes(a.name) {
		// The local adapter reports its room changes to the interest first.
		a.interest = &localInterest{c: c, local: func() int { return len(a.local.SocketIDs(adapter.Options{})) }, keep: a.rec.keeps}
		obs, _ := nsp.(adapter.RoomObserver)
		seen = &observedNamespace{Namespace: nsp, obs: obs, in: a.interest}
	}
	local, err := adapter.NewLocal(seen)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	a.local = local
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed() {
		return nil, ErrClosed
	}
	if _, ok := c.nsps[a.name]; ok {
		return nil, fmt.Errorf("%w: %q", ErrNamespaceTaken, a.name)
	}
	c.nsps[a.name] = a
	c.interestChanged()
	return a, nil
}

// Nodes returns the ids of the other nodes known to be alive, sorted.
func (c *Cluster) Nodes() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.nodes))
	for id := range c.nodes {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Stats returns the counters of the cluster.
func (c *Cluster) Stats() Stats {
	c.mu.RLock()
	n := len(c.nodes)
	c.mu.RUnlock()
	return Stats{
		Nodes:            n,
		Received:         c.stats.received.Load(),
		DecodeErrors:     c.stats.decodeErrors.Load(),
		UnknownNamespace: c.stats.unknownNsp.Load(),
		DroppedRequests:  c.stats.dropped.Load(),
		ExpiredRequests:  c.stats.expired.Load(),
		Relays:           c.relayCount(),
		RefusedRelays:    c.stats.refusedRelays.Load(),
		Requests:         c.stats.requests.Load(),
		RequestTimeouts:  c.stats.timeouts.Load(),
		RoutedMessages:   c.stats.routed.Load(),
		InboxWrites:      c.stats.inboxWrites.Load(),
		RoutingOutages:   c.stats.routingOutages.Load(),
		NodeTimeouts:     c.stats.nodeTimeouts.Load(),
	}
}

// Close says goodbye to the other nodes (until ctx is done), ends pending requests
// with adapter.ErrClosed, closes every adapter and waits until the cluster's
// goroutines have stopped or ctx is done (then it returns ctx's error). It does
// not close the bus. It is idempotent.
func (c *Cluster) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.stopBeats()
		select {
		case <-c.beatsDone:
		case <-ctx.Done():
		}
		bye := (&message{kind: kindGoodbye}).marshal()
		if err := c.bus.Send(ctx, "", bye); err != nil {
			c.log.Warn("cluster: goodbye not sent; other nodes will time this node out", slog.Any("error", err))
		}
		c.leaveRoster(ctx)
		c.mu.Lock()
		close(c.closed)
		nsps := make([]*nspAdapter, 0, len(c.nsps))
		for _, a := range c.nsps {
			nsps = append(nsps, a)
		}
		c.mu.Unlock()
		c.cancel()
		for _, a := range nsps {
			a.closeLocal()
		}
		c.endRelays(nil)
		c.metrics.unregister()
	})
	// The goroutines end promptly once cancelled, unless a Send of the bus
	// blocks: then Close gives up when ctx is done.
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: close: %w", ctx.Err())
	}
}

func (c *Cluster) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *Cluster) nsp(name string) *nspAdapter {
	c.mu.RLock()
	a := c.nsps[name]
	c.mu.RUnlock()
	return a
}

func (c *Cluster) removeNsp(a *nspAdapter) {
	c.mu.Lock()
	if c.nsps[a.name] == a {
		delete(c.nsps, a.name)
		if a.interest != nil && a.interest.keeping() {
			if c.kept == nil {
				c.kept = make(map[string]*nspAdapter)
			}
			c.kept[a.name] = a
		}
	}
	c.mu.Unlock()
	c.interestChanged()
}

// keptOver forgets a closed namespace whose kept sessions all expired.
func (c *Cluster) keptOver(a *nspAdapter) {
	c.mu.Lock()
	if c.kept[a.name] == a {
		delete(c.kept, a.name)
	}
	c.mu.Unlock()
	c.interestChanged()
}

// receive is the bus handler: it decodes a message and applies or serves it
// (reliable kinds, requests included, in order, on the bus's goroutine), or
// hands it to the pending request it answers (replies). Answers leave through
// the lanes, so the bus's goroutine never waits for a Send.
func (c *Cluster) receive(bm bus.Message) {
	if c.isClosed() {
		return
	}
	m, err := decodeMessage(bm.Payload)
	if err != nil {
		c.stats.decodeErrors.Add(1)
		c.metrics.decodeErrors.Inc()
		c.logLimited("cluster: dropped a message that could not be decoded",
			slog.String("origin", bm.Origin), slog.Uint64("seq", bm.Seq), slog.Int("bytes", len(bm.Payload)),
			slog.Uint64("decode_errors", c.stats.decodeErrors.Load()), slog.Any("error", err))
		return
	}
	c.stats.received.Add(1)
	m.pos, m.inst, m.seq, m.part = bm.ID, bm.Instance, bm.Seq, bm.Partition
	if bm.Seq == 0 { // only the direct plane says a node is alive now
		c.heard(bm.Origin, m)
	}
	switch m.kind {
	case kindBroadcast, kindAddSockets, kindDelSockets, kindDisconnect, kindServerEmit:
		c.apply(m)
		if m.confirmable() && m.reqID != 0 {
			c.control(bm.Origin, &message{kind: kindApplied, nsp: m.nsp, reqID: m.reqID})
		}
	case kindFetchRequest, kindEmitRequest, kindAckRequest:
		c.serve(bm.Origin, m)
	case kindFetchResponse, kindEmitResponse, kindAckCount, kindAckReply, kindUnknownNsp, kindApplied:
		c.answer(bm.Origin, m)
	case kindInterest:
		c.learnInterest(bm.Origin, bm.Instance, m)
	case kindPeers:
		c.learnPeers(bm.Origin, m)
	case kindInterestApplied:
		// An answer to another process under this node's id (its
		// versions are not comparable) is not one to this process.
		if c.route != nil && (m.instance == 0 || m.instance == c.route.bus.Instance()) {
			c.route.waiters.applied(bm.Origin, m.version)
		}
	case kindHeartbeat:
		// heard already
	case kindGoodbye:
		c.goodbye(bm.Origin, bm.Instance)
	case kindCut:
		c.queueCut(bm.Origin, bm.Instance, m)
	case kindCutAnswer:
		c.cutAnswered(bm.Origin, bm.Instance, m)
	}
}

// logLimited logs at most one line per second, for conditions a broken publisher
// could make happen at every message; the counters keep the exact numbers.
func (c *Cluster) logLimited(msg string, attrs ...any) {
	now := time.Now().UnixNano()
	last := c.logGate.Load()
	if now-last < int64(time.Second) || !c.logGate.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn(msg, attrs...)
}

// apply runs a reliable message on the local sockets of its namespace.
func (c *Cluster) apply(m *message) {
	a := c.nsp(m.nsp)
	if a == nil {
		c.stats.unknownNsp.Add(1)
		return
	}
	a.apply(m)
}

// send delivers a direct message to node to within the request timeout.
func (c *Cluster) send(ctx context.Context, to string, m *message) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	return c.bus.Send(ctx, to, m.marshal())
}

// minDeadline is the smallest request deadline read as a time (Unix
// milliseconds, 2001-09-09); below it the field is a timeout in milliseconds, as
// in the ack-requests of earlier versions.
const minDeadline = 1_000_000_000_000

// serve answers a request of another node, on the bus's goroutine and so in
// order with the origin's other messages of the namespace: what it does to
// local sockets and handlers happens before the messages published after it.
// Nothing here waits: answers are queued on the lanes, and a broadcast with
// acks leaves a relay that answers from callbacks.
func (c *Cluster) serve(from string, m *message) {
	if m.deadline != 0 && m.deadline < minDeadline {
		// An ack-request of a node of an earlier version: the field is its
		// remaining time, and it came on the direct plane, so it is fresh.
		m.deadline += uint64(time.Now().UnixMilli())
	}
	if m.deadline != 0 && time.Now().UnixMilli() > int64(min(m.deadline, 1<<62)) {
		// Its requester has returned already (a replay after an outage, a
		// backlog): serving it now would act on sockets nobody waits for.
		n := c.stats.expired.Add(1)
		c.metrics.expired.Inc()
		c.logLimited("cluster: request of another node arrived after its deadline; not served",
			slog.String("from", from), slog.String("kind", m.kind.String()), slog.String("namespace", m.nsp),
			slog.Duration("late_by", time.Since(time.UnixMilli(int64(min(m.deadline, 1<<62))))),
			slog.Uint64("expired_requests", n))
		return
	}
	a := c.nsp(m.nsp)
	if a == nil || a.isClosed() {
		c.stats.unknownNsp.Add(1)
		c.control(from, &message{kind: kindUnknownNsp, nsp: m.nsp, reqID: m.reqID})
		return
	}
	switch m.kind {
	case kindFetchRequest:
		a.serveFetch(from, m)
	case kindEmitRequest:
		a.serveEmit(from, m)
	case kindAckRequest:
		a.serveAck(from, m)
	}
}

// reply sends an answer to a request; a failure is logged (the requester names
// this node as missing).
func (c *Cluster) reply(ctx context.Context, to string, m *message) {
	if err := c.send(ctx, to, m); err != nil && ctx.Err() == nil {
		c.logLimited("cluster: reply to a request not sent",
			slog.String("to", to), slog.String("kind", m.kind.String()), slog.Any("error", err))
	}
}
