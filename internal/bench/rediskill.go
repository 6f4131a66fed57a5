package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// RedisKillConfig configures the Redis crash scenario: two nodes on one Redis
// with the AOF on (appendfsync everysec, Redis' default, unless Fsync says
// otherwise), clients spread over both nodes, one publisher per node (or on the
// first node only); Redis is killed with SIGKILL while they publish and started
// again on the same port after Outage.
type RedisKillConfig struct {
	Common
	Transports []string // default streams, pubsub
	Clients    int      // spread over the two nodes; default 20
	Rate       float64  // total events/s, split over the publishers; default 200
	Publishers int      // 1: on the first node only; 2 (default): one per node
	Fsync      string   // appendfsync: "everysec" (default), "always" or "no"
	StopAtKill bool     // publishers stop when Redis is killed (tail of the stream)
	// SlowClients of the clients on node 1 stop reading when Redis is killed:
	// they must be cut ("slow client") while the others get every event.
	SlowClients int
	Size        int           // event payload bytes; 0: about 30
	Before      time.Duration // publishing before the kill; default 3s
	Outage      time.Duration // Redis dead; default 10s
	After       time.Duration // publishing after the restart; default 5s
	Drain       time.Duration // wait for the backlog after publishing; default 20s
}

// RedisKillResult is the scenario's outcome for one transport.
type RedisKillResult struct {
	Transport string `json:"transport"`
	Error     string `json:"error,omitempty"`
	Server    string `json:"server"`
	AOF       string `json:"aof"`
	Clients   int    `json:"clients"`
	// ClientsCut counts clients whose connection the server ended during the run
	// (a slow client cut, a send queue overflow): they miss everything after.
	ClientsCut int `json:"clients_cut"`
	// CutByNode splits ClientsCut by the node the clients were on (the
	// publisher of -kill-publishers 1 is on node 0).
	CutByNode []int `json:"clients_cut_by_node"`
	// SlowClients were made slow on purpose; SlowCut of them had been ended
	// by the server (they are not in the other counts).
	SlowClients int `json:"slow_clients,omitempty"`
	SlowCut     int `json:"slow_cut,omitempty"`
	// The nodes' own count of the clients they cut, by reason (engineio
	// Stats): what a client sees may be a bare connection loss.
	ServerCutQueueFull uint64  `json:"server_cut_send_queue_full"`
	ServerCutSlow      uint64  `json:"server_cut_slow_client"`
	Publishers         int     `json:"publishers"`
	StopAtKill         bool    `json:"stop_at_kill,omitempty"`
	Rate               float64 `json:"rate"`
	Sent               int     `json:"sent"`
	Rejected           int     `json:"rejected"`
	// RefusedAtNode counts events a relay node's broadcast refused (its outbox
	// was full: ErrOutboxFull, counted and logged by the node). Its own
	// clients had them; the other nodes' clients cannot, and
	// LostBeyondRefused is what Lost holds beyond those.
	RefusedAtNode     uint64 `json:"refused_at_node"`
	LostBeyondRefused int64  `json:"lost_beyond_refused"`
	// SentDuringOutage counts events emitted between the kill and Redis answering
	// again.
	SentDuringOutage int   `json:"sent_during_outage"`
	Expected         int64 `json:"expected_deliveries"`
	Lost             int64 `json:"lost"`
	Duplicated       int64 `json:"duplicated"`
	Reordered        int64 `json:"reordered"`
	// Clients on the publisher's own node, for events sent during the outage: the
	// highest latency, and the longest pause between two consecutive events of a
	// publisher (the publishing interval is 1/(Rate/2)).
	SameNodeMaxLatencyMs float64 `json:"same_node_max_latency_ms"`
	SameNodeMaxGapMs     float64 `json:"same_node_max_gap_ms"`
	SameNodeP99Ms        float64 `json:"same_node_p99_ms"`
	// Clients on the other node: the time from Redis answering again to the last
	// event sent during the outage delivered there.
	RemoteCatchUpMs float64 `json:"remote_catch_up_ms"`
	// RemoteFirstMs is the time from Redis answering again to the first event
	// sent during the outage delivered on the other node: what reconnecting
	// costs. RemoteCatchUpMs minus it is how long delivering the backlog took.
	RemoteFirstMs      float64 `json:"remote_first_ms"`
	RemoteMaxLatencyMs float64 `json:"remote_max_latency_ms"`
	// RedisStartMs is how long redis-server took to start again (load the AOF).
	RedisStartMs float64 `json:"redis_start_ms"`
	// GapMessages sums the messages the nodes' buses reported missing (lost by
	// Redis or trimmed before they were read): each is lost for every client
	// of the node that reported it.
	GapMessages uint64            `json:"gap_messages"`
	NodeStatus  []json.RawMessage `json:"node_status,omitempty"`
}

func (c *RedisKillConfig) defaults() {
	nonEmptyOr(&c.Transports, []string{"streams", "pubsub"})
	positiveOr(&c.Clients, 20)
	positiveOr(&c.Rate, 200)
	if c.Publishers != 1 {
		c.Publishers = 2
	}
	if c.Fsync == "" {
		c.Fsync = "everysec"
	}
	positiveOr(&c.Before, 3*time.Second)
	positiveOr(&c.Outage, 10*time.Second)
	positiveOr(&c.After, 5*time.Second)
	positiveOr(&c.Drain, 20*time.Second)
}

// RedisKill runs the scenario for every transport.
func RedisKill(ctx context.Context, cfg RedisKillConfig) ([]RedisKillResult, error) {
	cfg.defaults()
	return runEach(ctx, cfg.Transports, func(tr string) ([]RedisKillResult, error) {
		if tr == TransportLocal {
			return nil, nil // no Redis to kill
		}
		r, err := redisKillOne(ctx, &cfg, tr)
		if err != nil {
			r.Error = err.Error()
			err = fmt.Errorf("redis-kill %s: %w", tr, err)
		}
		return []RedisKillResult{r}, err
	})
}

func redisKillOne(ctx context.Context, cfg *RedisKillConfig, transport string) (_ RedisKillResult, err error) {
	res := RedisKillResult{Transport: transport, Server: cfg.Server, AOF: "appendonly yes, appendfsync " + cfg.Fsync,
		Clients: cfg.Clients, Publishers: cfg.Publishers, StopAtKill: cfg.StopAtKill, Rate: cfg.Rate}
	if res.Server == "" {
		res.Server = ServerRelay
	}
	switch cfg.Fsync {
	case "always", "everysec", "no":
	default:
		return res, fmt.Errorf("bench: appendfsync %q: want always, everysec or no", cfg.Fsync)
	}
	e, err := startEnv(ctx, &cfg.Common, transport, 2, "appendfsync "+cfg.Fsync)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, e.close()) }()
	stall, resume := make(chan struct{}), make(chan struct{})
	resumed := false
	defer func() {
		if !resumed {
			close(resume)
		}
	}()
	e.slow = map[int]bool{}
	for i := range cfg.Clients {
		node := i % 2
		if node == 1 && len(e.slow) < cfg.SlowClients {
			e.slow[i] = true
			if err := e.subscribeStalling(ctx, node, true, stall, resume); err != nil {
				return res, err
			}
			continue
		}
		if err := e.subscribe(ctx, node, true); err != nil {
			return res, err
		}
	}
	res.SlowClients = len(e.slow)
	// A client the server cuts is counted, not a failure of the run.
	e.tolerateCuts = true
	pubs, err := e.publishers(ctx, cfg.Publishers, func(k int) int { return k })
	if err != nil {
		return res, err
	}
	id, err := e.warmUp(ctx, pubs, 0)
	if err != nil {
		return res, err
	}
	ps := e.pacedAt(pubs, id, cfg.Rate, cfg.Size)
	total := cfg.Before + cfg.Outage + cfg.After
	if cfg.StopAtKill {
		total = cfg.Before
	}
	cfg.logf("redis-kill %s: %d clients, %.0f events/s from %d publishers (stop at kill: %v), appendfsync %s; kill after %s, restart after %s more, then %s",
		transport, cfg.Clients, cfg.Rate, len(pubs), cfg.StopAtKill, cfg.Fsync, cfg.Before, cfg.Outage, cfg.After)
	published := make(chan error, 1)
	go func() { published <- runAll(ctx, ps, total) }()

	var killAt, restartAt int64
	faults := func() error {
		if err := sleepCtx(ctx, cfg.Before); err != nil {
			return err
		}
		killAt = int64(time.Since(e.base))
		if err := e.redis.Kill(); err != nil {
			return fmt.Errorf("kill redis: %w", err)
		}
		close(stall)
		cfg.logf("redis-kill %s: Redis killed (SIGKILL)", transport)
		if err := sleepCtx(ctx, cfg.Outage); err != nil {
			return err
		}
		t0 := time.Now()
		if err := e.redis.Start(ctx); err != nil {
			return fmt.Errorf("restart redis: %w", err)
		}
		restartAt = int64(time.Since(e.base))
		res.RedisStartMs = float64(time.Since(t0).Microseconds()) / 1000
		cfg.logf("redis-kill %s: Redis answering again after %.0f ms start", transport, res.RedisStartMs)
		return nil
	}
	ferr := faults()
	perr := <-published
	if err := errors.Join(ferr, perr); err != nil {
		return res, err
	}
	e.drain(ctx, ps, cfg.Drain)
	for _, n := range e.nodes {
		st, err := status(ctx, n)
		if err != nil {
			cfg.logf("%v", err)
		}
		res.NodeStatus = append(res.NodeStatus, st)
		var ns NodeStatus
		if err := json.Unmarshal(st, &ns); err == nil {
			if ns.BusStats != nil {
				res.GapMessages += ns.BusStats.GapMessages
			}
			res.RefusedAtNode += ns.EmitErrors
			res.ServerCutQueueFull += ns.Cuts.CutSendQueueFull
			res.ServerCutSlow += ns.Cuts.CutSlowClient
		}
	}
	// The slow clients read again, to learn whether they were cut.
	close(resume)
	resumed = true
	for i := range e.slow {
		if err := waitClientEnd(ctx, e.clients[i], 10*time.Second); err != nil {
			res.SlowCut++
			cfg.logf("redis-kill %s: slow subscriber %d ended: %v", transport, i, err)
		}
	}
	res.CutByNode = e.clientsCut()
	for _, n := range res.CutByNode {
		res.ClientsCut += n
	}
	if res.ClientsCut > 0 {
		cfg.logf("redis-kill %s: clients cut by the server, per node: %v; first: %v", transport, res.CutByNode, e.clientErr())
		// When a cut happened (before, during or after the outage) and what the
		// node said about it (its rate-limited "client cut" warning: reason,
		// bound, how many messages were queued).
		cfg.logf("redis-kill %s: Redis killed at %.0f ms, answering again at %.0f ms (run time)",
			transport, float64(killAt)/1e6, float64(restartAt)/1e6)
		for i, c := range e.clients {
			if c.Err() == nil || e.slow[i] {
				continue
			}
			r := e.recv[i]
			for k, p := range ps {
				if s := r.streams[p.id]; s != nil {
					cfg.logf("redis-kill %s: subscriber %d (node %d) cut: had %d events of publisher %d, last at %.0f ms",
						transport, i, r.Node, s.unique, k, float64(s.lastRecv)/1e6)
				}
			}
		}
		for _, n := range e.nodes {
			for _, line := range strings.Split(n.Logs(), "\n") {
				if strings.Contains(line, "client cut") {
					cfg.logf("redis-kill %s: %s: %s", transport, n.Name, line)
				}
			}
		}
	}
	e.closeClients()

	for _, p := range ps {
		res.Sent += p.sent
		res.Rejected += p.rejected
	}
	healthy := make([]*Receiver, 0, len(e.recv))
	for i, r := range e.recv {
		if !e.slow[i] {
			healthy = append(healthy, r)
		}
	}
	t := e.tallyOf(healthy, ps, nil)
	res.Expected, res.Lost, res.Duplicated, res.Reordered = t.expected, t.lost, t.dups, t.reordered
	if nodes := len(e.nodes); nodes > 0 {
		remote := int64(len(healthy) - len(healthy)/nodes) // clients not on the refusing node
		res.LostBeyondRefused = max(0, res.Lost-int64(res.RefusedAtNode)*remote)
	}
	same := e.tallyOf(healthy, ps, func(r *Receiver, p *paced) bool { return r.Node == p.id-id })
	res.SameNodeP99Ms = ms(same.hist.Quantile(0.99))

	inOutage := func(sent int64) bool { return sent >= killAt && sent < restartAt }
	counted := map[[2]int]bool{}
	var sameLat, sameGap, remoteLat, lastRemote int64
	firstRemote := int64(-1)
	for _, r := range healthy {
		for k, p := range ps {
			s := r.streams[p.id]
			if s == nil {
				continue
			}
			sameNode := r.Node == k
			var prev int64 = -1
			for _, d := range s.kept {
				if sameNode {
					if inOutage(d.sent) {
						sameLat = max(sameLat, d.recv-d.sent)
					}
					if prev >= 0 && d.recv >= killAt && prev < restartAt {
						sameGap = max(sameGap, d.recv-prev)
					}
					prev = d.recv
					if inOutage(d.sent) && !counted[[2]int{k, int(d.seq)}] {
						counted[[2]int{k, int(d.seq)}] = true
						res.SentDuringOutage++
					}
					continue
				}
				remoteLat = max(remoteLat, d.recv-d.sent)
				if inOutage(d.sent) {
					lastRemote = max(lastRemote, d.recv)
					if firstRemote < 0 || d.recv < firstRemote {
						firstRemote = d.recv
					}
				}
			}
		}
	}
	nsToMs := func(ns int64) float64 { return float64(ns) / 1e6 }
	res.SameNodeMaxLatencyMs, res.SameNodeMaxGapMs = nsToMs(sameLat), nsToMs(sameGap)
	res.RemoteMaxLatencyMs = nsToMs(remoteLat)
	if lastRemote > 0 {
		res.RemoteCatchUpMs = nsToMs(lastRemote - restartAt)
		res.RemoteFirstMs = nsToMs(firstRemote - restartAt)
	}
	return res, nil
}

// waitClientEnd waits until c stops (the server closed it) and returns why,
// or nil when it is still running after timeout.
func waitClientEnd(ctx context.Context, c interface {
	Done() <-chan struct{}
	Err() error
}, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.Done():
		return c.Err()
	case <-t.C:
		return nil
	case <-ctx.Done():
		return nil
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
