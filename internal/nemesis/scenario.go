package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Scenario is a named run: a cluster shape and a nemesis program.
type Scenario struct {
	Name string
	// Doc says what the scenario does and what it expects.
	Doc string
	// Defect, when not empty, names the bus defect this scenario shows on code
	// that has it; such a scenario is not part of the default test run.
	Defect string
	// Exact: Redis loses nothing it acknowledged in this scenario, so a loss
	// that only receivers' gaps account for fails it (losses the origins
	// counted as drops do not).
	Exact bool
	// NoRefusals: Redis takes writes throughout, so a refused publish fails
	// the scenario.
	NoRefusals bool
	// Config shapes the cluster; Seed and Logf come from the caller.
	Config Config
	// Program runs the nemesis for about d.
	Program func(ctx context.Context, r *Run, d time.Duration) error
	// Duration is the default length of the nemesis program.
	Duration time.Duration
}

// SafeOps are the operations today's product is expected to survive with the
// contract intact.
var SafeOps = []string{OpRedisKill, OpRedisPause, OpRedisClients, OpRedisOOM, OpNetCut, OpNetBlackhole,
	OpNetReadDead, OpNetWriteDead, OpNetRepliesLost, OpNodeTerm, OpNodePause, OpNodeKillNewID, OpClientBounce,
	OpNetSlow, OpClockJump}

// SoakOps are every operation of a standalone Redis, OpRedisWipe included (a
// Redis restarted empty after a clock jump stalled every reader before the
// readers learned to follow a reset stream: the clock-reset scenario).
var SoakOps = slices.Clone(AllOps)

// SentinelOps are the operations of the Sentinel scenarios (no fault proxy
// there: nodes reach the primary the sentinels name).
var SentinelOps = []string{OpSentinelFailover, OpRedisPause, OpRedisClients, OpNodeTerm, OpNodePause,
	OpNodeKillNewID, OpClientBounce, OpReplicaDown, OpClockJump}

// ClusterOps are the operations of the Redis Cluster scenario.
var ClusterOps = []string{OpClusterFailover, OpRedisPause, OpRedisClients, OpNodeTerm, OpNodePause,
	OpNodeKillNewID, OpClientBounce, OpReplicaDown, OpClockJump}

// Random runs seeded random rounds of ops until d has passed.
func Random(ops []string, minHold, maxHold time.Duration) func(ctx context.Context, r *Run, d time.Duration) error {
	return func(ctx context.Context, r *Run, d time.Duration) error {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			round := r.Schedule(ops, 1, minHold, maxHold)[0]
			if err := r.RunRound(ctx, round); err != nil {
				return err
			}
			r.pause(time.Second)
		}
		return nil
	}
}

// Scenarios are the named scenarios, "short" first.
var Scenarios = []Scenario{
	{
		Name: "short",
		Doc: "3 node processes, AOF always, 200 events/s over 6 publishers and 2 namespaces plus one publisher " +
			"through the emitter (/b) and one official client per node with connection state recovery (/a); " +
			"seeded random rounds of Redis kill/pause/client-kill/OOM, stream ids ahead of Redis' clock, one node's " +
			"link to Redis cut, blackholed, slowed, or dead one way (reads, writes, replies), node drain, node " +
			"SIGSTOP, node SIGKILL with a new id and client reconnects, one or two faults at once. Expected: PASS, " +
			"nothing lost even with a report.",
		Exact: true,
		Config: Config{Nodes: 3, AOF: "always", Rate: 200, OfficialClients: 1, EmitterPublishers: 1,
			EmitterNamespaces: []string{"/b"}},
		Program:  Random(SafeOps, 2*time.Second, 4*time.Second),
		Duration: 30 * time.Second,
	},
	{
		Name: "soak",
		Doc: "Like short with every operation of a standalone Redis (SoakOps: also SIGKILL with the same id, two " +
			"processes with one id, slow links, stream ids ahead of Redis' clock), AOF everysec, 2 000 events/s, " +
			"holds of 2 to 20 s, 2 publishers through the emitter (on /b) and one official client per node with " +
			"connection state recovery (on /a: the recovery scenario's defect stays out of the soak). For long " +
			"runs (-nemesis.duration 30m).",
		Config: Config{Nodes: 3, AOF: "everysec", Rate: 2000, OfficialClients: 1, EmitterPublishers: 2,
			EmitterNamespaces: []string{"/b"}},
		Program:  Random(SoakOps, 2*time.Second, 20*time.Second),
		Duration: 5 * time.Minute,
	},
	{
		Name: "sentinel",
		Doc: "3 node processes on a Sentinel set (primary, replica, three sentinels), WaitReplicas=1, AOF always, " +
			"200 events/s; seeded random rounds of failovers (the old primary returns as a replica), CLIENT PAUSE, " +
			"CLIENT KILL, node drain, SIGSTOP, SIGKILL with a new id. Expected: PASS, nothing lost.",
		Exact:    true,
		Config:   Config{Nodes: 3, AOF: "always", Rate: 200, Sentinel: true, WaitReplicas: 1},
		Program:  Random(SentinelOps, 2*time.Second, 4*time.Second),
		Duration: 40 * time.Second,
	},
	{
		Name:   "sentinel-pause",
		Defect: "a failover during CLIENT PAUSE loses each origin's message in flight (WaitReplicas=1)",
		Doc: "Sentinel set, WaitReplicas=1, AOF always, 200 events/s; the primary is paused (CLIENT PAUSE ALL) for " +
			"8 s, longer than the sentinels' down-after (3 s): they fail over while it is paused, and it returns " +
			"as a replica. Expected: PASS, nothing lost (what the sentinel scenario found with shorter " +
			"down-after times, made deterministic).",
		Exact:  true,
		Config: Config{Nodes: 3, AOF: "always", Rate: 200, Sentinel: true, WaitReplicas: 1},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			return r.RunRound(ctx, []Step{{Op: OpRedisPause, Hold: 8 * time.Second}})
		},
	},
	{
		Name: "cluster",
		Doc: "3 node processes on a Redis Cluster (three primaries, a replica each), WaitReplicas=1, AOF always, " +
			"200 events/s; seeded random rounds of failovers of the primary of a stream partition (the old one " +
			"returns as a replica), the replica of such a primary down, stream ids ahead of Redis' clock, " +
			"CLIENT PAUSE, CLIENT KILL, node drain, SIGSTOP, SIGKILL with a new id. " +
			"Expected: PASS, nothing lost.",
		Exact:    true,
		Config:   Config{Nodes: 3, AOF: "always", Rate: 200, Cluster: true, WaitReplicas: 1},
		Program:  Random(ClusterOps, 2*time.Second, 4*time.Second),
		Duration: 40 * time.Second,
	},
	{
		Name:   "failover-nowait",
		Defect: "tail loss is never reported",
		Doc: "Sentinel set, WaitReplicas=0 (Redis acknowledges before replicating), 2 000 events/s; n2 is " +
			"frozen (SIGSTOP), the replica sleeps (DEBUG SLEEP 3) and the primary drops its link (CLIENT KILL " +
			"TYPE replica); n0's publishers stop 500 ms later, the primary is killed and the replica promoted, " +
			"then n2 resumes. Entries the old primary acknowledged but had not " +
			"replicated are gone; losses of the others are reported as gaps, n0's tail never is. " +
			"Expected after the fix: PASS (the tail reported).",
		Config: Config{Nodes: 3, AOF: "always", Rate: 2000, Sentinel: true, TailPublishers: 2, Settle: 90 * time.Second,
			NodePing: 20 * time.Second},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			return r.fixed(ctx, "failover to a lagging replica", func() error {
				// The replica sleeps and the primary drops its link: what the
				// primary acknowledges from then on is not replicated when it dies.
				sctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Settle)
				defer cancel()
				primary, err := r.primary(sctx)
				if err != nil {
					return err
				}
				slept := make(chan error, 1)
				go func() {
					_, err := r.sentinel.Replica().Do(sctx, "DEBUG", "SLEEP", "3")
					slept <- err
				}()
				// n2 is frozen meanwhile: it reads what it missed after the failover.
				lagging := r.current(2)
				lagging.hist.addFault(r.clk.now(), "stop")
				if err := lagging.pause(); err != nil {
					return errors.Join(err, <-slept)
				}
				r.pause(100 * time.Millisecond)
				if _, err := primary.Do(sctx, "CLIENT", "KILL", "TYPE", "replica"); err != nil {
					return errors.Join(err, <-slept, lagging.cont())
				}
				r.pause(500 * time.Millisecond)
				r.haltTail()
				r.pause(200 * time.Millisecond)
				// The old primary stays down: WaitReplicas=0 needs no replica.
				_, err = r.sentinel.KillPrimary()
				if err == nil {
					_, err = r.sentinel.WaitFailover(sctx)
				}
				return errors.Join(err, <-slept, lagging.cont())
			})
		},
	},
	{
		Name: "sentinel-2replicas",
		Doc: "3 node processes on a Sentinel set with two replicas (a failover has a choice; the replica not " +
			"promoted follows the new primary), WaitReplicas=1, AOF always, 200 events/s; seeded random rounds of " +
			"the sentinel scenario's operations (a replica down is one of the two). Expected: PASS, nothing lost.",
		Exact:    true,
		Config:   Config{Nodes: 3, AOF: "always", Rate: 200, Sentinel: true, Replicas: 2, WaitReplicas: 1},
		Program:  Random(SentinelOps, 2*time.Second, 4*time.Second),
		Duration: 40 * time.Second,
	},
	{
		Name:   "sentinel-lagging-failover",
		Defect: "tail loss on a failover to a lagging replica is never reported",
		Doc: "Sentinel set with two replicas, WaitReplicas=0, no persistence (fast acknowledgements), 1 000 " +
			"events/s, one namespace; the sentinels are made to prefer one replica, whose replication link then " +
			"breaks while n2 is frozen (SIGSTOP); the primary takes writes for 2 s, n0's publisher stops for good, the primary is SIGKILLed " +
			"and the lagging replica promoted (the other replica follows it and drops what it lacks), then n2 " +
			"resumes. What only the old primary had is gone: every loss must be reported (or, with a republish " +
			"of retained messages, nothing lost). Expected: PASS.",
		Config: Config{Nodes: 3, Rate: 1000, Sentinel: true, Replicas: 2, Namespaces: []string{"/a"},
			TailPublishers: 1, NodePing: 20 * time.Second},
		Program: laggingProgram(OpSentinelLagging),
	},
	{
		Name:   "cluster-lagging-failover",
		Defect: "tail loss on a failover to a lagging replica is never reported",
		Doc: "Redis Cluster, WaitReplicas=0, no persistence (fast acknowledgements), 1 000 events/s, one " +
			"namespace; the replica of the primary of its stream partition loses its replication link while n2 " +
			"is frozen (SIGSTOP); the primary takes writes for 2 s, n0's publisher stops for good, the replica takes over (CLUSTER FAILOVER TAKEOVER) " +
			"and the old primary, still running, follows it and drops what it lacks; then n2 resumes. Every loss " +
			"must be reported (or, with a republish of retained messages, nothing lost). Expected: PASS.",
		Config: Config{Nodes: 3, Rate: 1000, Cluster: true, Namespaces: []string{"/a"},
			TailPublishers: 1, NodePing: 20 * time.Second},
		Program: laggingProgram(OpClusterLagging),
	},
	{
		Name: "sentinel-lagging-wait2",
		Doc: "sentinel-lagging-failover with WaitReplicas=2 (every replica): the writes the lagging replica " +
			"never gets are not confirmed, so they stay in the outboxes and are written again to the promoted " +
			"replica. Expected: PASS, nothing lost.",
		Exact: true,
		Config: Config{Nodes: 3, Rate: 1000, Sentinel: true, Replicas: 2, WaitReplicas: 2, Namespaces: []string{"/a"},
			TailPublishers: 1, NodePing: 20 * time.Second},
		Program: laggingProgram(OpSentinelLagging),
	},
	{
		Name: "cluster-lagging-wait1",
		Doc: "cluster-lagging-failover with WaitReplicas=1: the writes the lagging replica never gets are not " +
			"confirmed, so they stay in the outboxes and are written again once it has taken over. Expected: " +
			"PASS, nothing lost.",
		Exact: true,
		Config: Config{Nodes: 3, Rate: 1000, Cluster: true, WaitReplicas: 1, Namespaces: []string{"/a"},
			TailPublishers: 1, NodePing: 20 * time.Second},
		Program: laggingProgram(OpClusterLagging),
	},
	{
		Name:   "planes",
		Defect: "a broadcast and a broadcast with acks of one node arrive in the other order",
		Doc: "Publishers send pairs: the node emits the first event as a plain broadcast and the second, at " +
			"once, as a broadcast with acknowledgements (the request plane), 200 events/s; every node's link " +
			"to Redis is slowed by 20 ms each way for 10 s. Clients in both rooms on other nodes must get each " +
			"publisher's events in the order they were issued. Expected: PASS.",
		Config: Config{Nodes: 3, AOF: "always", Rate: 200, AckPairs: true, ClientsPerNode: 3},
		Program: func(ctx context.Context, r *Run, d time.Duration) error {
			return r.fixed(ctx, "both planes over slow links", func() error {
				for _, px := range r.proxies {
					px.Slow(SlowDelay)
				}
				r.pause(d)
				for _, px := range r.proxies {
					px.Restore()
				}
				return nil
			})
		},
		Duration: 10 * time.Second,
	},
	{
		Name:   "overlap",
		Defect: "two live processes with one node id",
		Doc: "A second process starts with n1's id (a rolling deploy with a fixed id); n1's clients move to it " +
			"while n1's publishers stay on the old process for 8 s, then the old one drains. " +
			"Expected after the fix: PASS (or a refusal to start that the harness reports).",
		Config: Config{Nodes: 3, AOF: "always", Rate: 200},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			return r.RunRound(ctx, []Step{{Op: OpNodeOverlap, Slot: 1, Hold: 8 * time.Second}})
		},
	},
	{
		Name:   "tail-loss",
		Defect: "tail loss is never reported",
		Doc: "No persistence. n2's link is blackholed (it lags), n0's publishers stop for good, Redis is killed " +
			"and restarts empty: n2 never gets n0's last events and, with n0 quiet, no later message reveals the " +
			"gap. Expected after the fix: the loss is reported (accounted), PASS.",
		Config: Config{Nodes: 3, AOF: "", Rate: 300, TailPublishers: 2},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			return r.fixed(ctx, "lagging reader, quiet origin, Redis restarted empty", func() error {
				r.proxies[2].Blackhole()
				r.pause(1500 * time.Millisecond)
				r.haltTail()
				r.pause(300 * time.Millisecond)
				if err := r.redis.Kill(); err != nil {
					return err
				}
				r.proxies[2].Restore()
				r.pause(2 * time.Second)
				sctx, cancel := context.WithTimeout(ctx, r.cfg.Settle)
				defer cancel()
				return r.redis.Start(sctx)
			})
		},
	},
	{
		Name:   "restart-same-id",
		Defect: "a restart with a stable id duplicates or hides a gap for a lagging reader",
		Doc: "n2 lags (blackholed) while n0 is SIGKILLed and restarted with the same id, and the new run's " +
			"replies are lost for 2 s (so it publishes batches again that had landed); then n2 reads the old " +
			"run's and the new run's frames, interleaved across partitions (one namespace carries 8 times the " +
			"traffic of the others, and every read takes at most 8 entries per partition). Expected: PASS.",
		Config: Config{Nodes: 3, AOF: "always", Rate: 2000, Namespaces: []string{"/a", "/b", "/c", "/d"},
			Weights: []float64{8, 1, 1, 1}, ClientsPerNode: 1, ReadCount: 8},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			return r.fixed(ctx, "lagging reader sees a restart with the same id", func() error {
				r.proxies[2].Blackhole()
				r.pause(3 * time.Second)
				if err := r.apply(ctx, Step{Op: OpNodeKill, Slot: 0, Hold: 500 * time.Millisecond}); err != nil {
					return err
				}
				r.pause(time.Second)
				if err := r.apply(ctx, Step{Op: OpNetRepliesLost, Slot: 0, Hold: 2 * time.Second}); err != nil {
					return err
				}
				r.pause(2 * time.Second)
				r.proxies[2].Restore()
				return nil
			})
		},
	},
	{
		Name:   "recovery",
		Defect: "a client recovered on another node misses the emitter's events sent as its node died",
		Doc: "3 nodes, AOF always, 200 events/s, 2 namespaces, 2 of 8 publishers through the emitter package; " +
			"besides the Go clients, 2 official socket.io-client " +
			"clients per node, each behind a load balancer that sends new connections to its home node or, when that " +
			"one is gone, to another, reconnecting with connection state recovery. Seeded rounds of node drain, " +
			"SIGKILL (same or new id), SIGSTOP, client reconnects, Redis kill and a node's link cut. A recovered " +
			"session is owed every event sent while it was away. Fails today: an official client recovered on another " +
			"node after its node was killed or drained misses the emitter's events sent at that moment (seed 1: 26 " +
			"deliveries, unreported); the nodes' events of the same moment are restored. Expected after a fix: PASS.",
		Exact:    true,
		Config:   Config{Nodes: 3, AOF: "always", Rate: 200, OfficialClients: 2, EmitterPublishers: 2},
		Program:  Random([]string{OpNodeTerm, OpNodeKill, OpNodeKillNewID, OpNodePause, OpClientBounce, OpRedisKill, OpNetCut}, 2*time.Second, 4*time.Second),
		Duration: 40 * time.Second,
	},
	{
		Name:   "trim",
		Defect: "the stream is trimmed before a lagging reader reads it",
		Doc: "3 nodes, one namespace, 3 000 events/s, AOF always, the product's default stream bounds; n2's link " +
			"to Redis is blackholed for 60 s (the others write 120 000 entries meanwhile, well within the outbox max age), then " +
			"restored. Send queues are large so that the replay cuts no client. Expected: PASS, nothing lost " +
			"(with the old count bound of 100 000 entries per partition the oldest were trimmed before n2 read them).",
		Exact:  true,
		Config: Config{Nodes: 3, AOF: "always", Rate: 3000, Namespaces: []string{"/a"}, SendQueue: 1 << 18},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			return r.RunRound(ctx, []Step{{Op: OpNetBlackhole, Slot: 2, Hold: 60 * time.Second}})
		},
	},
	{
		Name:   "forget",
		Defect: "receivers forget a silent origin after 10 minutes, also while disconnected",
		Doc: "n2 is cut off from Redis (blackhole) for 11 minutes at 100 events/s; streams are bounded to " +
			"2 000 entries per partition, so n2 comes back behind the trim point. What it missed must be " +
			"reported as gaps: a receiver that forgot the origins while it was disconnected takes the first " +
			"entry it reads as a new start and reports nothing. Expected: PASS (reported). Takes 13 minutes.",
		Config: Config{Nodes: 3, AOF: "always", Rate: 100, Namespaces: []string{"/a"}, StreamMaxLen: 2000},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			return r.RunRound(ctx, []Step{{Op: OpNetBlackhole, Slot: 2, Hold: 11*time.Minute + 30*time.Second}})
		},
	},
	{
		Name:   "oversized",
		Defect: "an entry larger than Redis' client output buffer limit stops every reader",
		Doc: "Redis' client-output-buffer-limit for normal clients is set to 256 KiB (and stays so), then one " +
			"publisher of n0 sends one event of 400 KB among the usual ones: no read that returns it can " +
			"succeed. The other nodes must skip it and report it, and deliver every later event. Expected: " +
			"PASS (the one event lost and reported).",
		Config: Config{Nodes: 3, AOF: "always", Rate: 200},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			return r.fixed(ctx, "one entry larger than the output buffer limit", func() error {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if _, err := r.redis.Do(sctx, "CONFIG", "SET", "client-output-buffer-limit", "normal 262144 0 0"); err != nil {
					return err
				}
				r.pubs[0].big.Store(400_000)
				r.pause(20 * time.Second)
				return nil
			})
		},
	},
	{
		Name:   "replica-down",
		Defect: "WaitReplicas=1 with a replica down makes a healthy primary look down",
		Doc: "Sentinel set, WaitReplicas=1, every 4th event a broadcast with acknowledgements; the replica is " +
			"SIGKILLed for 8 s while the primary stays healthy, twice. Writes cannot be confirmed meanwhile, but " +
			"the primary takes them: nothing may be refused (requests, heartbeats), lost or duplicated. Expected: PASS.",
		Exact:      true,
		NoRefusals: true,
		Config:     Config{Nodes: 3, AOF: "always", Rate: 200, Sentinel: true, WaitReplicas: 1, AckEvery: 4},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			for range 2 {
				if err := r.RunRound(ctx, []Step{{Op: OpReplicaDown, Hold: 8 * time.Second}}); err != nil {
					return err
				}
				r.pause(2 * time.Second)
			}
			return nil
		},
	},
	{
		Name: "cluster-nowait",
		Doc: "3 node processes on a Redis Cluster (three primaries, a replica each), WaitReplicas=0 (a primary " +
			"acknowledges before replicating), AOF always, 1 000 events/s; seeded random rounds of the cluster " +
			"scenario's operations. A failover may lose what the old primary acknowledged and had not " +
			"replicated: every such loss must be reported (the replica here is not made to lag first, as " +
			"failover-nowait does on Sentinel). Expected: PASS.",
		Config:   Config{Nodes: 3, AOF: "always", Rate: 1000, Cluster: true},
		Program:  Random(ClusterOps, 2*time.Second, 4*time.Second),
		Duration: 40 * time.Second,
	},
	{
		Name: "cluster-replica-down",
		Doc: "Redis Cluster (three primaries, a replica each), WaitReplicas=1, every 4th event a broadcast with " +
			"acknowledgements; the replica of the primary of partition 0 is SIGKILLed for 8 s while that primary " +
			"stays healthy, the stream ids of every partition jump 10 minutes ahead of Redis' clock, then the " +
			"replica of partition 1's primary is down for 8 s. Nothing may be refused, lost or duplicated. " +
			"Expected: PASS.",
		Exact:      true,
		NoRefusals: true,
		Config:     Config{Nodes: 3, AOF: "always", Rate: 200, Cluster: true, WaitReplicas: 1, AckEvery: 4},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			for _, round := range [][]Step{
				{{Op: OpReplicaDown, Slot: 0, Hold: 8 * time.Second}},
				{{Op: OpClockJump, Hold: 2 * time.Second}},
				{{Op: OpReplicaDown, Slot: 1, Hold: 8 * time.Second}},
			} {
				if err := r.RunRound(ctx, round); err != nil {
					return err
				}
				r.pause(2 * time.Second)
			}
			return nil
		},
	},
	{
		Name:   "mute-acks",
		Defect: "relays of broadcasts with acks hold the slots that serve heartbeats and requests",
		Doc: "3 nodes, 200 events/s, every event a broadcast with acknowledgements (10 s timeout) that the node " +
			"answers at once while the broadcast waits for its replies; the first client of every node and " +
			"namespace never answers, so each node relays about 600 waiting broadcasts at any time, for 30 s. " +
			"Every broadcast must still reach every client (order is not the publisher's to keep here), heartbeats " +
			"and requests must be served. Expected: PASS.",
		Exact:  true,
		Config: Config{Nodes: 3, AOF: "always", Rate: 200, AckEvery: 1, AckAsync: true, MuteAcks: true},
		Program: func(ctx context.Context, r *Run, d time.Duration) error {
			return r.fixed(ctx, "clients that never answer", func() error {
				r.pause(d)
				return nil
			})
		},
		Duration: 30 * time.Second,
	},
	{
		Name:   "clock-reset",
		Defect: "a Redis restarted empty with its clock behind the stream ids stalls every reader",
		Doc: "The stream ids are moved 10 minutes ahead of Redis' clock (as after a restart with the clock behind), " +
			"then Redis is SIGKILLed and restarted empty (no persistence): new entries get ids below the ones " +
			"readers have read up to. Expected: PASS (readers start over and report what they lost).",
		Config: Config{Nodes: 3, AOF: "", Rate: 200},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			if err := r.RunRound(ctx, []Step{{Op: OpClockJump, Hold: 2 * time.Second}}); err != nil {
				return err
			}
			return r.RunRound(ctx, []Step{{Op: OpRedisWipe, Hold: 2 * time.Second}})
		},
	},
	{
		Name:   "replay-8000",
		Defect: "a replay after an outage cuts healthy clients",
		Doc: "2 nodes, 10 clients each, one namespace, 8 000 events/s, AOF everysec, Redis SIGKILLed for 10 s; " +
			"events carry 200 bytes, clients read at most 20 000 events/s (2.5 times the steady rate): the backlog reaches the other node at once. Expected after the fix: PASS (no client cut, nothing lost). " +
			"Heavy: run it on an idle machine.",
		Config: Config{Nodes: 2, AOF: "everysec", Rate: 8000, Namespaces: []string{"/a"}, ClientsPerNode: 10, ClientMaxRate: 20000, PayloadBytes: 200},
		Program: func(ctx context.Context, r *Run, _ time.Duration) error {
			return r.RunRound(ctx, []Step{{Op: OpRedisKill, Hold: 10 * time.Second}})
		},
	},
}

// laggingProgram fails over to a lagging replica (op) with a frozen reader (n2)
// and a quiet origin (n0's tail publisher), on the stream partition of the
// first namespace; on a Redis Cluster with routing, on n2's inbox, which
// carries what the others send to n2's rooms.
func laggingProgram(op string) func(ctx context.Context, r *Run, _ time.Duration) error {
	return func(ctx context.Context, r *Run, _ time.Duration) error {
		return r.fixed(ctx, "failover to a lagging replica, n2 frozen, n0 quiet", func() error {
			part := streamPartition(r.cfg.Namespaces[0])
			if r.cluster != nil && r.cfg.Routing {
				part = r.slotPartition(2)
			}
			s := Step{Op: op, Slot: part, Hold: 2 * time.Second}
			return r.laggingFailover(ctx, s, lagPlan{freeze: []int{2}, haltTail: true})
		})
	}
}

// fixed runs a hand-written nemesis program as one recorded step.
func (r *Run) fixed(ctx context.Context, name string, f func() error) error {
	r.mu.Lock()
	r.steps++
	r.mu.Unlock()
	start := r.clk.now()
	r.logf("nemesis: %s", name)
	err := f()
	h := stepHist{Start: start, End: r.clk.now(), Op: name}
	if err != nil {
		h.Err = err.Error()
	}
	r.mu.Lock()
	r.hist.Steps = append(r.hist.Steps, h)
	r.mu.Unlock()
	return errors.Join(err, r.waitMeshed(ctx))
}

// haltTail stops the tail publishers for good.
func (r *Run) haltTail() {
	for _, p := range r.pubs {
		if p.tail {
			p.halt()
		}
	}
}

// ScenarioByName returns the named scenario.
func ScenarioByName(name string) (Scenario, error) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	names := make([]string, len(Scenarios))
	for i, s := range Scenarios {
		names[i] = s.Name
	}
	return Scenario{}, fmt.Errorf("nemesis: no scenario %q (have %s)", name, strings.Join(names, ", "))
}

// Options of RunScenario.
type Options struct {
	Seed     int64
	Duration time.Duration // 0: the scenario's Duration
	Rate     int           // 0: the scenario's rate
	// Routing runs the scenario with interest routing (Config.Routing); its
	// history and verdict are named "<scenario>+routing".
	Routing bool
	Logf    func(format string, args ...any)
}

// RunScenario starts a cluster, runs the scenario's program between steady
// phases, finishes and checks. The history is returned even on error (nil
// only when the cluster never started).
func RunScenario(ctx context.Context, sc Scenario, o Options) (*History, *Verdict, error) {
	cfg := sc.Config
	cfg.Scenario, cfg.Seed, cfg.Logf = sc.Name, o.Seed, o.Logf
	if o.Rate > 0 {
		cfg.Rate = o.Rate
	}
	if o.Routing {
		cfg.Routing = true
		cfg.Scenario += "+routing"
	}
	d := o.Duration
	if d == 0 {
		d = sc.Duration
	}
	r, err := Start(ctx, cfg)
	defer func() {
		if cerr := r.Close(); cerr != nil && cfg.Logf != nil {
			cfg.Logf("close: %v", cerr)
		}
	}()
	if err != nil {
		return nil, nil, errors.Join(err, fmt.Errorf("logs:\n%s", r.Logs()))
	}
	r.pause(2 * time.Second)
	perr := sc.Program(ctx, r, d)
	r.pause(2 * time.Second)
	h, ferr := r.Finish(ctx)
	v := Check(h)
	v.Exact = v.Exact || sc.Exact
	v.NoRefusals = sc.NoRefusals
	v.Unordered = cfg.AckAsync
	err = errors.Join(perr, ferr)
	if err != nil {
		v.Err = firstLine(err.Error())
	}
	if err != nil || !v.OK() {
		err = errors.Join(err, fmt.Errorf("logs:\n%s", r.Logs()))
	}
	return h, v, err
}

// firstLine is s up to its first line break, at most 160 bytes.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// MarkdownRow is a verdict as a row of the table in docs/RELIABILITY.md.
func (v *Verdict) MarkdownRow(defect string) string {
	res := "PASS"
	if !v.OK() {
		res = "FAIL: " + v.Failures()
	}
	if defect == "" {
		defect = "—"
	}
	return fmt.Sprintf("| %s | %d | %s | %d | %d | %d | %d | %d | %d | %d | %d | %s |",
		v.Scenario, v.Seed, defect, v.Accepted, v.Lost, v.LostDropped+v.Accounted, v.CrashLost, v.Duplicates, v.Reordered, v.Cuts, v.GapMessages, res)
}

// MarkdownHeader is the header of the scenario table.
const MarkdownHeader = "| scenario | seed | defect it guards against | accepted | lost | lost, reported (drop or gap) | lost in crash | dup | reordered | clients cut | gap msgs | verdict |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|"
