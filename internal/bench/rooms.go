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
	nonEmptyOr(&c.Runs, []string{ServerRelay + ":streams", ServerNode + ":pubsub", ServerNode + ":streams"})
	positiveOr(&c.Nodes, 2)
	nonEmptyOr(&c.Rates, []float64{6000, 12000, 18000})
	positiveOr(&c.Duration, 10*time.Second)
	positiveOr(&c.Subscribers, 20)
	positiveOr(&c.Publishers, 4)
	positiveOr(&c.Drain, 5*time.Second)
	positiveOr(&c.CleanP99, 100*time.Millisecond)
}

// Rooms runs the scenario for every server kind and transport, and summarises
// the highest clean rate of each.
func Rooms(ctx context.Context, cfg RoomsConfig) ([]RoomsResult, []RoomsSummary, error) {
	cfg.defaults()
	for _, run := range cfg.Runs {
		if _, _, ok := strings.Cut(run, ":"); !ok {
			return nil, nil, fmt.Errorf("bench: rooms run %q: want server:transport", run)
		}
	}
	var sum []RoomsSummary
	out, err := runEach(ctx, cfg.Runs, func(run string) ([]RoomsResult, error) {
		server, tr, _ := strings.Cut(run, ":")
		res, err := roomsOne(ctx, &cfg, server, tr)
		s := RoomsSummary{Server: server, Transport: tr}
		for _, r := range res {
			if r.Clean {
				s.CleanRate = max(s.CleanRate, r.TargetRate)
			}
		}
		sum = append(sum, s)
		if err != nil {
			res = append(res, RoomsResult{BroadcastResult: BroadcastResult{Transport: tr, Server: server, Error: err.Error()}})
			err = fmt.Errorf("rooms %s: %w", run, err)
		}
		return res, err
	})
	return out, sum, err
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
	spread := func(i int) int { return i % len(e.nodes) }
	if err := e.subscribeAll(ctx, cfg.Subscribers, spread); err != nil {
		return nil, err
	}
	pubs, err := e.publishers(ctx, cfg.Publishers, spread)
	if err != nil {
		return nil, err
	}
	id, err := e.warmUp(ctx, pubs, 0)
	if err != nil {
		return nil, err
	}
	rs, err := e.runRates(ctx, rateSteps{Transport: transport, Rates: cfg.Rates, Duration: cfg.Duration, Drain: cfg.Drain,
		PayloadSize: cfg.PayloadSize, Subscribers: cfg.Subscribers, Logf: cfg.logf,
		Label: fmt.Sprintf("rooms %s %s: %d nodes, %d subscribers, %d publishers", server, transport, len(e.nodes), cfg.Subscribers, len(pubs))},
		pubs, id, nil)
	out := make([]RoomsResult, len(rs))
	for i, r := range rs {
		out[i] = RoomsResult{Nodes: len(e.nodes), BroadcastResult: r,
			Clean: err == nil && r.Lost == 0 && r.Duplicated == 0 && r.Reordered == 0 && r.Rejected == 0 &&
				time.Duration(r.P99ms*float64(time.Millisecond)) < cfg.CleanP99}
	}
	return out, err
}
