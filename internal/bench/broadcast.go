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
	nonEmptyOr(&c.Transports, []string{"streams", "pubsub"})
	nonEmptyOr(&c.Rates, []float64{12000})
	positiveOr(&c.Duration, 10*time.Second)
	positiveOr(&c.Subscribers, 20)
	positiveOr(&c.Publishers, 1)
	positiveOr(&c.Drain, 5*time.Second)
}

// Broadcast runs the scenario for every transport and rate.
func Broadcast(ctx context.Context, cfg BroadcastConfig) ([]BroadcastResult, error) {
	cfg.defaults()
	return runEach(ctx, cfg.Transports, func(tr string) ([]BroadcastResult, error) {
		res, err := broadcastOne(ctx, &cfg, tr)
		if err != nil {
			res = append(res, BroadcastResult{Transport: tr, Error: err.Error()})
			err = fmt.Errorf("broadcast %s: %w", tr, err)
		}
		return res, err
	})
}

func broadcastOne(ctx context.Context, cfg *BroadcastConfig, transport string) (_ []BroadcastResult, err error) {
	e, err := startEnv(ctx, &cfg.Common, transport, 2)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.close()) }()
	subNode := len(e.nodes) - 1 // node B, or the only node for TransportLocal
	if err := e.subscribeAll(ctx, cfg.Subscribers, func(int) int { return subNode }); err != nil {
		return nil, err
	}
	pubs, err := e.publishers(ctx, cfg.Publishers, func(int) int { return 0 })
	if err != nil {
		return nil, err
	}
	id, err := e.warmUp(ctx, pubs, 0)
	if err != nil {
		return nil, err
	}
	subNodeStatus := e.nodes[subNode]
	return e.runRates(ctx, rateSteps{Transport: transport, Rates: cfg.Rates, Duration: cfg.Duration, Drain: cfg.Drain,
		PayloadSize: cfg.PayloadSize, Subscribers: cfg.Subscribers, Logf: cfg.logf,
		Label: fmt.Sprintf("broadcast %s: %d subscribers", transport, cfg.Subscribers)}, pubs, id,
		func(res *BroadcastResult) {
			var err error
			if res.NodeStatus, err = status(ctx, subNodeStatus); err != nil {
				cfg.logf("%v", err)
			}
			if res.PublisherStats, err = status(ctx, e.nodes[0]); err != nil {
				cfg.logf("%v", err)
			}
		})
}
