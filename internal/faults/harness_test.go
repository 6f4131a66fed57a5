package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/socketio"
)

const (
	// maxNodes is the most nodes of one scenario.
	maxNodes = 4
	// clientsPerNode is the number of WebSocket clients of every node.
	clientsPerNode = 3
	// settle bounds every wait for a condition (delivery, reconnection). It is
	// generous: tests never assert speed, a condition only has to hold by then.
	settle = 60 * time.Second
	// requestTimeout bounds a cross-node request made during an outage.
	requestTimeout = 2 * time.Second
	// hangMargin is how much later than its timeout a request may return before
	// it counts as hanging.
	hangMargin = 15 * time.Second
	// steadyPhase is how long events flow before a fault and after recovery.
	steadyPhase = time.Second
)

// logBuffer collects the log lines of a scenario's nodes; they are printed when
// the scenario fails (or with -faults.logs).
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// options shape the nodes of a scenario.
type options struct {
	kind         redisbus.Kind
	outbox       bus.OutboxConfig
	retain       bus.RetainConfig
	waitReplicas int
	// routing opens the buses with redisbus.DefaultInboxes inbox partitions
	// and the clusters with InterestRouting (-faults.routing). The pub/sub
	// transport has no inboxes: its scenarios run without routing.
	routing bool
}

// run is one scenario: its nodes, their clients and publishers.
type run struct {
	t      *testing.T
	name   string
	opts   options
	prefix string
	logs   *logBuffer
	log    *slog.Logger
	nodes  []*node
	outage time.Duration // the nominal outage of the scenario, for the summary
	start  time.Time
}

// phase logs the end of a phase of the scenario and when it happened.
func (r *run) phase(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("%6.2fs %s", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

// newRun starts an empty scenario; addNode adds its nodes.
func newRun(t *testing.T, name string, opts options) *run {
	t.Helper()
	opts.routing = (opts.routing || *routingFlag) && opts.kind == redisbus.Streams
	r := &run{t: t, name: name, opts: opts, prefix: "faults", logs: &logBuffer{}, outage: outage(), start: time.Now()}
	r.log = slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() || *logsFlag {
			t.Logf("logs of the nodes of %s:\n%s", name, r.logs.String())
		}
	})
	return r
}

// node is one durasock process: bus, cluster, Socket.IO server, HTTP server,
// clients and publisher.
type node struct {
	r   *run
	idx int
	id  string
	bus *bus.Reliable
	cl  *cluster.Cluster
	srv *socketio.Server
	hs  *httptest.Server
	pub *publisher

	clients []*client

	mu      sync.Mutex
	gapMsgs [maxNodes]uint64 // messages reported missing, by origin index
	gaps    [maxNodes]uint64 // gap reports, by origin index
	drops   map[bus.DropReason]uint64

	gapSeqs  [maxNodes][]bus.SeqRange // bus seqs reported missing, by origin index
	dropSeqs []bus.SeqRange           // bus seqs this node dropped
}

func (n *node) onGap(g bus.Gap) {
	o := originIndex(g.Origin)
	n.mu.Lock()
	defer n.mu.Unlock()
	if o < 0 {
		n.r.log.Error("gap of an unknown origin", "origin", g.Origin)
		return
	}
	n.gapMsgs[o] += g.Missing
	n.gaps[o]++
	n.gapSeqs[o] = append(n.gapSeqs[o], bus.SeqRange{Partition: g.Partition, First: g.After + 1, Last: g.Next - 1})
}

func (n *node) onDrop(d bus.Drop) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drops[d.Reason] += uint64(d.Count)
	n.dropSeqs = append(n.dropSeqs, d.Seqs...)
}

// seqRanges returns the bus seqs n dropped and those it reported missing of
// each origin.
func (n *node) seqRanges() (dropped []bus.SeqRange, missing [maxNodes][]bus.SeqRange) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := range missing {
		missing[i] = slices.Clone(n.gapSeqs[i])
	}
	return slices.Clone(n.dropSeqs), missing
}

func (n *node) gapReport(origin int) (gaps, msgs uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gaps[origin], n.gapMsgs[origin]
}

func (n *node) dropped() map[bus.DropReason]uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[bus.DropReason]uint64, len(n.drops))
	for k, v := range n.drops {
		out[k] = v
	}
	return out
}

func nodeID(i int) string { return fmt.Sprintf("n%d", i) }

func originIndex(id string) int {
	for i := range maxNodes {
		if nodeID(i) == id {
			return i
		}
	}
	return -1
}

// addNode starts a node whose bus uses url, with its clients connected. Redis
// may be down: the bus connects when it appears.
func (r *run) addNode(url string) *node {
	t := r.t
	t.Helper()
	idx := len(r.nodes)
	if idx == maxNodes {
		t.Fatalf("more than %d nodes", maxNodes)
	}
	n := &node{r: r, idx: idx, id: nodeID(idx), drops: make(map[bus.DropReason]uint64)}
	logger := r.log
	inboxes := 0
	if r.opts.routing {
		inboxes = redisbus.DefaultInboxes
	}
	o := redisbus.Options{
		Kind:         r.opts.kind,
		Prefix:       r.prefix,
		Inboxes:      inboxes,
		BlockTimeout: time.Second,
		DialTimeout:  time.Second,
		WriteTimeout: time.Second,
		WaitReplicas: r.opts.waitReplicas,
		Bus: bus.Config{
			NodeID:  n.id,
			Outbox:  r.opts.outbox,
			Retain:  r.opts.retain,
			Backoff: bus.BackoffConfig{Base: 50 * time.Millisecond, Cap: time.Second},
			OnGap:   n.onGap,
			OnDrop:  n.onDrop,
			Logger:  logger,
		},
		// The name lets a scenario find this node's connections in CLIENT LIST.
		ConfigureClient: func(co *rueidis.ClientOption) { co.ClientName = n.id },
	}
	b, err := redisbus.Open(context.Background(), url, &o)
	if err != nil {
		t.Fatalf("redisbus.Open(%s): %v", url, err)
	}
	n.bus = b
	c, err := cluster.New(b, &cluster.Options{Logger: logger, RequestTimeout: requestTimeout, InterestRouting: r.opts.routing})
	if err != nil {
		t.Fatalf("cluster.New: %v", err)
	}
	n.cl = c
	n.srv = socketio.NewServer(&socketio.Options{
		Adapter: c.Adapter,
		// Recovery after an outage delivers a burst: the send queue must hold it,
		// the slow-client bound is not what these tests are about.
		Options: engineio.Options{Logger: logger, SendQueueSize: 1 << 15},
	})
	n.hs = httptest.NewServer(n.srv)
	t.Cleanup(func() { n.close(t) })
	for range clientsPerNode {
		n.clients = append(n.clients, n.dial())
	}
	r.nodes = append(r.nodes, n)
	r.phase("%s started with %d clients", n.id, len(n.clients))
	return n
}

// addNodes adds a node per url.
func (r *run) addNodes(urls ...string) {
	r.t.Helper()
	for _, u := range urls {
		r.addNode(u)
	}
}

func (n *node) close(t *testing.T) {
	if n.pub != nil {
		n.pub.halt()
	}
	for _, c := range n.clients {
		if err := c.c.Close(); err != nil && !errors.Is(err, sioclient.ErrClosed) {
			t.Logf("%s: client close: %v", n.id, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		t.Errorf("%s: server Shutdown: %v", n.id, err)
	}
	n.hs.Close()
	if err := n.cl.Close(ctx); err != nil {
		t.Errorf("%s: cluster Close: %v", n.id, err)
	}
	if err := n.bus.Close(ctx); err != nil {
		t.Errorf("%s: bus Close: %v", n.id, err)
	}
}

// client is one WebSocket Socket.IO client and what it received.
type client struct {
	node int
	c    *sioclient.Client

	mu   sync.Mutex
	got  [maxNodes][]uint64 // seqs in arrival order, by publisher index
	warm [maxNodes]bool
	bad  []string // events that did not decode
	gone error    // why the connection ended before the test closed it
}

func (n *node) dial() *client {
	t := n.r.t
	t.Helper()
	cl := &client{node: n.idx}
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	c, err := sioclient.Dial(ctx, n.hs.URL+"/socket.io/", &sioclient.Options{
		OnEvent: cl.onEvent,
		OnDisconnect: func(err error) {
			if !errors.Is(err, sioclient.ErrClosed) {
				cl.mu.Lock()
				cl.gone = err
				cl.mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatalf("%s: dial: %v", n.id, err)
	}
	cl.c = c
	n.awaitRouting(ctx, "client connected")
	return cl
}

// awaitRouting returns once every live node applied n's interest in the
// namespace "/" (its sockets) as it is now, so that an emit any node makes
// afterwards is routed to n's clients: with interest routing a connection
// counts cluster-wide only then, as a sharded subscription of
// @socket.io/redis-adapter does once Redis confirmed it. It returns at once
// without routing; a node that never reached Redis knows no node to wait for.
func (n *node) awaitRouting(ctx context.Context, what string) {
	t := n.r.t
	t.Helper()
	if !n.r.opts.routing {
		return
	}
	if err := n.cl.AwaitRouting(ctx, "/"); err != nil {
		t.Fatalf("%s: %s: routing not confirmed: %v", n.id, what, err)
	}
}

// awaitRoutingReady returns once n knows the interest of every live node, so
// that what it emits reaches every node with clients. It returns at once
// without routing.
func (n *node) awaitRoutingReady() {
	t := n.r.t
	t.Helper()
	if !n.r.opts.routing {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	if err := n.cl.AwaitRoutingReady(ctx); err != nil {
		t.Fatalf("%s: %v", n.id, err)
	}
}

func (cl *client) onEvent(e *sioclient.Event) {
	var origin int
	var seq uint64
	switch e.Name {
	case "e":
		if err := e.Bind(&origin, &seq); err != nil || origin < 0 || origin >= maxNodes {
			cl.fail(e)
			return
		}
		cl.mu.Lock()
		cl.got[origin] = append(cl.got[origin], seq)
		cl.mu.Unlock()
	case "w":
		if err := e.Bind(&origin); err != nil || origin < 0 || origin >= maxNodes {
			cl.fail(e)
			return
		}
		cl.mu.Lock()
		cl.warm[origin] = true
		cl.mu.Unlock()
	default:
		cl.fail(e)
	}
}

func (cl *client) fail(e *sioclient.Event) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.bad) < 10 {
		cl.bad = append(cl.bad, string(e.Data))
	}
}

// received returns a copy of the seqs received from publisher origin.
func (cl *client) received(origin int) []uint64 {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return slices.Clone(cl.got[origin])
}

// hasUpTo reports whether the client received every seq 1..last of origin.
func (cl *client) hasUpTo(origin int, last uint64) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if uint64(len(cl.got[origin])) < last {
		return false
	}
	seen := make([]bool, last+1)
	var n uint64
	for _, s := range cl.got[origin] {
		if s >= 1 && s <= last && !seen[s] {
			seen[s] = true
			n++
		}
	}
	return n == last
}

// hasSeq reports whether the client received seq of origin.
func (cl *client) hasSeq(origin int, seq uint64) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return slices.Contains(cl.got[origin], seq)
}

// publisher broadcasts numbered events from its node at a steady rate.
type publisher struct {
	n     *node
	every time.Duration
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	mu       sync.Mutex
	seq      uint64 // the last seq emitted
	accepted []bool // accepted[seq-1]: Emit returned nil
	rejected uint64 // Emit returned bus.ErrOutboxFull
	errs     []error
	pad      string // sent with the next event, then cleared
}

func (n *node) startPublisher() {
	p := &publisher{n: n, every: time.Second / time.Duration(rate()), stop: make(chan struct{}), done: make(chan struct{})}
	n.pub = p
	go p.loop()
}

func (p *publisher) loop() {
	defer close(p.done)
	if !p.routingReady() {
		return
	}
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
			p.emit()
		}
	}
}

// routingReady waits, with interest routing, until the node knows the
// interest of every live node (AwaitRoutingReady) before the first event: a
// node routes only to the nodes it knows. startPublishers waited already; a
// node started while Redis is down starts emitting once it reached Redis and
// heard the others. It returns false when the publisher was halted first.
func (p *publisher) routingReady() bool {
	if !p.n.r.opts.routing {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := p.n.cl.AwaitRoutingReady(ctx)
	select {
	case <-p.stop:
		return false
	default:
	}
	if err != nil {
		p.mu.Lock()
		p.errs = append(p.errs, fmt.Errorf("before the first event: %w", err))
		p.mu.Unlock()
		return false
	}
	return true
}

func (p *publisher) emit() {
	p.mu.Lock()
	p.seq++
	seq, pad := p.seq, p.pad
	p.pad = ""
	p.mu.Unlock()
	args := []any{p.n.idx, seq}
	if pad != "" {
		args = append(args, pad)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := p.n.srv.Emit(ctx, "e", args...)
	cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.accepted = append(p.accepted, err == nil)
	switch {
	case err == nil:
	case errors.Is(err, bus.ErrOutboxFull):
		p.rejected++
	default:
		if len(p.errs) < 10 {
			p.errs = append(p.errs, fmt.Errorf("seq %d: %w", seq, err))
		}
	}
}

// padNext makes the next event carry pad as a third argument.
func (p *publisher) padNext(pad string) {
	p.mu.Lock()
	p.pad = pad
	p.mu.Unlock()
}

func (p *publisher) halt() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}

// last returns the last seq emitted.
func (p *publisher) last() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seq
}

// snapshot returns what was emitted and accepted.
func (p *publisher) snapshot() (accepted []bool, rejected uint64, errs []error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.accepted), p.rejected, slices.Clone(p.errs)
}

// onFailure runs report if the test has failed by the time the calling function
// returns, also through t.Fatal: defer it before a testwait wait to log what the
// wait's message cannot say (the state it last saw).
func onFailure(t *testing.T, report func()) {
	if t.Failed() {
		report()
	}
}

// pause lets d pass: the length of a phase of a scenario, not a retry.
func pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// warmUp waits until the nodes know each other and every client got a warm-up
// event from every node through the bus, so that every receiver has a baseline
// sequence for every origin before the scenario starts.
func (r *run) warmUp() {
	r.t.Helper()
	nodes := r.nodes
	defer onFailure(r.t, func() {
		for _, n := range nodes {
			r.t.Logf("%s knows %v", n.id, n.cl.Nodes())
		}
	})
	testwait.For(r.t, settle, "the nodes to find each other", func() bool {
		for _, n := range nodes {
			if len(n.cl.Nodes()) != len(nodes)-1 {
				return false
			}
		}
		return true
	})
	// With routing, a node's clients count once every node applied its
	// interest: when they connected, some nodes may not have known the others
	// yet.
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), settle)
		n.awaitRouting(ctx, "warm-up")
		cancel()
	}
	// Warm-up events go out again on every check: one may have been sent before
	// a receiver's reading started.
	testwait.Every(r.t, 100*time.Millisecond, settle, "warm-up events to reach every client", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range nodes {
			if err := n.srv.Emit(ctx, "w", n.idx); err != nil {
				r.t.Fatalf("%s: warm-up emit: %v", n.id, err)
			}
		}
		return r.allWarm()
	})
	r.phase("warm: every client heard every node")
}

func (r *run) allWarm() bool {
	for _, n := range r.nodes {
		for _, c := range n.clients {
			c.mu.Lock()
			for _, o := range r.nodes {
				if !c.warm[o.idx] {
					c.mu.Unlock()
					return false
				}
			}
			c.mu.Unlock()
		}
	}
	return true
}

// startPublishers starts a publisher on every node that has none, with
// interest routing once every node knows the interest of every other.
func (r *run) startPublishers() {
	r.t.Helper()
	for _, n := range r.nodes {
		if n.pub == nil {
			n.awaitRoutingReady()
		}
	}
	if r.opts.routing {
		r.phase("routing ready on every node")
	}
	for _, n := range r.nodes {
		if n.pub == nil {
			n.startPublisher()
		}
	}
}

// marks returns the last seq of every publisher.
func (r *run) marks() [maxNodes]uint64 {
	var m [maxNodes]uint64
	for _, n := range r.nodes {
		if n.pub != nil {
			m[n.idx] = n.pub.last()
		}
	}
	return m
}

// checkLocal is G1: while the fault lasts, the clients of every node receive
// every event their own node emitted so far, without the broker.
func (r *run) checkLocal(what string) {
	r.t.Helper()
	for _, n := range r.nodes {
		if n.pub == nil {
			continue
		}
		last := n.pub.last()
		testwait.For(r.t, settle, fmt.Sprintf("G1 (%s): the clients of %s to get all %d of its own events while the broker is away", what, n.id, last), func() bool {
			for _, c := range n.clients {
				if !c.hasUpTo(n.idx, last) {
					return false
				}
			}
			return true
		})
	}
	r.phase("G1 checked (%s)", what)
}

// waitState waits until n's bus state satisfies ok, described by want; it fails
// the test after settle.
func (n *node) waitState(t *testing.T, what, want string, ok func(bus.State) bool) {
	t.Helper()
	defer onFailure(t, func() { t.Logf("%s: %s is %v", what, n.id, n.bus.Status().State) })
	testwait.For(t, settle, fmt.Sprintf("%s: %s to be %s", what, n.id, want), func() bool { return ok(n.bus.Status().State) })
}

func connected(s bus.State) bool    { return s == bus.Connected }
func notConnected(s bus.State) bool { return s != bus.Connected }

// waitConnected waits until every bus is Connected.
func (r *run) waitConnected(what string) {
	r.t.Helper()
	for _, n := range r.nodes {
		n.waitState(r.t, what, "connected", connected)
	}
	r.phase("every bus connected (%s)", what)
}

// waitDisconnected waits until every bus in nodes saw the outage.
func (r *run) waitDisconnected(what string, nodes ...*node) {
	r.t.Helper()
	for _, n := range nodes {
		n.waitState(r.t, what, "not connected", notConnected)
	}
	r.phase("outage seen by %d buses (%s)", len(nodes), what)
}

// checkRequestsFailFast makes cross-node requests from n while its bus is down:
// each must return adapter.ErrUnavailable, or at worst an error at its timeout,
// and never hang.
func (r *run) checkRequestsFailFast(n *node) {
	r.t.Helper()
	nsp := n.srv.Of("/")
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"FetchSockets", func(ctx context.Context) error {
			_, err := nsp.FetchSockets(ctx)
			return err
		}},
		{"ServerSideEmitWithAck", func(ctx context.Context) error {
			_, err := nsp.ServerSideEmitWithAck(ctx, "ping")
			return err
		}},
	}
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- c.call(ctx) }()
		hang := time.NewTimer(requestTimeout + hangMargin)
		select {
		case err := <-done:
			took := time.Since(start)
			switch {
			case err == nil:
				r.t.Errorf("%s on %s while the bus is down: no error", c.name, n.id)
			case errors.Is(err, adapter.ErrUnavailable):
				r.t.Logf("%s on %s while the bus is down: %v (after %v)", c.name, n.id, err, took.Round(time.Millisecond))
			default:
				var missing *adapter.MissingRepliesError
				if !errors.As(err, &missing) && !errors.Is(err, context.DeadlineExceeded) {
					r.t.Errorf("%s on %s while the bus is down: unexpected error %v", c.name, n.id, err)
				}
				r.t.Logf("%s on %s while the bus is down: %v (after %v, within its timeout)", c.name, n.id, err, took.Round(time.Millisecond))
			}
		case <-hang.C:
			r.t.Errorf("%s on %s hangs: no answer %v after its timeout", c.name, n.id, hangMargin)
			<-done // ctx ended long ago; a hang here is the failure above
		}
		hang.Stop()
		cancel()
	}
}

// expectation says what a scenario's deliveries must satisfy besides order and
// uniqueness, which always hold.
type expectation int

const (
	// exact: no accepted event is lost and no gap is reported.
	exact expectation = iota
	// accounted: every lost event is a gap that the receiving bus reported:
	// for each receiving node and origin, lost == gap messages reported.
	accounted
)

// result is the tally of a scenario.
type result struct {
	sent, accepted, rejected uint64
	lost, dup, reordered     uint64 // lost: events lost per receiving node; dup, reordered: per client
	unexpected               uint64
	gapMsgs, gaps            uint64 // reported by the receivers' buses
	lostBefore               uint64 // events of other nodes emitted before a late node joined
	stats                    bus.Stats
	hookDrops                map[bus.DropReason]uint64
	lostPerPair              [maxNodes][maxNodes]uint64 // [receiver][origin]
	gapMsgsPerPair           [maxNodes][maxNodes]uint64
}

// finish stops the publishers, waits until every client has the last accepted
// event of every publisher, and checks and logs the tally.
func (r *run) finish(exp expectation, late ...*node) result {
	r.t.Helper()
	for _, n := range r.nodes {
		if n.pub != nil {
			n.pub.halt()
		}
	}
	r.waitDelivered()
	res := r.tally(late)
	r.report(exp, res)
	return res
}

// waitDelivered waits until every client received the last event of every
// publisher that it must receive.
func (r *run) waitDelivered() {
	r.t.Helper()
	type target struct {
		c      *client
		origin int
		seq    uint64
	}
	var targets []target
	for _, o := range r.nodes {
		if o.pub == nil {
			continue
		}
		accepted, _, _ := o.pub.snapshot()
		lastAccepted := uint64(0)
		for i := len(accepted) - 1; i >= 0; i-- {
			if accepted[i] {
				lastAccepted = uint64(i + 1)
				break
			}
		}
		for _, n := range r.nodes {
			seq := lastAccepted
			if n == o {
				seq = uint64(len(accepted))
			}
			if seq == 0 {
				continue
			}
			for _, c := range n.clients {
				targets = append(targets, target{c, o.idx, seq})
			}
		}
	}
	defer onFailure(r.t, func() {
		for _, tg := range targets {
			if !tg.c.hasSeq(tg.origin, tg.seq) {
				r.t.Logf("a client of %s never got event %d of %s", nodeID(tg.c.node), tg.seq, nodeID(tg.origin))
			}
		}
	})
	testwait.For(r.t, settle, "every client to get the last event of every publisher", func() bool {
		for _, tg := range targets {
			if !tg.c.hasSeq(tg.origin, tg.seq) {
				return false
			}
		}
		return true
	})
	r.phase("every client has the last event of every publisher")
	// Let anything still in flight (a duplicate, a replay) arrive before counting.
	pause(200 * time.Millisecond)
}

// tally compares what every client got with what every publisher emitted.
func (r *run) tally(late []*node) result {
	var res result
	res.hookDrops = make(map[bus.DropReason]uint64)
	accepted := make([][]bool, maxNodes)
	for _, o := range r.nodes {
		if o.pub == nil {
			continue
		}
		acc, rej, errs := o.pub.snapshot()
		accepted[o.idx] = acc
		res.sent += uint64(len(acc))
		res.rejected += rej
		for _, a := range acc {
			if a {
				res.accepted++
			}
		}
		for _, err := range errs {
			r.t.Errorf("%s: Emit: %v", o.id, err)
		}
	}
	for _, n := range r.nodes {
		s := n.bus.Stats()
		addStats(&res.stats, s)
		for reason, c := range n.dropped() {
			res.hookDrops[reason] += c
		}
		isLate := slices.Contains(late, n)
		for _, o := range r.nodes {
			if o.pub == nil {
				continue
			}
			gaps, msgs := n.gapReport(o.idx)
			res.gaps += gaps
			res.gapMsgs += msgs
			res.gapMsgsPerPair[n.idx][o.idx] = msgs
			var nodeLost []uint64
			for ci, c := range n.clients {
				tl := tallyClient(c.received(o.idx), accepted[o.idx], n == o, isLate && n != o)
				res.dup += tl.dup
				res.reordered += tl.reordered
				res.unexpected += tl.unexpected
				if tl.dup+tl.reordered+tl.unexpected > 0 {
					r.t.Errorf("client %d of %s, events of %s: %d duplicated, %d reordered, %d never emitted or rejected (first seqs %v)",
						ci, n.id, o.id, tl.dup, tl.reordered, tl.unexpected, head(c.received(o.idx), 20))
				}
				nodeLost = append(nodeLost, tl.lost)
				if ci == 0 {
					res.lostBefore += tl.before
				}
			}
			// The clients of one node share its bus: they must agree on what it
			// delivered.
			for ci, l := range nodeLost {
				if l != nodeLost[0] {
					r.t.Errorf("clients of %s disagree on the events of %s they lost: client %d lost %d, client 0 lost %d",
						n.id, o.id, ci, l, nodeLost[0])
				}
			}
			if len(nodeLost) > 0 {
				res.lostPerPair[n.idx][o.idx] = nodeLost[0]
				res.lost += nodeLost[0]
			}
		}
		for ci, c := range n.clients {
			c.mu.Lock()
			gone, bad := c.gone, c.bad
			c.mu.Unlock()
			if gone != nil {
				r.t.Errorf("client %d of %s was disconnected: %v", ci, n.id, gone)
			}
			if len(bad) > 0 {
				r.t.Errorf("client %d of %s got events it could not read: %q", ci, n.id, bad)
			}
		}
	}
	return res
}

func addStats(dst *bus.Stats, s bus.Stats) {
	dst.Accepted += s.Accepted
	dst.Rejected += s.Rejected
	dst.Published += s.Published
	dst.Replayed += s.Replayed
	dst.DroppedMaxAge += s.DroppedMaxAge
	dst.DroppedOverflow += s.DroppedOverflow
	dst.DroppedClosed += s.DroppedClosed
	dst.Received += s.Received
	dst.Duplicates += s.Duplicates
	dst.Gaps += s.Gaps
	dst.GapMessages += s.GapMessages
	dst.DecodeErrors += s.DecodeErrors
	dst.ProbesSent += s.ProbesSent
	dst.ProbeFailures += s.ProbeFailures
	dst.Reconnects += s.Reconnects
}

func head(s []uint64, n int) []uint64 {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// clientTally is what one client got from one publisher.
type clientTally struct {
	lost, dup, reordered, unexpected uint64
	before                           uint64 // missing before the first event received (late joiner)
}

// tallyClient checks the seqs a client got from one publisher. A client of the
// publisher's own node must get every event emitted (accepted or not: local
// delivery does not wait for the bus); others every accepted event. A late
// joiner is not owed the events before the first one it got.
func tallyClient(got []uint64, accepted []bool, local, late bool) clientTally {
	var tl clientTally
	sent := uint64(len(accepted))
	seen := make([]bool, sent+1)
	var highest uint64
	for _, s := range got {
		switch {
		case s < 1 || s > sent || (!local && !accepted[s-1]):
			tl.unexpected++
			continue
		case seen[s]:
			tl.dup++
			continue
		case s < highest:
			tl.reordered++
		}
		seen[s] = true
		highest = max(highest, s)
	}
	first := uint64(1)
	if late && len(got) > 0 {
		first = got[0]
	}
	for s := uint64(1); s <= sent; s++ {
		if seen[s] || (!local && !accepted[s-1]) {
			continue
		}
		if s < first {
			tl.before++
			continue
		}
		tl.lost++
	}
	return tl
}

// report logs the summary line of a scenario and checks the expectation.
func (r *run) report(exp expectation, res result) {
	t := r.t
	t.Helper()
	s := res.stats
	kind := r.opts.kind.String()
	routing := "off"
	if r.opts.routing {
		// Messages routed and inbox writes they took: proof that the events
		// went through the inboxes.
		var routed, writes uint64
		for _, n := range r.nodes {
			cs := n.cl.Stats()
			routed += cs.RoutedMessages
			writes += cs.InboxWrites
		}
		routing = fmt.Sprintf("on(routed=%d,inbox_writes=%d)", routed, writes)
	}
	summary := fmt.Sprintf("SUMMARY scenario=%s transport=%s routing=%s outage=%v nodes=%d clients=%d rate=%d/s sent=%d accepted=%d rejected=%d lost=%d dup=%d reordered=%d gap_msgs=%d gaps=%d drops(max_age/overflow/closed)=%d/%d/%d dup_dropped=%d replayed=%d reconnects=%d probe_failures=%d",
		r.name, kind, routing, r.outage, len(r.nodes), len(r.nodes)*clientsPerNode, rate(), res.sent, res.accepted, res.rejected,
		res.lost, res.dup, res.reordered, res.gapMsgs, res.gaps,
		s.DroppedMaxAge, s.DroppedOverflow, s.DroppedClosed, s.Duplicates, s.Replayed, s.Reconnects, s.ProbeFailures)
	if res.lostBefore > 0 {
		summary += fmt.Sprintf(" not_owed_before_join=%d", res.lostBefore)
	}
	t.Log(summary)

	if res.sent == 0 {
		t.Errorf("no event was emitted")
	}
	if s.Accepted < res.accepted {
		t.Errorf("bus Stats.Accepted %d below the %d events the publishers saw accepted", s.Accepted, res.accepted)
	}
	if s.GapMessages != res.gapMsgs {
		t.Errorf("Stats.GapMessages %d, OnGap reported %d", s.GapMessages, res.gapMsgs)
	}
	hook := res.hookDrops
	if hook[bus.DropMaxAge] != s.DroppedMaxAge || hook[bus.DropOverflow] != s.DroppedOverflow || hook[bus.DropClosed] != s.DroppedClosed {
		t.Errorf("drops in Stats (%d/%d/%d) differ from drops passed to OnDrop (%v)",
			s.DroppedMaxAge, s.DroppedOverflow, s.DroppedClosed, hook)
	}
	switch exp {
	case exact:
		if res.lost != 0 || res.gapMsgs != 0 {
			t.Errorf("%s: %d events lost, %d reported as gaps; want none", r.name, res.lost, res.gapMsgs)
		}
	case accounted:
		for _, n := range r.nodes {
			for _, o := range r.nodes {
				if n == o || o.pub == nil {
					continue
				}
				if lost, gap := res.lostPerPair[n.idx][o.idx], res.gapMsgsPerPair[n.idx][o.idx]; lost != gap {
					t.Errorf("%s: %s lost %d events of %s but reported %d missing: a loss is silent or a gap is false",
						r.name, n.id, lost, o.id, gap)
				}
			}
		}
	}
	var local []string
	for _, n := range r.nodes {
		if res.lostPerPair[n.idx][n.idx] != 0 {
			local = append(local, fmt.Sprintf("%s lost %d of its own", n.id, res.lostPerPair[n.idx][n.idx]))
		}
	}
	if len(local) > 0 {
		t.Errorf("G1: local delivery lost events: %s", strings.Join(local, ", "))
	}
}

// checkWindow checks that every client got every accepted event emitted after
// from and up to to (marks of the publishers): those events waited in the
// outboxes during an outage, and nothing may erase them.
func (r *run) checkWindow(what string, from, to [maxNodes]uint64) {
	r.t.Helper()
	for _, o := range r.nodes {
		if o.pub == nil {
			continue
		}
		accepted, _, _ := o.pub.snapshot()
		for _, n := range r.nodes {
			for ci, c := range n.clients {
				seen := make(map[uint64]bool)
				for _, s := range c.received(o.idx) {
					seen[s] = true
				}
				var missing []uint64
				for s := from[o.idx] + 1; s <= to[o.idx]; s++ {
					if (n == o || accepted[s-1]) && !seen[s] {
						missing = append(missing, s)
					}
				}
				if len(missing) > 0 {
					r.t.Errorf("%s: client %d of %s misses %d events of %s emitted %s (first %v)",
						r.name, ci, n.id, len(missing), o.id, what, head(missing, 10))
				}
			}
		}
	}
}

// eventStream is the stream the events of the nodes travel on, for a fault
// aimed at it: the partition of the namespace "/", or with interest routing
// the inbox of the first node, which carries the events of the others to it
// (the harness's buses have the default shared partitions).
func (r *run) eventStream() string {
	n := r.nodes[0]
	if !r.opts.routing {
		return redisbus.StreamKey(r.prefix, n.bus.PartitionOf("/"))
	}
	return redisbus.InboxKey(r.prefix, n.bus.InboxOf(n.id)-redisbus.DefaultStreamPartitions)
}
