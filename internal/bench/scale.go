package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ScaleConfig configures the scale scenario: the same total load on clusters
// of 1, 2, 4, 8, … node processes, to show how the cost per node and per
// delivered event moves as nodes are added. Subscribers are spread over the
// nodes, each in one of Rooms rooms; one publisher per node shares the rate;
// event seq of a publisher goes to room seq % Rooms, cluster-wide.
type ScaleConfig struct {
	Common
	Transport   string        // default streams
	Nodes       []int         // cluster sizes, one run each; default 1, 2, 4, 8
	Rate        float64       // events/s emitted in total; default 2000
	Duration    time.Duration // per run; default 10s
	Subscribers int           // spread over the nodes; default 64
	Rooms       int           // subscriber i joins room i % Rooms; default 32
	PayloadSize int           // bytes of the event argument; default 0 (about 30)
	Drain       time.Duration // wait for stragglers; default 5s
}

// ScaleResult is one cluster size.
type ScaleResult struct {
	Nodes       int     `json:"nodes"`
	Transport   string  `json:"transport"`
	Routing     bool    `json:"interest_routing,omitempty"`
	Error       string  `json:"error,omitempty"`
	TargetRate  float64 `json:"target_rate"`
	Sent        int     `json:"sent"`
	Subscribers int     `json:"subscribers"`
	Rooms       int     `json:"rooms"`
	// Delivered is the number of distinct events the subscribers received;
	// Deliveries the same per second of the run.
	Delivered  int64   `json:"delivered"`
	Deliveries float64 `json:"deliveries_per_s"`
	Lost       int64   `json:"lost"`
	Duplicated int64   `json:"duplicated"`
	Reordered  int64   `json:"reordered"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	Maxms      float64 `json:"max_ms"`
	// CPU is the CPU time per second of every process during the run (1.0 is
	// one core); NodeCPUMean and NodeCPUMax are over the node processes,
	// NodeCPUTotal their sum.
	CPU          map[string]float64 `json:"cpu_cores"`
	NodeCPUMean  float64            `json:"node_cpu_mean"`
	NodeCPUMax   float64            `json:"node_cpu_max"`
	NodeCPUTotal float64            `json:"node_cpu_total"`
	RedisCPU     float64            `json:"redis_cpu"`
	// Per delivered event: CPU microseconds of all nodes together and of Redis,
	// Redis commands processed, and bytes Redis received and sent.
	NodeCPUPerDelivery  float64 `json:"node_cpu_us_per_delivery"`
	RedisCPUPerDelivery float64 `json:"redis_cpu_us_per_delivery"`
	RedisOpsPerDelivery float64 `json:"redis_ops_per_delivery"`
	RedisInPerDelivery  float64 `json:"redis_bytes_in_per_delivery"`
	RedisOutPerDelivery float64 `json:"redis_bytes_out_per_delivery"`
	// RedisOutPerEvent is what Redis sent per event published: with every node
	// reading every message it grows with the number of nodes.
	RedisOutPerEvent float64 `json:"redis_bytes_out_per_event"`
	// RedisCallsPerEvent is, per command, the calls Redis processed per event
	// published (INFO commandstats).
	RedisCallsPerEvent map[string]float64 `json:"redis_calls_per_event"`
	// ReadPerEvent is the bus messages the nodes received (both planes, all
	// nodes) per event published.
	ReadPerEvent float64 `json:"bus_messages_read_per_event"`
}

func (c *ScaleConfig) defaults() {
	if c.Transport == "" {
		c.Transport = "streams"
	}
	nonEmptyOr(&c.Nodes, []int{1, 2, 4, 8})
	positiveOr(&c.Rate, 2000)
	positiveOr(&c.Duration, 10*time.Second)
	positiveOr(&c.Subscribers, 64)
	positiveOr(&c.Rooms, 32)
	positiveOr(&c.Drain, 5*time.Second)
}

// Scale runs the scenario for every cluster size.
func Scale(ctx context.Context, cfg ScaleConfig) ([]ScaleResult, error) {
	cfg.defaults()
	if cfg.Transport == TransportLocal {
		return nil, errors.New("bench: scale needs a Redis transport")
	}
	return runEach(ctx, cfg.Nodes, func(n int) ([]ScaleResult, error) {
		r, err := scaleOne(ctx, &cfg, n)
		if err != nil {
			r.Error = err.Error()
			err = fmt.Errorf("scale %d nodes: %w", n, err)
		}
		return []ScaleResult{r}, err
	})
}

// roomWant is how many of the first sent events of a publisher go to room k
// of rooms (event seq goes to room seq % rooms).
func roomWant(sent, k, rooms int) int64 {
	if sent <= k {
		return 0
	}
	return int64((sent - k + rooms - 1) / rooms)
}

// redisCounters are the INFO stats counters the scenario reads.
var redisCounters = []string{"total_commands_processed", "total_net_input_bytes", "total_net_output_bytes"}

func (e *env) redisStats(ctx context.Context) ([]float64, error) {
	info, err := e.redis.Info(ctx, "stats")
	if err != nil {
		return nil, fmt.Errorf("bench: redis INFO: %w", err)
	}
	out := make([]float64, len(redisCounters))
	for i, k := range redisCounters {
		v, err := strconv.ParseFloat(info[k], 64)
		if err != nil {
			return nil, fmt.Errorf("bench: redis INFO %s=%q", k, info[k])
		}
		out[i] = v
	}
	return out, nil
}

// redisCalls reads the calls of every command from INFO commandstats.
func (e *env) redisCalls(ctx context.Context) (map[string]float64, error) {
	info, err := e.redis.Info(ctx, "commandstats")
	if err != nil {
		return nil, fmt.Errorf("bench: redis INFO: %w", err)
	}
	out := map[string]float64{}
	for k, v := range info {
		cmd, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		for f := range strings.SplitSeq(v, ",") {
			if n, ok := strings.CutPrefix(f, "calls="); ok {
				c, err := strconv.ParseFloat(n, 64)
				if err != nil {
					return nil, fmt.Errorf("bench: redis INFO %s=%q", k, v)
				}
				out[cmd] = c
			}
		}
	}
	return out, nil
}

// scaleCounters are the counters the scale scenario reads before and after
// its step.
type scaleCounters struct {
	redis   []float64          // redisCounters
	busRead uint64             // bus messages the nodes received
	calls   map[string]float64 // Redis calls by command
}

func (e *env) scaleCounters(ctx context.Context) (c scaleCounters, err error) {
	if c.redis, err = e.redisStats(ctx); err != nil {
		return c, err
	}
	if c.busRead, err = e.busReceived(ctx); err != nil {
		return c, err
	}
	c.calls, err = e.redisCalls(ctx)
	return c, err
}

// busReceived sums the bus messages the nodes received so far.
func (e *env) busReceived(ctx context.Context) (uint64, error) {
	var sum uint64
	for _, n := range e.nodes {
		var st NodeStatus
		if err := getJSON(ctx, n.URL()+"/status", &st); err != nil {
			return 0, err
		}
		if st.BusStats != nil {
			sum += st.BusStats.Received
		}
	}
	return sum, nil
}

func scaleOne(ctx context.Context, cfg *ScaleConfig, nodes int) (res ScaleResult, err error) {
	res = ScaleResult{Nodes: nodes, Transport: cfg.Transport, Routing: cfg.Routing, TargetRate: cfg.Rate, Subscribers: cfg.Subscribers, Rooms: cfg.Rooms}
	common := cfg.Common
	common.Server = ServerRelay
	e, err := startEnv(ctx, &common, cfg.Transport, nodes)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, e.close()) }()
	rooms := make([]int, cfg.Subscribers) // room of each receiver
	for i := range cfg.Subscribers {
		rooms[i] = i % cfg.Rooms
		e.subAuth = map[string]string{"room": string(appendRoomName(nil, rooms[i]))}
		if err := e.subscribe(ctx, i%nodes, false); err != nil {
			return res, err
		}
	}
	var pubs []publisher
	for i := range nodes {
		c, err := dialWS(ctx, e.nodes[i].SocketURL(), nil, e.base, nil)
		if err != nil {
			return res, err
		}
		p := &relayPublisher{c: c, event: PublishToEvent, rooms: cfg.Rooms}
		e.pubs = append(e.pubs, p)
		pubs = append(pubs, p)
	}
	id, err := e.warmUp(ctx, pubs, 0)
	if err != nil {
		return res, err
	}
	roomOf := make(map[*Receiver]int, len(e.recv))
	for i, r := range e.recv {
		roomOf[r] = rooms[i]
	}
	e.want = func(r *Receiver, p *paced) int64 { return roomWant(p.sent, roomOf[r], cfg.Rooms) }
	ps := e.pacedAt(pubs, id, cfg.Rate, cfg.PayloadSize)
	cfg.logf("scale %s: %d nodes, %d subscribers in %d rooms, %d publishers, %.0f events/s for %s",
		cfg.Transport, nodes, cfg.Subscribers, cfg.Rooms, len(pubs), cfg.Rate, cfg.Duration)
	before, err := e.scaleCounters(ctx)
	if err != nil {
		return res, err
	}
	st, err := e.runStep(ctx, ps, cfg.Duration, cfg.Drain)
	if err != nil {
		return res, err
	}
	res.CPU = st.cpu
	after, err := e.scaleCounters(ctx)
	if err != nil {
		return res, err
	}
	for _, p := range ps {
		res.Sent += p.sent
	}
	e.closeClients()

	t := e.tallyOf(e.recv, ps, nil)
	res.Delivered, res.Lost, res.Duplicated, res.Reordered = t.unique, t.lost, t.dups, t.reordered
	if span := time.Duration(t.lastRecv - st.start).Seconds(); span > 0 {
		res.Deliveries = float64(res.Delivered) / span
	}
	res.P50ms, res.P99ms, res.Maxms = ms(t.hist.Quantile(0.50)), ms(t.hist.Quantile(0.99)), ms(t.hist.Max())
	for _, n := range e.nodes {
		c := res.CPU[n.Name]
		res.NodeCPUTotal += c
		res.NodeCPUMax = max(res.NodeCPUMax, c)
	}
	res.NodeCPUMean = res.NodeCPUTotal / float64(nodes)
	res.RedisCPU = res.CPU["redis"]
	if d := float64(res.Delivered); d > 0 {
		res.NodeCPUPerDelivery = res.NodeCPUTotal * st.elapsed / d * 1e6
		res.RedisCPUPerDelivery = res.RedisCPU * st.elapsed / d * 1e6
		// INFO itself counts one command and its bytes: negligible here.
		res.RedisOpsPerDelivery = (after.redis[0] - before.redis[0]) / d
		res.RedisInPerDelivery = (after.redis[1] - before.redis[1]) / d
		res.RedisOutPerDelivery = (after.redis[2] - before.redis[2]) / d
	}
	if s := float64(res.Sent); s > 0 {
		res.RedisOutPerEvent = (after.redis[2] - before.redis[2]) / s
		res.ReadPerEvent = float64(after.busRead-before.busRead) / s
		res.RedisCallsPerEvent = map[string]float64{}
		for k, v := range after.calls {
			if d := v - before.calls[k]; d > 0 && k != "info" {
				res.RedisCallsPerEvent[k] = d / s
			}
		}
	}
	return res, nil
}
