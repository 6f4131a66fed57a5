package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/durasock/durasock/internal/redistest"
)

// Common settings of the scenarios.
type Common struct {
	Server      string // ServerRelay (default) or ServerDurasock
	DurasockBin string // built when empty and Server is ServerDurasock
	SendQueue   int    // relay nodes: Engine.IO send queue per session; 0: engineio.DefaultSendQueueSize
	// SendQueueFrom is the first node SendQueue applies to (0: every node);
	// the nodes before it keep the engine's default.
	SendQueueFrom int
	// PingInterval is the nodes' Engine.IO ping interval (every server kind);
	// 0: the default, 25 s.
	PingInterval time.Duration
	// TCPKeepAlive is the relay and durasock nodes' TCP keepalive of
	// WebSocket connections (engineio.Options.TCPKeepAlive): 0, the default,
	// none; -1: as Go's listener sets it (15 s).
	TCPKeepAlive time.Duration
	// Routing runs durasock nodes with interest routing: a node reads only
	// what its sockets' rooms need (redisbus inboxes, cluster.Options.InterestRouting).
	Routing bool
	Logf    func(format string, args ...any)
}

func (c *Common) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// TransportLocal runs a scenario on one node with the in-memory adapter and no
// Redis: the baseline that shows what the cluster bus adds.
const TransportLocal = "local"

// benchClient is a client connection of a scenario: the load generator's own
// wsClient, or a sioclient.Client (idle-memory).
type benchClient interface {
	Err() error
	Done() <-chan struct{}
	Close() error
}

// env is a running cluster: one Redis, nodes, clients.
type env struct {
	redis   *redistest.Server
	nodes   []*Node
	clients []benchClient
	recv    []*Receiver
	pubs    []publisher
	base    time.Time
	// tolerateCuts: a subscriber the server disconnects is counted (clientsCut)
	// instead of ending the run.
	tolerateCuts bool
	// slow marks the subscribers (by index) made slow on purpose: drain does
	// not wait for them and clientsCut does not count them.
	slow map[int]bool
	// subAuth is the handshake auth of subscribers (nil: none).
	subAuth any
	// pubEvent is the event publishers emit (default PublishEvent).
	pubEvent string
	// want, when set, is how many events of p receiver r should get (default:
	// every event p sent and the node accepted).
	want func(r *Receiver, p *paced) int64
}

// startEnv starts Redis (unless transport is local) and the nodes. aof, when
// not empty, turns the append-only file on with these redis.conf lines (e.g.
// "appendfsync everysec").
func startEnv(ctx context.Context, c *Common, transport string, nodes int, aof ...string) (*env, error) {
	e := &env{base: time.Now()}
	var opts []redistest.Option
	if len(aof) > 0 {
		opts = append(opts, redistest.WithAOF(), redistest.WithConfig(aof...))
	}
	url := ""
	if transport == TransportLocal {
		nodes = 1
	} else {
		var err error
		if e.redis, err = redistest.NewStandalone(ctx, opts...); err != nil {
			return nil, fmt.Errorf("bench: redis: %w", err)
		}
		url = e.redis.URL()
	}
	for i := range nodes {
		queue := c.SendQueue
		if i < c.SendQueueFrom {
			queue = 0
		}
		n, err := StartNode(ctx, NodeSpec{Server: c.Server, DurasockBin: c.DurasockBin,
			RedisURL: url, Transport: transport, Name: fmt.Sprintf("node%d", i), SendQueue: queue, PingInterval: c.PingInterval,
			TCPKeepAlive: c.TCPKeepAlive, Routing: c.Routing})
		if err != nil {
			return nil, errors.Join(err, e.close())
		}
		e.nodes = append(e.nodes, n)
		c.logf("%s: %s node on %s, pid %d (pprof: %s/debug/pprof/)", n.Name, n.Server, n.Addr, n.PID(), n.URL())
	}
	return e, nil
}

// subscribe connects a receiving client to node i.
func (e *env) subscribe(ctx context.Context, node int, keep bool) error {
	return e.subscribeStalling(ctx, node, keep, nil, nil)
}

// subscribeStalling connects a receiving client to node i that, once stall is
// closed, stops reading (its event handler blocks the read loop) until resume
// is closed: a client too slow for its traffic. Nil channels never stall.
func (e *env) subscribeStalling(ctx context.Context, node int, keep bool, stall, resume <-chan struct{}) error {
	r := newReceiver(node, e.base, keep)
	onEvent := r.OnData
	if stall != nil {
		onEvent = func(data []byte, recv int64) {
			select {
			case <-stall:
				<-resume
			default:
			}
			r.OnData(data, recv)
		}
	}
	var auth []byte
	if e.subAuth != nil {
		var err error
		if auth, err = json.Marshal(e.subAuth); err != nil {
			return fmt.Errorf("bench: auth: %w", err)
		}
	}
	cl, err := dialWS(ctx, e.nodes[node].SocketURL(), auth, e.base, onEvent)
	if err != nil {
		return err
	}
	e.clients = append(e.clients, cl)
	e.recv = append(e.recv, r)
	return nil
}

func (e *env) publisher(ctx context.Context, node int) (publisher, error) {
	event := e.pubEvent
	if event == "" {
		event = PublishEvent
	}
	p, err := newPublisher(ctx, e.nodes[node], event)
	if err != nil {
		return nil, err
	}
	e.pubs = append(e.pubs, p)
	return p, nil
}

// clientErr says whether a client stopped.
func (e *env) clientErr() error {
	for i, c := range e.clients {
		if err := c.Err(); err != nil {
			return fmt.Errorf("bench: subscriber %d stopped: %w", i, err)
		}
	}
	return nil
}

// clientsCut counts, per node, the subscribers that stopped (the server ended
// their connection) before closeClients.
func (e *env) clientsCut() []int {
	out := make([]int, len(e.nodes))
	for i, c := range e.clients {
		if c.Err() != nil && !e.slow[i] {
			out[e.recv[i].Node]++
		}
	}
	return out
}

// warmUp sends events from a fresh publisher on every given node until every
// receiver that should get them has one, so the bus path is live before
// measuring. It uses publisher ids from id on and returns the next free id.
func (e *env) warmUp(ctx context.Context, pubs []publisher, id int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	seq := 0
	buf := make([]byte, 0, 64)
	for {
		done := true
		for _, r := range e.recv {
			for k := range pubs {
				if r.Got(id+k) == 0 {
					done = false
				}
			}
		}
		if done {
			return id + len(pubs), nil
		}
		for k, p := range pubs {
			buf = appendPayload(buf[:0], id+k, seq, int64(time.Since(e.base)), 0)
			if _, err := p.publish(ctx, seq, buf); err != nil {
				return 0, err
			}
			if err := p.flush(); err != nil {
				return 0, err
			}
		}
		seq++
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, fmt.Errorf("bench: warm-up: not every subscriber got an event within 30s: %w", ctx.Err())
		}
		if err := e.clientErr(); err != nil {
			return 0, err
		}
	}
}

// drain waits until every receiver got every event of the publishers (or the
// timeout passes).
func (e *env) drain(ctx context.Context, ps []*paced, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		complete := true
		for i, r := range e.recv {
			if (e.tolerateCuts && e.clients[i].Err() != nil) || e.slow[i] {
				continue // cut or slow on purpose: it will get nothing more
			}
			for _, p := range ps {
				if r.Got(p.id) < e.wantOf(r, p) {
					complete = false
				}
			}
		}
		if complete || (!e.tolerateCuts && e.clientErr() != nil) {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// closeClients closes every client concurrently; afterwards receivers may be read.
func (e *env) closeClients() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range e.clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c.Close()
			<-sem
		}()
	}
	wg.Wait()
	for _, p := range e.pubs {
		p.close()
	}
	e.pubs = nil
}

func (e *env) close() error {
	e.closeClients()
	var errs []error
	for _, n := range e.nodes {
		if err := n.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.redis != nil {
		if err := e.redis.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// status reads a node's /status as a raw JSON document.
func status(ctx context.Context, n *Node) (json.RawMessage, error) {
	var raw json.RawMessage
	err := getJSON(ctx, n.URL()+"/status", &raw)
	return raw, err
}

// httpClient keeps no idle connections, so no goroutine outlives a request.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}

func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("bench: GET %s: %w", url, err)
	}
	return nil
}

// tally sums what receivers got from the given publishers.
type tally struct {
	expected, unique, lost, dups, reordered int64
	hist                                    Histogram
	lastRecv                                int64
}

// wantOf is how many events of p receiver r should get.
func (e *env) wantOf(r *Receiver, p *paced) int64 {
	if e.want != nil {
		return e.want(r, p)
	}
	return int64(p.sent - p.rejected)
}

// tallyOf sums what the receivers recv got of what they should get from ps;
// filter, when not nil, picks the pairs that count.
func (e *env) tallyOf(recv []*Receiver, ps []*paced, filter func(r *Receiver, p *paced) bool) tally {
	var t tally
	for _, r := range recv {
		for _, p := range ps {
			if filter != nil && !filter(r, p) {
				continue
			}
			want := e.wantOf(r, p)
			t.expected += want
			s := r.streams[p.id]
			if s == nil {
				t.lost += want
				continue
			}
			t.unique += s.unique
			t.lost += max(0, want-s.unique)
			t.dups += s.dups
			t.reordered += s.reordered
			t.hist.Merge(&s.hist)
			t.lastRecv = max(t.lastRecv, s.lastRecv)
		}
	}
	return t
}

func ms(us uint64) float64 { return float64(us) / 1000 }

// positiveOr sets *p to def unless it is positive: a scenario's zero (or
// negative) setting means its default.
func positiveOr[T ~int | ~int64 | ~float64](p *T, def T) {
	if *p <= 0 {
		*p = def
	}
}

// nonEmptyOr sets *p to def when it is empty.
func nonEmptyOr[S ~[]E, E any](p *S, def S) {
	if len(*p) == 0 {
		*p = def
	}
}
