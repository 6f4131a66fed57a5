package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

// Nemesis operations. Each injects one fault, holds it, heals it and waits
// until the cluster is whole again (every node Connected and meshed).
const (
	OpNodeKill      = "node-kill"       // SIGKILL a node, restart it with the same id
	OpNodeKillNewID = "node-kill-newid" // SIGKILL a node, restart it with a new id
	OpNodeTerm      = "node-term"       // SIGTERM a node (drain), restart it with the same id
	OpNodePause     = "node-pause"      // SIGSTOP a node, SIGCONT it later
	OpNodeOverlap   = "node-overlap"    // start a second process with a node's id, then drain the old one
	OpRedisKill     = "redis-kill"      // SIGKILL Redis, restart it from its AOF (or empty)
	OpRedisPause    = "redis-pause"     // CLIENT PAUSE ALL
	OpRedisClients  = "redis-client-kill"
	OpNetCut        = "net-cut"       // reset every connection between one node and Redis
	OpNetBlackhole  = "net-blackhole" // hold every byte between one node and Redis
	OpClientBounce  = "client-bounce" // some clients disconnect and connect again
	// Asymmetric network faults between one node and Redis.
	OpNetReadDead    = "net-read-dead"    // the node's reading connections (XREAD) held, publishing works
	OpNetWriteDead   = "net-write-dead"   // the node's publishing connections (XADD) held, reading works
	OpNetRepliesLost = "net-replies-lost" // Redis executes every command, the node hears no reply
	OpRedisOOM       = "redis-oom"        // maxmemory below what Redis uses (noeviction): writes fail with OOM
	// OpSentinelFailover kills the primary of a Sentinel set, waits for the
	// promotion and starts the old primary again as a replica.
	OpSentinelFailover = "sentinel-failover"
	// OpClusterFailover kills the Redis Cluster primary of one stream
	// partition (the step's slot), waits until a replica serves its slots,
	// and starts the old primary again (it returns as a replica).
	OpClusterFailover = "cluster-failover"
	// OpReplicaDown SIGKILLs the replica of a Sentinel set, or on a Redis
	// Cluster the replica of the primary of one stream partition (the step's
	// slot), while the primary stays healthy (with WaitReplicas=1 no write
	// to it can be confirmed), and starts it again after the hold.
	OpReplicaDown = "replica-down"
	// OpClockJump moves the ids of every stream partition ClockJump ahead of
	// Redis' clock (XSETID): what a Redis restarted from its AOF with its clock
	// behind does, done without a fake clock. Nothing heals it; it only grows
	// with further jumps.
	OpClockJump = "clock-jump"
	// OpRedisWipe SIGKILLs Redis and starts it again empty (its AOF and RDB
	// removed): a restart without persistence, whatever the run's AOF policy.
	OpRedisWipe = "redis-restart-empty"
	// OpNetSlow delays every chunk of bytes between one node and Redis by
	// SlowDelay, both ways.
	OpNetSlow = "net-slow"
	// OpSentinelLagging fails a Sentinel set over to a lagging replica: the
	// replica (chosen by the step's slot; with two or more, made the one the
	// sentinels prefer) loses its replication link for the hold while the
	// primary takes writes, then the primary is SIGKILLed and the sentinels
	// promote the replica without those writes (any other replica follows it
	// and drops them too). The old primary returns as a replica.
	OpSentinelLagging = "sentinel-lagging-failover"
	// OpClusterLagging fails the Redis Cluster primary of one stream
	// partition (the step's slot) over to its lagging replica: the replica
	// loses its replication link for the hold, then takes over with CLUSTER
	// FAILOVER TAKEOVER while the old primary runs; the old primary follows
	// it and drops what the replica lacked.
	OpClusterLagging = "cluster-lagging-failover"
)

// ClockJump is how far one OpClockJump moves the stream ids ahead.
const ClockJump = 10 * time.Minute

// SlowDelay is the delay of OpNetSlow.
const SlowDelay = 20 * time.Millisecond

// AllOps is every operation.
var AllOps = []string{OpNodeKill, OpNodeKillNewID, OpNodeTerm, OpNodePause, OpNodeOverlap,
	OpRedisKill, OpRedisPause, OpRedisClients, OpRedisOOM, OpNetCut, OpNetBlackhole,
	OpNetReadDead, OpNetWriteDead, OpNetRepliesLost, OpClientBounce, OpNetSlow, OpClockJump, OpRedisWipe}

// redisOps act on the one Redis; two of them never run at once.
var redisOps = []string{OpRedisKill, OpRedisPause, OpRedisClients, OpRedisOOM, OpSentinelFailover, OpClusterFailover,
	OpReplicaDown, OpClockJump, OpRedisWipe, OpSentinelLagging, OpClusterLagging}

// Step is one nemesis step: an operation on a target, held for a while.
type Step struct {
	Op   string
	Slot int           // the node slot (node and network operations)
	Hold time.Duration // how long the fault lasts
}

func (s Step) String() string {
	if slices.Contains(redisOps, s.Op) {
		return fmt.Sprintf("%s %v", s.Op, s.Hold)
	}
	return fmt.Sprintf("%s n%d %v", s.Op, s.Slot, s.Hold)
}

// Schedule draws steps from ops with the run's seeded generator: each round one
// step or, one time in three, two at once on different targets.
func (r *Run) Schedule(ops []string, rounds int, minHold, maxHold time.Duration) [][]Step {
	var out [][]Step
	for range rounds {
		n := 1
		if r.rng.IntN(3) == 0 {
			n = 2
		}
		var round []Step
		// A second step that conflicts with the first is drawn again, a few
		// times: ops may hold nothing that combines (two Redis operations).
		for tries := 0; len(round) < n && tries < 16; tries++ {
			s := Step{Op: r.draw(ops), Slot: r.rng.IntN(r.cfg.Nodes),
				Hold: minHold + time.Duration(r.rng.Int64N(int64(maxHold-minHold)+1))}
			if conflicts(round, s) {
				r.deck = append([]string{s.Op}, r.deck...) // drawn again later
				continue
			}
			round = append(round, s)
		}
		out = append(out, round)
	}
	return out
}

// draw takes the next operation from a shuffled deck of ops, shuffled again
// when empty: every operation comes once before any comes twice, so a short
// run tries many of them and a long one tries each about as often.
func (r *Run) draw(ops []string) string {
	if key := strings.Join(ops, ","); key != r.deckOf || len(r.deck) == 0 {
		r.deckOf, r.deck = key, slices.Clone(ops)
		r.rng.Shuffle(len(r.deck), func(i, j int) { r.deck[i], r.deck[j] = r.deck[j], r.deck[i] })
	}
	op := r.deck[len(r.deck)-1]
	r.deck = r.deck[:len(r.deck)-1]
	return op
}

func conflicts(round []Step, s Step) bool {
	for _, o := range round {
		if slices.Contains(redisOps, o.Op) && slices.Contains(redisOps, s.Op) {
			return true
		}
		if !slices.Contains(redisOps, o.Op) && !slices.Contains(redisOps, s.Op) && o.Slot == s.Slot {
			return true
		}
	}
	return false
}

// RunRound runs the steps of one round at once and waits until the cluster is
// whole again.
func (r *Run) RunRound(ctx context.Context, round []Step) error {
	r.mu.Lock()
	first := r.steps == 0
	r.steps++
	r.mu.Unlock()
	if first {
		for _, p := range r.pubs {
			if p.tail {
				p.halt()
			}
		}
	}
	errs := make(chan error, len(round))
	for _, s := range round {
		go func() { errs <- r.runStep(ctx, s) }()
	}
	var all []error
	for range round {
		all = append(all, <-errs)
	}
	if err := r.waitMeshed(ctx); err != nil {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func (r *Run) runStep(ctx context.Context, s Step) error {
	start := r.clk.now()
	r.logf("nemesis: %s", s)
	err := r.apply(ctx, s)
	h := stepHist{Start: start, End: r.clk.now(), Op: s.String()}
	if err != nil {
		h.Err = err.Error()
		r.logf("nemesis: %s: %v", s, err)
	}
	r.mu.Lock()
	r.hist.Steps = append(r.hist.Steps, h)
	r.mu.Unlock()
	return err
}

func (r *Run) apply(ctx context.Context, s Step) error {
	switch s.Op {
	case OpNodeKill, OpNodeKillNewID, OpNodeTerm:
		p := r.current(s.Slot)
		if p == nil {
			return fmt.Errorf("nemesis: slot %d has no process", s.Slot)
		}
		if s.Op == OpNodeTerm {
			p.hist.addFault(r.clk.now(), "term")
			if err := p.term(30 * time.Second); err != nil {
				return err
			}
		} else {
			p.hist.addFault(r.clk.now(), "kill")
			if err := p.kill(); err != nil {
				return err
			}
		}
		r.pause(s.Hold)
		_, err := r.startNode(ctx, s.Slot, s.Op == OpNodeKillNewID)
		return err
	case OpNodePause:
		p := r.current(s.Slot)
		if p == nil {
			return fmt.Errorf("nemesis: slot %d has no process", s.Slot)
		}
		p.hist.addFault(r.clk.now(), "stop")
		if err := p.pause(); err != nil {
			return err
		}
		r.pause(s.Hold)
		return p.cont()
	case OpNodeOverlap:
		old := r.current(s.Slot)
		if old == nil {
			return fmt.Errorf("nemesis: slot %d has no process", s.Slot)
		}
		if _, err := r.startNode(ctx, s.Slot, false); err != nil {
			return err
		}
		// The slot's clients move to the new process; its publishers stay on
		// the old one until it drains: both processes are live with one id.
		r.bounce(s.Slot)
		r.pause(s.Hold)
		old.hist.addFault(r.clk.now(), "term")
		return old.term(30 * time.Second)
	case OpRedisKill, OpRedisWipe:
		if r.redis == nil {
			return fmt.Errorf("nemesis: %s needs a standalone Redis (use %s with Sentinel)", s.Op, OpSentinelFailover)
		}
		if err := r.redis.Kill(); err != nil {
			return err
		}
		if s.Op == OpRedisWipe {
			if err := wipeData(r.redis.Dir()); err != nil {
				return err
			}
		}
		r.pause(s.Hold)
		sctx, cancel := context.WithTimeout(ctx, r.cfg.Settle)
		defer cancel()
		return r.redis.Start(sctx)
	case OpReplicaDown:
		if r.sentinel == nil && r.cluster == nil {
			return fmt.Errorf("nemesis: %s needs Config.Sentinel or Config.Cluster", s.Op)
		}
		sctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Settle)
		defer cancel()
		slot := s.Slot
		if r.cluster != nil {
			slot = r.slotPartition(slot)
		}
		rep, err := r.replica(sctx, slot)
		if err != nil {
			return err
		}
		r.logf("nemesis: %s: replica %s", s, rep.Addr())
		if err := rep.Kill(); err != nil {
			return err
		}
		r.pause(s.Hold)
		if err := rep.Start(sctx); err != nil {
			return err
		}
		if r.cluster != nil {
			return r.cluster.WaitHealthy(sctx)
		}
		return r.sentinel.WaitReplicaSync(sctx)
	case OpClockJump:
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := r.clockJump(sctx, ClockJump)
		r.pause(s.Hold)
		return err
	case OpSentinelFailover:
		if r.sentinel == nil {
			return fmt.Errorf("nemesis: %s needs Config.Sentinel", s.Op)
		}
		sctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Settle)
		defer cancel()
		old, err := r.sentinel.KillPrimary()
		if err != nil {
			return err
		}
		if _, err := r.sentinel.WaitFailover(sctx); err != nil {
			return err
		}
		r.pause(s.Hold)
		// Back as a replica: without one, WaitReplicas=1 cannot succeed.
		if err := old.Start(sctx); err != nil {
			return err
		}
		return r.sentinel.WaitReplicaSync(sctx)
	case OpSentinelLagging, OpClusterLagging:
		return r.laggingFailover(ctx, s, lagPlan{})
	case OpClusterFailover:
		if r.cluster == nil {
			return fmt.Errorf("nemesis: %s needs Config.Cluster", s.Op)
		}
		sctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Settle)
		defer cancel()
		old, err := r.cluster.KillPrimaryOf(sctx, partitionKey(r.slotPartition(s.Slot)))
		if err != nil {
			return err
		}
		if err := r.cluster.WaitHealthy(sctx); err != nil {
			return err
		}
		r.pause(s.Hold)
		if err := old.Start(sctx); err != nil {
			return err
		}
		return r.cluster.WaitHealthy(sctx)
	case OpRedisPause, OpRedisClients, OpRedisOOM:
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		srv, err := r.primary(sctx)
		if err != nil {
			return err
		}
		return r.redisFault(sctx, srv, s)
	case OpNetReadDead, OpNetWriteDead, OpNetRepliesLost, OpNetCut, OpNetBlackhole, OpNetSlow:
		px, err := r.proxy(s.Slot)
		if err != nil {
			return err
		}
		switch s.Op {
		case OpNetReadDead:
			px.BlackholeConns("XREAD")
		case OpNetWriteDead:
			px.BlackholeConns("XADD")
		case OpNetRepliesLost:
			px.BlackholeOneWay(false)
		case OpNetCut:
			px.Cut()
		case OpNetSlow:
			px.Slow(SlowDelay)
		default:
			px.Blackhole()
		}
		r.pause(s.Hold)
		px.Restore()
		return nil
	case OpClientBounce:
		r.bounce(s.Slot)
		r.pause(s.Hold)
		return nil
	}
	return fmt.Errorf("nemesis: unknown operation %q (want one of %s)", s.Op, strings.Join(AllOps, ", "))
}

// redisFault runs a fault on one Redis server that it holds for s.Hold.
func (r *Run) redisFault(ctx context.Context, srv *redistest.Server, s Step) error {
	switch s.Op {
	case OpRedisPause:
		if err := srv.Pause(ctx, s.Hold); err != nil {
			return err
		}
		r.pause(s.Hold)
		if r.sentinel != nil {
			// Whether the sentinels failed over meanwhile says what the step did.
			wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if now, err := r.sentinel.CurrentPrimary(wctx); err == nil && now != srv {
				r.logf("nemesis: %s: failed over from %s to %s", s, srv.Addr(), now.Addr())
			}
		}
		return nil
	case OpRedisClients:
		for _, typ := range []string{"normal", "pubsub"} {
			if _, err := srv.Do(ctx, "CLIENT", "KILL", "TYPE", typ); err != nil {
				return err
			}
		}
		r.pause(s.Hold)
		return nil
	}
	info, err := srv.Info(ctx, "memory")
	if err != nil {
		return err
	}
	used, err := strconv.ParseInt(info["used_memory"], 10, 64)
	if err != nil {
		return fmt.Errorf("nemesis: used_memory %q: %w", info["used_memory"], err)
	}
	if _, err := srv.Do(ctx, "CONFIG", "SET", "maxmemory-policy", "noeviction"); err != nil {
		return err
	}
	if _, err := srv.Do(ctx, "CONFIG", "SET", "maxmemory", strconv.FormatInt(max(used/2, 1), 10)); err != nil {
		return err
	}
	r.pause(s.Hold)
	// The hold outlives ctx's 10 s bound when it is long: a fresh one.
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = srv.Do(rctx, "CONFIG", "SET", "maxmemory", "0")
	return err
}

// replica returns a running replica of the Sentinel set (the step's slot
// chooses among several), or on a Redis Cluster the replica of the primary of
// stream partition slot.
func (r *Run) replica(ctx context.Context, slot int) (*redistest.Server, error) {
	if r.cluster != nil {
		return r.clusterReplica(ctx, slot)
	}
	primary, err := r.sentinel.CurrentPrimary(ctx)
	if err != nil {
		return nil, err
	}
	var reps []*redistest.Server
	for _, s := range append([]*redistest.Server{r.sentinel.Primary()}, r.sentinel.Replicas()...) {
		if s != primary && s.Running() {
			reps = append(reps, s)
		}
	}
	if len(reps) == 0 {
		return nil, fmt.Errorf("nemesis: no running replica besides the primary %s", primary.Addr())
	}
	return reps[slot%len(reps)], nil
}

// clusterReplica returns the online replica of the Redis Cluster primary of
// stream partition slot.
func (r *Run) clusterReplica(ctx context.Context, slot int) (*redistest.Server, error) {
	primary, err := r.cluster.PrimaryOfSlot(ctx, redistest.KeySlot(partitionKey(slot)))
	if err != nil {
		return nil, err
	}
	reps, err := r.cluster.ReplicasOf(ctx, primary)
	if err != nil {
		return nil, err
	}
	if len(reps) == 0 {
		return nil, fmt.Errorf("nemesis: the primary %s of partition %d has no online replica", primary.Addr(), slot)
	}
	return reps[0], nil
}

// clockJump sets the last id of every stream partition (with routing, every
// inbox too) d ahead of the Redis server's clock, so that the entries added
// next carry ids from the future, as after a restart of Redis with its clock
// behind. A partition without a stream yet is left alone.
func (r *Run) clockJump(ctx context.Context, d time.Duration) error {
	n := redisbus.DefaultStreamPartitions
	if r.cfg.Routing {
		n += redisbus.DefaultInboxes
	}
	for p := range n {
		key := partitionKey(p)
		srv, err := r.serverOf(ctx, key)
		if err != nil {
			return err
		}
		res, err := srv.DoAll(ctx, []string{"TIME"}, []string{"XINFO", "STREAM", key})
		if err != nil {
			if strings.Contains(err.Error(), "no such key") {
				continue
			}
			return err
		}
		now, err := redisMillis(res[0])
		if err != nil {
			return err
		}
		last, err := lastStreamMillis(res[1])
		if err != nil {
			return err
		}
		to := max(now, last) + d.Milliseconds()
		if _, err := srv.Do(ctx, "XSETID", key, strconv.FormatInt(to, 10)+"-0"); err != nil {
			return err
		}
	}
	return nil
}

// serverOf returns the Redis server that takes writes of key.
func (r *Run) serverOf(ctx context.Context, key string) (*redistest.Server, error) {
	if r.cluster != nil {
		return r.cluster.PrimaryOfSlot(ctx, redistest.KeySlot(key))
	}
	return r.primary(ctx)
}

// redisMillis reads a TIME reply as milliseconds.
func redisMillis(v any) (int64, error) {
	parts, ok := v.([]any)
	if !ok || len(parts) != 2 {
		return 0, fmt.Errorf("nemesis: TIME replied %v", v)
	}
	sec, err1 := strconv.ParseInt(fmt.Sprint(parts[0]), 10, 64)
	usec, err2 := strconv.ParseInt(fmt.Sprint(parts[1]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("nemesis: TIME replied %v: %w", v, err)
	}
	return sec*1000 + usec/1000, nil
}

// lastStreamMillis reads the milliseconds of last-generated-id from an XINFO
// STREAM reply.
func lastStreamMillis(v any) (int64, error) {
	fields, ok := v.([]any)
	if !ok {
		return 0, fmt.Errorf("nemesis: XINFO STREAM replied %T", v)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		if fmt.Sprint(fields[i]) == "last-generated-id" {
			ms, _, _ := strings.Cut(fmt.Sprint(fields[i+1]), "-")
			n, err := strconv.ParseInt(ms, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("nemesis: last-generated-id %v: %w", fields[i+1], err)
			}
			return n, nil
		}
	}
	return 0, errors.New("nemesis: XINFO STREAM without last-generated-id")
}

// wipeData removes what a killed redis-server would load at its next start.
func wipeData(dir string) error {
	for _, name := range []string{"appendonlydir", "appendonly.aof", "dump.rdb"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("nemesis: wipe Redis data: %w", err)
		}
	}
	return nil
}

// bounce makes the clients of slot disconnect and connect again.
func (r *Run) bounce(slot int) {
	if r.js != nil {
		r.js.bounce(slot)
	}
	for _, c := range r.clients {
		if c.home == slot {
			select {
			case c.bounce <- struct{}{}:
			default:
			}
		}
	}
}

// jitter returns a random number below n for timing spread; it does not use the
// seeded generator, so it does not change the schedule.
func (r *Run) jitter(n int) int { return rand.IntN(n) }
