package faults

import (
	"context"
	"testing"
	"time"

	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

// Scenario 3: Sentinel failover. The primary is killed during traffic; the
// sentinels promote the replica and the nodes follow it. With WaitReplicas=1 a
// message leaves the outbox only once the replica has it, so the promoted
// replica holds every message Redis acknowledged: nothing is lost, duplicated
// or reordered. (Publishing waits until the old primary is back as a replica:
// without a replica, WAIT cannot succeed and messages stay in the outbox.)
func TestSentinelFailover(t *testing.T) {
	ss := redistest.Sentinel(t)
	r := newRun(t, "sentinel-failover", options{kind: redisbus.Streams, waitReplicas: 1})
	r.addNodes(ss.URL(), ss.URL(), ss.URL())
	r.warmUp()
	r.startPublishers()
	pause(steadyPhase)

	ctx, cancel := context.WithTimeout(context.Background(), 2*settle)
	defer cancel()
	start := time.Now()
	old, err := ss.KillPrimary()
	if err != nil {
		t.Fatalf("kill the primary: %v", err)
	}
	r.waitDisconnected("primary killed", r.nodes...)
	r.checkLocal("primary killed")
	promoted, err := ss.WaitFailover(ctx)
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	t.Logf("sentinels promoted %s", promoted)
	if err := old.Start(ctx); err != nil {
		t.Fatalf("start the old primary again: %v", err)
	}
	if err := ss.WaitReplicaSync(ctx); err != nil {
		t.Fatalf("old primary back as a replica: %v", err)
	}
	r.waitConnected("after the failover")
	r.outage = time.Since(start).Round(100 * time.Millisecond) // from the kill to every bus connected
	pause(steadyPhase)
	r.finish(exact)
}

// Scenario 4: Redis Cluster failover. The primary serving the stream the
// nodes' broadcasts travel on is killed; its replica takes over. With
// WaitReplicas=1 nothing acknowledged is lost: nothing is lost, duplicated or
// reordered. The old primary comes back as a replica so that WAIT can succeed
// again.
func TestClusterFailover(t *testing.T) {
	cs := redistest.Cluster(t)
	r := newRun(t, "cluster-failover", options{kind: redisbus.Streams, waitReplicas: 1})
	r.addNodes(cs.URL(), cs.URL(), cs.URL())
	r.warmUp()
	r.startPublishers()
	pause(steadyPhase)

	ctx, cancel := context.WithTimeout(context.Background(), 2*settle)
	defer cancel()
	key := redisbus.StreamKey(r.prefix, r.nodes[0].bus.PartitionOf("/"))
	start := time.Now()
	old, err := cs.KillPrimaryOf(ctx, key)
	if err != nil {
		t.Fatalf("kill the primary of %s: %v", key, err)
	}
	t.Logf("killed %s, the primary of %s", old.Addr(), key)
	r.checkLocal("primary killed")
	if err := cs.WaitHealthy(ctx); err != nil {
		t.Fatalf("cluster failover: %v", err)
	}
	if err := old.Start(ctx); err != nil {
		t.Fatalf("start the old primary again: %v", err)
	}
	if err := cs.WaitHealthy(ctx); err != nil {
		t.Fatalf("old primary back: %v", err)
	}
	r.waitConnected("after the failover")
	r.outage = time.Since(start).Round(100 * time.Millisecond) // from the kill to every bus connected
	pause(steadyPhase)
	r.finish(exact)
}
