package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/durasock/durasock/internal/redistest"
)

// Config shapes a run. Zero fields take the defaults named in their comments.
type Config struct {
	// Scenario names the run in its history and verdict.
	Scenario string
	// Seed makes the nemesis schedule (and every random choice of the harness)
	// reproducible.
	Seed int64
	// Nodes is the number of node slots. Default 3.
	Nodes int
	// AOF is Redis' appendfsync: "always", "everysec", "no", or "" (default) for
	// no persistence at all.
	AOF string
	// Rate is the total events per second of all publishers. Default 200.
	Rate int
	// Namespaces of the workload. Default "/a" and "/b".
	Namespaces []string
	// ClientsPerNode is the number of clients of each node in each namespace.
	// Default 2. Clients alternate between room r1, room r2 and both.
	ClientsPerNode int
	// Weights shares the rate between namespaces (same order); default equal.
	// Uneven weights make the partitions of the streams fill at different
	// speeds, so a lagging reader sees their frames interleaved.
	Weights []float64
	// TailPublishers is the number of publishers that stop for good when the
	// first nemesis step begins: what they sent last is the tail of their
	// stream, which only tail detection can report.
	TailPublishers int
	// AckEvery makes every n-th event a broadcast with acknowledgements (the
	// request plane) instead of a plain one; 0: none.
	AckEvery int
	// PublishTimeout is how long a publisher waits for its node's answer to
	// a publish before it records the event as unknown. Default 2s.
	PublishTimeout time.Duration
	// MuteAcks makes the first client of every node and namespace never
	// answer a broadcast with acknowledgements: its node's relays wait for
	// it until the broadcast's timeout.
	MuteAcks bool
	// AckAsync makes nodes answer a publish with acknowledgements at once,
	// with the broadcast still waiting for its replies: many wait at a time.
	// Their order among a publisher's events is then not the node's to keep.
	AckAsync bool
	// AckPairs makes each publisher send its events in pairs: the node emits
	// the first as a plain broadcast and the second, at once after it, with
	// acknowledgements (as an application calling Emit then EmitWithAck).
	// Clients in both rooms see whether the two planes keep their order.
	AckPairs bool
	// PayloadBytes pads every event with a string of this length (0: none).
	PayloadBytes int
	// ClientMaxRate bounds the events per second each client reads (its
	// handler's cost); 0 reads as fast as it can. A client that keeps up with
	// the steady rate but not with a burst is what a replay after an outage
	// must not cut.
	ClientMaxRate int
	// SendQueue is each node's Engine.IO send queue (messages per session);
	// 0 is the product's default.
	SendQueue int
	// StreamMaxLen and OutboxMax are passed to the nodes' buses; 0 is the
	// product's default.
	StreamMaxLen int64
	OutboxMax    int
	// OutboxMaxAge is the nodes' outbox max age; 0 is the product's default.
	OutboxMaxAge time.Duration
	// ReadCount is the nodes' redisbus ReadCount (entries per partition and
	// read); 0 is the product's default. A small one makes a lagging reader
	// interleave the partitions finely.
	ReadCount int64
	// NodePing is the nodes' Engine.IO ping interval and timeout: a client is
	// cut after about twice this of silence (a frozen node). Default 5s.
	NodePing time.Duration
	// OfficialClients is the number of official socket.io-client clients of
	// each node (namespaces and rooms by turns), each behind a load balancer
	// of its own, reconnecting with connection state recovery (which the
	// nodes then enable). 0: none.
	OfficialClients int
	// EmitterPublishers is the number of publishers that emit through the
	// emitter package from the harness process (one origin for all,
	// namespaces by turns). 0: none.
	EmitterPublishers int
	// EmitterNamespaces are the namespaces of the emitter publishers, by
	// turns. Default Namespaces.
	EmitterNamespaces []string
	// Sentinel runs Redis as a Sentinel set (primary, replica, three
	// sentinels) instead of one server; network operations are then
	// unavailable (nodes reach Redis without a proxy).
	Sentinel bool
	// Replicas is the number of replicas of the Sentinel set's primary.
	// Default 1.
	Replicas int
	// Cluster runs Redis as a Redis Cluster (three primaries with a replica
	// each); network operations are unavailable there too.
	Cluster bool
	// WaitReplicas is the nodes' redisbus WaitReplicas.
	WaitReplicas int
	// Routing runs the nodes with interest routing: their buses have
	// redisbus.DefaultInboxes inbox partitions, the cluster routes the
	// namespaces without connection state recovery to the inboxes of the
	// nodes that have sockets there, and a join is answered once every
	// other node knows it (see docs of the node's join handler).
	Routing bool
	// Settle bounds every wait for a condition. Default 60s.
	Settle time.Duration
	// Logf receives progress lines. Default: none.
	Logf func(format string, args ...any)
}

func (c *Config) defaults() {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Rate == 0 {
		c.Rate = 200
	}
	if len(c.Namespaces) == 0 {
		c.Namespaces = []string{"/a", "/b"}
	}
	if c.ClientsPerNode == 0 {
		c.ClientsPerNode = 2
	}
	if c.NodePing == 0 {
		c.NodePing = 5 * time.Second
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 2 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 60 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

var rooms = []string{"r1", "r2"}

// Run is one cluster under test: a redis-server, a fault proxy per node slot, the
// node processes, clients and publishers, and their history.
type Run struct {
	cfg  Config
	clk  clock
	hist *History
	rng  *rand.Rand
	// deck is what is left of the shuffled operations deckOf names (draw).
	deck   []string
	deckOf string
	redis  *redistest.Server // standalone; nil with Sentinel
	// sentinel is the Sentinel set (primary, replica, three sentinels) when
	// Config.Sentinel; nodes then reach Redis directly, without proxies.
	sentinel *redistest.SentinelSet
	// cluster is the Redis Cluster (three primaries, three replicas) when
	// Config.Cluster; nodes reach it directly too.
	cluster *redistest.ClusterSet

	proxies []*redistest.Proxy

	mu        sync.Mutex
	slots     [][]*nodeProc // slots[i]: the processes of slot i, oldest first
	newIDs    []int         // slots[i] restarted with a new id this many times
	pubs      []*publisher
	clients   []*client
	js        *jsClients    // the official clients; nil without
	emitter   *emitterRun   // nil without emitter publishers
	epubs     []*emitterPub // publishers through the emitter
	nextSess  int
	steps     int
	stopping  bool
	closeOnce sync.Once
	wg        sync.WaitGroup // publishers and the sampler
	clientWG  sync.WaitGroup // client loops
	done      chan struct{}
}

// Start starts Redis, the proxies and the nodes, and connects the clients.
// Close stops everything by PID; call it (t.Cleanup) even when Start fails.
func Start(ctx context.Context, cfg Config) (*Run, error) {
	cfg.defaults()
	r := &Run{
		cfg:  cfg,
		clk:  clock{start: time.Now()},
		hist: &History{Seed: cfg.Seed, Scenario: cfg.Scenario},
		rng:  rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6e656d65)),
		done: make(chan struct{}),
	}
	var opts []redistest.Option
	if cfg.AOF != "" {
		opts = append(opts, redistest.WithAOFPolicy(cfg.AOF))
	}
	r.slots = make([][]*nodeProc, cfg.Nodes)
	r.newIDs = make([]int, cfg.Nodes)
	switch {
	case cfg.Sentinel:
		ss, err := redistest.NewSentinel(ctx, append(opts, redistest.WithReplicas(cfg.Replicas))...)
		if err != nil {
			return r, err
		}
		r.sentinel = ss
	case cfg.Cluster:
		cs, err := redistest.NewCluster(ctx, opts...)
		if err != nil {
			return r, err
		}
		r.cluster = cs
	default:
		srv, err := redistest.NewStandalone(ctx, opts...)
		if err != nil {
			return r, err
		}
		r.redis = srv
		for range cfg.Nodes {
			px, err := redistest.StartProxy(srv.Addr())
			if err != nil {
				return r, err
			}
			r.proxies = append(r.proxies, px)
		}
	}
	// The nodes start together, as a cluster's nodes do when it is deployed:
	// with interest routing each one listens only once its bus has been
	// connected for 1.25 heartbeat intervals (AwaitRoutingReady).
	insts := make([]*instHist, cfg.Nodes)
	for i := range cfg.Nodes {
		insts[i] = r.newInstance(i, false)
	}
	errs := make([]error, cfg.Nodes)
	var starting sync.WaitGroup
	for i := range cfg.Nodes {
		starting.Go(func() { _, errs[i] = r.launchNode(ctx, insts[i]) })
	}
	starting.Wait()
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	if err := r.waitMeshed(ctx); err != nil {
		return r, err
	}
	id := 0
	for i := range cfg.Nodes {
		for _, ns := range cfg.Namespaces {
			for k := range cfg.ClientsPerNode {
				var rs []string
				switch k % 3 {
				case 0:
					rs = []string{"r1"}
				case 1:
					rs = []string{"r2"}
				default:
					rs = []string{"r1", "r2"}
				}
				c := &client{r: r, id: id, ns: ns, rooms: rs, home: i, bounce: make(chan struct{}, 1), ready: make(chan struct{}),
					mute: cfg.MuteAcks && k == 0}
				id++
				r.clients = append(r.clients, c)
			}
		}
	}
	for _, c := range r.clients {
		r.clientWG.Add(1)
		go c.loop()
	}
	for _, c := range r.clients {
		if err := waitChan(ctx, c.ready, cfg.Settle); err != nil {
			return r, fmt.Errorf("nemesis: client %d never connected: %w", c.id, err)
		}
	}
	if cfg.OfficialClients > 0 {
		if err := r.startOfficial(ctx, id); err != nil {
			return r, err
		}
	}
	nPubs := 0
	for i := range cfg.Nodes {
		for _, ns := range cfg.Namespaces {
			p := &publisher{r: r, home: i, hist: &pubHist{ID: nPubs, Namespace: ns, Rooms: rooms}}
			nPubs++
			r.pubs = append(r.pubs, p)
			r.hist.Publishers = append(r.hist.Publishers, p.hist)
		}
	}
	// The tail publishers are the first ones: those of node n0 first.
	for i := 0; i < cfg.TailPublishers && i < len(r.pubs); i++ {
		r.pubs[i].tail = true
	}
	total := 0.0
	weight := func(ns string) float64 {
		if i := slices.Index(cfg.Namespaces, ns); i >= 0 && i < len(cfg.Weights) {
			return cfg.Weights[i]
		}
		return 1
	}
	if cfg.EmitterPublishers > 0 {
		em, err := r.startEmitter(ctx)
		if err != nil {
			return r, err
		}
		r.emitter = em
		for k := range cfg.EmitterPublishers {
			nss := cfg.EmitterNamespaces
			if len(nss) == 0 {
				nss = cfg.Namespaces
			}
			ns := nss[k%len(nss)]
			p := &emitterPub{r: r, e: em, hist: &pubHist{ID: nPubs, Namespace: ns, Rooms: rooms}, stop: make(chan struct{})}
			nPubs++
			r.epubs = append(r.epubs, p)
			r.hist.Publishers = append(r.hist.Publishers, p.hist)
		}
	}
	for _, p := range r.pubs {
		total += weight(p.hist.Namespace)
	}
	for _, p := range r.epubs {
		total += weight(p.hist.Namespace)
	}
	for _, p := range r.epubs {
		p.every = float64(cfg.Rate) * weight(p.hist.Namespace) / total
		r.wg.Add(1)
		go p.loop()
	}
	for _, p := range r.pubs {
		p.every = float64(cfg.Rate) * weight(p.hist.Namespace) / total
		if cfg.AckPairs {
			p.every /= 2 // every emit sends two events
		}
		p.stop = make(chan struct{})
		r.wg.Add(1)
		go p.loop()
	}
	r.wg.Add(1)
	go r.sampleLoop()
	r.logf("started: %d nodes, %d clients (%d official), %d publishers (%d through the emitter) at %d events/s, AOF %q, routing %v, seed %d",
		cfg.Nodes, len(r.clients)+cfg.Nodes*cfg.OfficialClients, cfg.Nodes*cfg.OfficialClients, len(r.pubs)+len(r.epubs), len(r.epubs),
		cfg.Rate, cfg.AOF, cfg.Routing, cfg.Seed)
	return r, nil
}

// recovery is the nodes' connection state recovery: on with official clients.
func (r *Run) recovery() time.Duration {
	if r.cfg.OfficialClients > 0 {
		return 2 * time.Minute
	}
	return 0
}

// officialNamespace is the namespace of the k-th official client of a node.
func (r *Run) officialNamespace(k int) string { return r.cfg.Namespaces[k%len(r.cfg.Namespaces)] }

// startOfficial starts the official clients, with ids from id on, and waits
// until each has joined its rooms.
func (r *Run) startOfficial(ctx context.Context, id int) error {
	js, err := startJSClients(r)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.js = js
	r.mu.Unlock()
	var cs []*jsClient
	for i := range r.cfg.Nodes {
		for k := range r.cfg.OfficialClients {
			ns := r.officialNamespace(k)
			rs := [][]string{{"r1", "r2"}, {"r1"}, {"r2"}}[k%3]
			c, err := js.open(id, ns, rs, i)
			if err != nil {
				return err
			}
			id++
			cs = append(cs, c)
		}
	}
	for _, c := range cs {
		if err := waitChan(ctx, c.ready, r.cfg.Settle); err != nil {
			return fmt.Errorf("nemesis: official client %d never joined: %w (%s)", c.id, err, js.logs.String())
		}
	}
	return nil
}

// currentSessions returns the latest session of every client.
func (r *Run) currentSessions() []*sessHist {
	var out []*sessHist
	for _, c := range r.clients {
		if s := c.current(); s != nil {
			out = append(out, s)
		}
	}
	if r.js != nil {
		r.js.mu.Lock()
		for _, c := range r.js.clients {
			if s := c.current(); s != nil {
				out = append(out, s)
			}
		}
		r.js.mu.Unlock()
	}
	return out
}

// sampleLoop records every usable node's RSS and goroutines every 5 s.
func (r *Run) sampleLoop() {
	defer r.wg.Done()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		for _, p := range r.running() {
			if !p.usable() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := p.status(ctx)
			cancel()
			if err != nil {
				continue
			}
			p.hist.mu.Lock()
			p.hist.Samples = append(p.hist.Samples, sample{At: r.clk.now(), RSS: st.RSS, Goroutines: st.Goroutines})
			p.hist.mu.Unlock()
		}
	}
}

func (r *Run) logf(format string, args ...any) {
	r.cfg.Logf("%7.2fs "+format, append([]any{time.Since(r.clk.start).Seconds()}, args...)...)
}

func nodeIDOf(slot, gen int) string {
	if gen == 0 {
		return fmt.Sprintf("n%d", slot)
	}
	return fmt.Sprintf("n%d.%d", slot, gen)
}

// startNode starts a process for slot. newID gives it a node id never used
// before; otherwise the slot's current id.
func (r *Run) startNode(ctx context.Context, slot int, newID bool) (*nodeProc, error) {
	return r.launchNode(ctx, r.newInstance(slot, newID))
}

// newInstance records the next instance of slot, with a node id never used
// before when newID is set, and otherwise the slot's current id.
func (r *Run) newInstance(slot int, newID bool) *instHist {
	r.mu.Lock()
	defer r.mu.Unlock()
	if newID {
		r.newIDs[slot]++
	}
	id := nodeIDOf(slot, r.newIDs[slot])
	hist := &instHist{Instance: len(r.hist.Instances), Slot: slot, NodeID: id}
	r.hist.Instances = append(r.hist.Instances, hist)
	return hist
}

// launchNode starts the process of instance hist and waits until it listens.
func (r *Run) launchNode(ctx context.Context, hist *instHist) (*nodeProc, error) {
	slot, id := hist.Slot, hist.NodeID
	p, err := startNodeProc(ctx, nodeConfig{
		RedisURL:     r.redisURL(slot),
		WaitReplicas: r.cfg.WaitReplicas,
		NodeID:       id,
		Namespaces:   r.cfg.Namespaces,
		SendQueue:    r.cfg.SendQueue,
		OutboxMax:    r.cfg.OutboxMax,
		StreamMaxLen: r.cfg.StreamMaxLen,
		OutboxMaxAge: r.cfg.OutboxMaxAge,
		ReadCount:    r.cfg.ReadCount,
		PingInterval: r.cfg.NodePing,
		PingTimeout:  r.cfg.NodePing,
		DrainTimeout: 10 * time.Second,
		Recovery:     r.recovery(),
		AckAsync:     r.cfg.AckAsync,
		Routing:      r.cfg.Routing,
	}, hist, r.clk)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.slots[slot] = append(r.slots[slot], p)
	r.mu.Unlock()
	r.logf("node %s started (instance %d, pid %d, %s)", id, hist.Instance, hist.PID, p.addr)
	return p, nil
}

// redisURL is the Redis URL of slot's nodes: its proxy, or the sentinels.
func (r *Run) redisURL(slot int) string {
	switch {
	case r.sentinel != nil:
		return r.sentinel.URL()
	case r.cluster != nil:
		return r.cluster.URL()
	}
	return "redis://" + r.proxies[slot].Addr()
}

// primary returns the Redis server that takes writes now.
func (r *Run) primary(ctx context.Context) (*redistest.Server, error) {
	switch {
	case r.sentinel != nil:
		return r.sentinel.CurrentPrimary(ctx)
	case r.cluster != nil:
		// The primary of the partition most traffic of a scenario uses first
		// (with routing, n0's inbox).
		return r.cluster.PrimaryOfSlot(ctx, redistest.KeySlot(partitionKey(r.slotPartition(0))))
	}
	return r.redis, nil
}

// proxy returns slot's fault proxy, or an error in topologies without one.
func (r *Run) proxy(slot int) (*redistest.Proxy, error) {
	if slot >= len(r.proxies) {
		return nil, fmt.Errorf("nemesis: no fault proxy for node %d with Sentinel or Cluster", slot)
	}
	return r.proxies[slot], nil
}

// current returns the newest running process of slot, or nil.
func (r *Run) current(slot int) *nodeProc {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.slots[slot]
	for i := len(ps) - 1; i >= 0; i-- {
		if ps[i].running() {
			return ps[i]
		}
	}
	return nil
}

// running returns every running process.
func (r *Run) running() []*nodeProc {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*nodeProc
	for _, ps := range r.slots {
		for _, p := range ps {
			if p.running() {
				out = append(out, p)
			}
		}
	}
	return out
}

// pickNode returns the process a client of home should use: home's newest if
// usable, else the first usable of the others, else nil.
func (r *Run) pickNode(home int) *nodeProc {
	if p := r.current(home); p != nil && p.usable() {
		return p
	}
	for i := range r.cfg.Nodes {
		if p := r.current((home + i) % r.cfg.Nodes); p != nil && p.usable() {
			return p
		}
	}
	return nil
}

// waitMeshed waits until every usable process is Connected and knows every
// other node id in use.
func (r *Run) waitMeshed(ctx context.Context) error {
	var last string
	err := r.waitFor(ctx, func() bool {
		procs := r.running()
		ids := map[string]bool{}
		for _, p := range procs {
			ids[p.hist.NodeID] = true
		}
		for _, p := range procs {
			if !p.usable() {
				continue
			}
			st, err := p.status(ctx)
			if err != nil {
				last = err.Error()
				return false
			}
			if st.Bus.StateName != "connected" {
				last = fmt.Sprintf("%s is %s", st.Node, st.Bus.StateName)
				return false
			}
			for id := range ids {
				if id != st.Node && !slices.Contains(st.Nodes, id) {
					last = fmt.Sprintf("%s does not know %s (knows %v)", st.Node, id, st.Nodes)
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("nemesis: nodes not meshed: %w (%s)", err, last)
	}
	return nil
}

// waitFor polls ok every 100ms until it holds or Settle passes.
func (r *Run) waitFor(ctx context.Context, ok func() bool) error {
	deadline := time.NewTimer(r.cfg.Settle)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("nemesis: condition not met within %v", r.cfg.Settle)
		case <-tick.C:
		}
	}
}

func waitChan(ctx context.Context, ch <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("nemesis: not within %v", d)
	}
}

// pause waits d or until the run closes.
func (r *Run) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.done:
	}
}

// Finish stops the publishers, waits until every open client session has every
// event it is owed (or delivery stops making progress), closes the clients and
// returns the history. Call Check on it.
func (r *Run) Finish(ctx context.Context) (*History, error) {
	for _, p := range r.pubs {
		p.halt()
	}
	for _, p := range r.epubs {
		p.halt()
	}
	// Every publish answered (or timed out).
	var errs []error
	if err := r.waitFor(ctx, func() bool {
		for _, p := range r.pubs {
			if p.pending() > 0 {
				return false
			}
		}
		return true
	}); err != nil {
		errs = append(errs, fmt.Errorf("publishes still unanswered: %w", err))
	}
	if err := r.waitMeshed(ctx); err != nil {
		errs = append(errs, err)
	}
	// Delivered, or no progress for a while with every bus idle.
	lastTotal, lastChange := -1, time.Now()
	err := r.waitFor(ctx, func() bool {
		if r.lastOwedReceived() {
			return true
		}
		total := r.receivedTotal()
		if total != lastTotal {
			lastTotal, lastChange = total, time.Now()
			return false
		}
		return time.Since(lastChange) > 10*time.Second && r.busesIdle(ctx)
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("delivery did not finish: %w", err))
	}
	r.logf("delivery finished: %d events owed and not received", r.owedNow())
	// Anything still in flight (a duplicate, a replay) arrives before counting.
	r.pause(500 * time.Millisecond)
	if r.js != nil {
		if err := r.js.stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	for _, c := range r.clients {
		c.stop()
	}
	// No session starts or ends after this: the history is final.
	r.clientWG.Wait()
	for _, p := range r.running() {
		if st, err := p.status(ctx); err == nil {
			p.hist.mu.Lock()
			p.hist.Final = st
			p.hist.mu.Unlock()
		}
	}
	return r.hist, errors.Join(errs...)
}

// owedNow counts, over the open sessions, the events they are owed and have
// not received yet.
func (r *Run) owedNow() int {
	idx := newPubIndex(r.hist.Publishers)
	n := 0
	for _, s := range r.currentSessions() {
		if s.open() {
			n += len(idx.missingFor(s, true))
		}
	}
	return n
}

// lastOwedReceived reports whether every open session has the last event of
// every publisher it is owed: cheap enough to poll in long runs.
func (r *Run) lastOwedReceived() bool {
	for _, s := range r.currentSessions() {
		if !s.open() {
			continue
		}
		ready, _, _ := s.snapshot()
		for _, p := range r.hist.Publishers {
			if p.Namespace != s.Namespace {
				continue
			}
			p.mu.Lock()
			var last uint64
			for seq := uint64(len(p.Status)); seq >= 1 && p.Sent[seq-1] > ready; seq-- {
				if p.Status[seq-1] == statusOK && slices.Contains(s.Rooms, p.room(seq)) {
					last = seq
					break
				}
			}
			p.mu.Unlock()
			if last != 0 && !s.has(recv{p.ID, last}) {
				return false
			}
		}
	}
	return true
}

func (s *sessHist) has(g recv) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.Got) - 1; i >= 0; i-- {
		if s.Got[i] == g {
			return true
		}
	}
	return false
}

func (r *Run) receivedTotal() int {
	n := 0
	for _, s := range r.currentSessions() {
		s.mu.Lock()
		n += len(s.Got)
		s.mu.Unlock()
	}
	return n
}

func (r *Run) busesIdle(ctx context.Context) bool {
	for _, p := range r.running() {
		if !p.usable() {
			continue
		}
		st, err := p.status(ctx)
		if err != nil || st.Bus.StateName != "connected" || st.Bus.OutboxLen > 0 {
			return false
		}
	}
	return true
}

// Close stops every goroutine and process of the run, by PID. It is idempotent
// and safe after a failed Start.
func (r *Run) Close() error {
	var errs []error
	r.closeOnce.Do(func() {
		close(r.done)
		r.mu.Lock()
		r.stopping = true
		pubs, clients := r.pubs, r.clients
		r.mu.Unlock()
		for _, p := range pubs {
			p.halt()
		}
		for _, p := range r.epubs {
			p.halt()
		}
		for _, c := range clients {
			c.stop()
		}
		r.wg.Wait()
		if r.emitter != nil {
			errs = append(errs, r.emitter.close())
		}
		r.clientWG.Wait()
		if r.js != nil {
			errs = append(errs, r.js.close())
		}
		r.mu.Lock()
		var procs []*nodeProc
		for _, ps := range r.slots {
			procs = append(procs, ps...)
		}
		r.mu.Unlock()
		for _, p := range procs {
			if p.running() {
				errs = append(errs, p.kill())
			}
		}
		for _, px := range r.proxies {
			px.Close()
		}
		if r.redis != nil {
			errs = append(errs, r.redis.Close())
		}
		if r.sentinel != nil {
			errs = append(errs, r.sentinel.Close())
		}
		if r.cluster != nil {
			errs = append(errs, r.cluster.Close())
		}
	})
	return errors.Join(errs...)
}

// Logs returns the stderr tails of every node process, for failure reports.
func (r *Run) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, ps := range r.slots {
		for _, p := range ps {
			fmt.Fprintf(&b, "--- node %s instance %d pid %d (%s) ---\n%s\n", p.hist.NodeID, p.hist.Instance, p.hist.PID, p.addr, p.logs.String())
		}
	}
	if r.redis != nil {
		fmt.Fprintf(&b, "--- redis %s ---\n%s\n", r.redis.Addr(), r.redis.Logs())
	}
	return b.String()
}
