package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// BroadcastConfig configures the cross-node broadcast scenario: two nodes on one
// Redis, subscribers on node B, publishers on node A.
type BroadcastConfig struct {
	Common
	Transports  []string      // default streams, pubsub
	Rates       []float64     // events/s emitted in total, one step each; default 12000
	Duration    time.Duration // per step; default 10s
	Subscribers int           // on node B; default 20
	Publishers  int           // on node A, sharing the rate; default 1
	PayloadSize int           // bytes of the event argument; default 0 (about 30)
	Drain       time.Duration // wait for stragglers after a step; default 5s
}

// BroadcastResult is one step of the scenario.
type BroadcastResult struct {
	Transport      string          `json:"transport"`
	Error          string          `json:"error,omitempty"`
	Server         string          `json:"server"`
	TargetRate     float64         `json:"target_rate"`
	Subscribers    int             `json:"subscribers"`
	Sent           int             `json:"sent"`
	Rejected       int             `json:"rejected"`
	PerSubscriber  float64         `json:"events_per_s_per_subscriber"`
	Deliveries     float64         `json:"deliveries_per_s"`
	Lost           int64           `json:"lost"`
	Duplicated     int64           `json:"duplicated"`
	Reordered      int64           `json:"reordered"`
	P50ms          float64         `json:"p50_ms"`
	P99ms          float64         `json:"p99_ms"`
	Maxms          float64         `json:"max_ms"`
	NodeStatus     json.RawMessage `json:"node_b_status,omitempty"`
	PublisherStats json.RawMessage `json:"node_a_status,omitempty"`
	// CPU is the CPU time per second of each process during the step (1.0 is one
	// core): node0 publishes, node1 (or node0 alone for local) serves subscribers.
	CPU map[string]float64 `json:"cpu_cores"`
}

func (c *BroadcastConfig) defaults() {
	if len(c.Transports) == 0 {
		c.Transports = []string{"streams", "pubsub"}
	}
	if len(c.Rates) == 0 {
		c.Rates = []float64{12000}
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Subscribers <= 0 {
		c.Subscribers = 20
	}
	if c.Publishers <= 0 {
		c.Publishers = 1
	}
	if c.Drain <= 0 {
		c.Drain = 5 * time.Second
	}
}

// Broadcast runs the scenario for every transport and rate.
func Broadcast(ctx context.Context, cfg BroadcastConfig) ([]BroadcastResult, error) {
	cfg.defaults()
	var (
		out  []BroadcastResult
		errs []error
	)
	for _, tr := range cfg.Transports {
		res, err := broadcastOne(ctx, &cfg, tr)
		out = append(out, res...)
		if err != nil {
			// The next transport still runs: a failed step is a result too.
			out = append(out, BroadcastResult{Transport: tr, Error: err.Error()})
			errs = append(errs, fmt.Errorf("broadcast %s: %w", tr, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	return out, errors.Join(errs...)
}

func broadcastOne(ctx context.Context, cfg *BroadcastConfig, transport string) (_ []BroadcastResult, err error) {
	e, err := startEnv(ctx, &cfg.Common, transport, 2)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.close()) }()
	subNode := len(e.nodes) - 1 // node B, or the only node for TransportLocal
	for range cfg.Subscribers {
		if err := e.subscribe(ctx, subNode, false); err != nil {
			return nil, err
		}
	}
	var pubs []publisher
	for range cfg.Publishers {
		p, err := e.publisher(ctx, 0)
		if err != nil {
			return nil, err
		}
		pubs = append(pubs, p)
	}
	id, err := e.warmUp(ctx, pubs, 0)
	if err != nil {
		return nil, err
	}
	type stepRef struct {
		idx   int
		ps    []*paced
		start int64
	}
	var (
		out   []BroadcastResult
		steps []stepRef
	)
	for _, rate := range cfg.Rates {
		ps := make([]*paced, len(pubs))
		for k, p := range pubs {
			ps[k] = &paced{id: id + k, pub: p, rate: rate / float64(len(pubs)), size: cfg.PayloadSize, base: e.base}
		}
		id += len(pubs)
		cfg.logf("broadcast %s: %d subscribers, %.0f events/s for %s", transport, cfg.Subscribers, rate, cfg.Duration)
		start := int64(time.Since(e.base))
		meter := newCPUMeter(e)
		if err := runAll(ctx, ps, cfg.Duration); err != nil {
			return out, err
		}
		e.drain(ctx, ps, cfg.Drain)
		cpu := meter.shares(time.Duration(int64(time.Since(e.base)) - start).Seconds())
		if err := e.clientErr(); err != nil {
			return out, err
		}
		res := BroadcastResult{Transport: transport, Server: e.nodes[0].Server, TargetRate: rate, Subscribers: cfg.Subscribers, CPU: cpu}
		for _, p := range ps {
			res.Sent += p.sent
			res.Rejected += p.rejected
		}
		if res.NodeStatus, err = status(ctx, e.nodes[subNode]); err != nil {
			cfg.logf("%v", err)
		}
		if res.PublisherStats, err = status(ctx, e.nodes[0]); err != nil {
			cfg.logf("%v", err)
		}
		out = append(out, res)
		steps = append(steps, stepRef{idx: len(out) - 1, ps: ps, start: start})
	}
	// Receivers are read once their clients have stopped.
	e.closeClients()
	for _, s := range steps {
		t := tallyOf(e.recv, s.ps, nil)
		r := &out[s.idx]
		span := time.Duration(t.lastRecv - s.start).Seconds()
		if span > 0 {
			r.Deliveries = float64(t.unique) / span
			r.PerSubscriber = r.Deliveries / float64(cfg.Subscribers)
		}
		r.Lost, r.Duplicated, r.Reordered = t.lost, t.dups, t.reordered
		r.P50ms, r.P99ms, r.Maxms = ms(t.hist.Quantile(0.50)), ms(t.hist.Quantile(0.99)), ms(t.hist.Max())
	}
	return out, nil
}
