package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// RoomsConfig configures the rooms scenario, the layout of a real cluster:
// subscribers and publishers on every node, each publish emitted to a room
// cluster-wide. It runs every server and transport in Runs (ServerRelay:
// durasock; ServerNode: Node's socket.io 4.8 with @socket.io/redis-adapter for
// pubsub or @socket.io/redis-streams-adapter for streams) on the same machine in
// the same run, so their clean rates can be compared.
type RoomsConfig struct {
	Common
	// Runs are "server:transport" pairs; default relay:streams, node:pubsub,
	// node:streams.
	Runs        []string
	Nodes       int           // default 2
	Rates       []float64     // events/s emitted in total, one step each; default 6000, 12000, 18000
	Duration    time.Duration // per step; default 10s
	Subscribers int           // spread over the nodes, all in the room; default 20
	Publishers  int           // spread over the nodes, sharing the rate; default 4
	PayloadSize int           // bytes of the event argument; default 0 (about 30)
	Drain       time.Duration // wait for stragglers after a step; default 5s
	// CleanP99 is the p99 latency under which a step without loss is clean;
	// default 100ms.
	CleanP99 time.Duration
}

// RoomsResult is one step of the scenario, or a summary row (Rate 0) per server
// and transport with the highest clean rate.
type RoomsResult struct {
	BroadcastResult
	Nodes int  `json:"nodes"`
	Clean bool `json:"clean"`
}

// RoomsSummary is the highest clean rate of each server and transport.
type RoomsSummary struct {
	Server    string  `json:"server"`
	Transport string  `json:"transport"`
	CleanRate float64 `json:"highest_clean_rate"` // 0: no step was clean
}

func (c *RoomsConfig) defaults() {
	if len(c.Runs) == 0 {
		c.Runs = []string{ServerRelay + ":streams", ServerNode + ":pubsub", ServerNode + ":streams"}
	}
	if c.Nodes <= 0 {
		c.Nodes = 2
	}
	if len(c.Rates) == 0 {
		c.Rates = []float64{6000, 12000, 18000}
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Subscribers <= 0 {
		c.Subscribers = 20
	}
	if c.Publishers <= 0 {
		c.Publishers = 4
	}
	if c.Drain <= 0 {
		c.Drain = 5 * time.Second
	}
	if c.CleanP99 <= 0 {
		c.CleanP99 = 100 * time.Millisecond
	}
}

// Rooms runs the scenario for every server kind and transport, and summarises
// the highest clean rate of each.
func Rooms(ctx context.Context, cfg RoomsConfig) ([]RoomsResult, []RoomsSummary, error) {
	cfg.defaults()
	var (
		out  []RoomsResult
		sum  []RoomsSummary
		errs []error
	)
	for _, run := range cfg.Runs {
		server, tr, ok := strings.Cut(run, ":")
		if !ok {
			return out, sum, fmt.Errorf("bench: rooms run %q: want server:transport", run)
		}
		res, err := roomsOne(ctx, &cfg, server, tr)
		out = append(out, res...)
		s := RoomsSummary{Server: server, Transport: tr}
		for _, r := range res {
			if r.Clean {
				s.CleanRate = max(s.CleanRate, r.TargetRate)
			}
		}
		sum = append(sum, s)
		if err != nil {
			out = append(out, RoomsResult{BroadcastResult: BroadcastResult{Transport: tr, Server: server, Error: err.Error()}})
			errs = append(errs, fmt.Errorf("rooms %s: %w", run, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	return out, sum, errors.Join(errs...)
}

func roomsOne(ctx context.Context, cfg *RoomsConfig, server, transport string) (_ []RoomsResult, err error) {
	common := cfg.Common
	common.Server = server
	e, err := startEnv(ctx, &common, transport, cfg.Nodes)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.close()) }()
	e.subAuth = map[string]string{"room": Room}
	e.pubEvent = PublishRoomEvent
	for i := range cfg.Subscribers {
		if err := e.subscribe(ctx, i%len(e.nodes), false); err != nil {
			return nil, err
		}
	}
	var pubs []publisher
	for i := range cfg.Publishers {
		p, err := e.publisher(ctx, i%len(e.nodes))
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
		out   []RoomsResult
		steps []stepRef
	)
	for _, rate := range cfg.Rates {
		ps := make([]*paced, len(pubs))
		for k, p := range pubs {
			ps[k] = &paced{id: id + k, pub: p, rate: rate / float64(len(pubs)), size: cfg.PayloadSize, base: e.base}
		}
		id += len(pubs)
		cfg.logf("rooms %s %s: %d nodes, %d subscribers, %d publishers, %.0f events/s for %s",
			server, transport, len(e.nodes), cfg.Subscribers, len(pubs), rate, cfg.Duration)
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
		res := RoomsResult{Nodes: len(e.nodes), BroadcastResult: BroadcastResult{Transport: transport, Server: server,
			TargetRate: rate, Subscribers: cfg.Subscribers, CPU: cpu}}
		for _, p := range ps {
			res.Sent += p.sent
			res.Rejected += p.rejected
		}
		out = append(out, res)
		steps = append(steps, stepRef{idx: len(out) - 1, ps: ps, start: start})
	}
	e.closeClients()
	for _, s := range steps {
		t := tallyOf(e.recv, s.ps, nil)
		r := &out[s.idx]
		if span := time.Duration(t.lastRecv - s.start).Seconds(); span > 0 {
			r.Deliveries = float64(t.unique) / span
			r.PerSubscriber = r.Deliveries / float64(cfg.Subscribers)
		}
		r.Lost, r.Duplicated, r.Reordered = t.lost, t.dups, t.reordered
		r.P50ms, r.P99ms, r.Maxms = ms(t.hist.Quantile(0.50)), ms(t.hist.Quantile(0.99)), ms(t.hist.Max())
		r.Clean = r.Lost == 0 && r.Duplicated == 0 && r.Reordered == 0 && r.Rejected == 0 &&
			time.Duration(r.P99ms*float64(time.Millisecond)) < cfg.CleanP99
	}
	return out, nil
}
