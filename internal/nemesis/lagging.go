package nemesis

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

// lagPlan adds what the fixed lagging-failover scenarios need to a failover to a
// lagging replica.
type lagPlan struct {
	// freeze are node slots frozen (SIGSTOP) from the detach until the
	// failover is done: readers that have not read the old primary's last
	// entries when they vanish.
	freeze []int
	// haltTail stops the tail publishers just before the failover: nothing
	// they publish later reveals the loss of their last messages.
	haltTail bool
}

// laggingFailover runs OpSentinelLagging or OpClusterLagging (see there).
func (r *Run) laggingFailover(ctx context.Context, s Step, plan lagPlan) (err error) {
	if (s.Op == OpSentinelLagging && r.sentinel == nil) || (s.Op == OpClusterLagging && r.cluster == nil) {
		return fmt.Errorf("nemesis: %s needs Config.Sentinel or Config.Cluster to match", s.Op)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Settle)
	defer cancel()
	var primary *redistest.Server
	if r.cluster != nil {
		primary, err = r.cluster.PrimaryOfSlot(sctx, redistest.KeySlot(partitionKey(s.Slot)))
	} else {
		primary, err = r.sentinel.CurrentPrimary(sctx)
	}
	if err != nil {
		return err
	}
	lagging, err := r.replica(sctx, s.Slot)
	if err != nil {
		return err
	}
	if r.sentinel != nil && len(r.sentinel.Replicas()) > 1 {
		if err := r.sentinel.PreferReplica(sctx, lagging); err != nil {
			return err
		}
	}
	r.logf("nemesis: %s: %s: primary %s, lagging replica %s", s, partitionKey(s.Slot), primary.Addr(), lagging.Addr())
	var frozen []*nodeProc
	var thawOnce sync.Once
	thaw := func() (err error) {
		thawOnce.Do(func() {
			for _, p := range frozen {
				err = errors.Join(err, p.cont())
			}
		})
		return err
	}
	defer func() { err = errors.Join(err, thaw()) }()
	for _, slot := range plan.freeze {
		p := r.current(slot)
		if p == nil {
			return fmt.Errorf("nemesis: slot %d has no process to freeze", slot)
		}
		p.hist.addFault(r.clk.now(), "stop")
		if err := p.pause(); err != nil {
			return err
		}
		frozen = append(frozen, p)
	}
	if err := redistest.DetachReplica(sctx, primary, lagging); err != nil {
		return err
	}
	defer func() {
		// A fresh bound: the failover may have used up sctx.
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, redistest.AttachReplica(actx, lagging))
	}()
	r.pause(s.Hold) // the primary takes writes the replica never gets
	if plan.haltTail {
		r.haltTail()
		r.pause(200 * time.Millisecond)
	}
	if r.cluster != nil {
		if err := r.cluster.Failover(sctx, lagging, "TAKEOVER"); err != nil {
			return err
		}
		return thaw()
	}
	old, err := r.sentinel.KillPrimary()
	if err != nil {
		return err
	}
	if _, err := r.sentinel.WaitFailover(sctx); err != nil {
		return err
	}
	if now := r.sentinel.Primary(); now != lagging {
		return fmt.Errorf("nemesis: %s: the sentinels promoted %s, not the lagging replica %s", s, now.Addr(), lagging.Addr())
	}
	if err := thaw(); err != nil {
		return err
	}
	// Back as a replica, so that WaitReplicas=1 can succeed with one replica.
	if err := old.Start(sctx); err != nil {
		return err
	}
	return r.sentinel.WaitReplicaSync(sctx)
}

// streamPartition is the stream partition of namespace ns with the product's
// default partition count: the bus's key of a namespace's messages is its name,
// hashed with 32-bit FNV-1a (bus.Reliable.PartitionOf).
func streamPartition(ns string) int {
	h := fnv.New32a()
	h.Write([]byte(ns)) // a hash.Hash never fails to write
	return int(h.Sum32() % redisbus.DefaultStreamPartitions)
}

// inboxPartition is the partition of node id's inbox on the nodes' buses with
// routing (bus.InboxOf over the default shared partitions and inboxes).
func inboxPartition(id string) int {
	return bus.InboxOf(id, redisbus.DefaultStreamPartitions, redisbus.DefaultInboxes)
}

// partitionKey is the stream of partition p of the nodes' buses: a shared
// partition, or with routing an inbox after them.
func partitionKey(p int) string {
	if p >= redisbus.DefaultStreamPartitions {
		return redisbus.InboxKey(streamPrefix, p-redisbus.DefaultStreamPartitions)
	}
	return redisbus.StreamKey(streamPrefix, p)
}

// slotPartition is the stream partition a Redis Cluster operation on node
// slot's step acts on: partition slot, or with routing the inbox of slot's
// current node id, which carries what the routed namespaces send to it (the
// shared partition slot carries only what is not routed).
func (r *Run) slotPartition(slot int) int {
	if !r.cfg.Routing {
		return slot
	}
	r.mu.Lock()
	id := nodeIDOf(slot, r.newIDs[slot])
	r.mu.Unlock()
	return inboxPartition(id)
}
